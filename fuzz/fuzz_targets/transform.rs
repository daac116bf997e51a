//! The transform (jq) parser, as the controller runs it: on a thread with a large stack.
#![no_main]
use libfuzzer_sys::fuzz_target;
use webhook_operator::fuzzing;

fuzz_target!(|input: &[u8]| fuzzing::transform_compile(input));
