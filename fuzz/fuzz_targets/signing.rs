//! Payload rendering and signing: whatever is rendered and signed verifies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use webhook_operator::fuzzing;

fuzz_target!(|input: &[u8]| fuzzing::sign_then_verify(input));
