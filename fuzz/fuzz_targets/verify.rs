//! Signature verification of both schemes on hostile headers, bodies and secrets.
#![no_main]
use libfuzzer_sys::fuzz_target;
use webhook_operator::fuzzing;

fuzz_target!(|input: &[u8]| fuzzing::verify(input));
