//! The small parsers: durations, event types and patterns, label and field selectors, query API
//! object names, `traceparent`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use webhook_operator::fuzzing;

fuzz_target!(|input: &[u8]| fuzzing::parsers(input));
