//! The ingest request parser and validation (`POST …/events` and `…/events:batch`), then what an
//! accepted event becomes: its canonical data, and the body rendered from it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use webhook_operator::fuzzing;

fuzz_target!(|body: &[u8]| fuzzing::ingest(body));
