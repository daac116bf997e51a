//! The bound that lets a transform run inside the dispatcher: checking never panics, and a
//! program it accepts runs on a small stack within its bound.
#![no_main]
use libfuzzer_sys::fuzz_target;
use webhook_operator::fuzzing;

fuzz_target!(|input: &[u8]| fuzzing::transform_bound(input));
