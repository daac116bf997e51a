//! What the fuzz targets (`fuzz/`, cargo fuzz) run, here so that the crash inputs kept under
//! `fuzz/regressions/<target>/` are replayed on stable by `tests/fuzz_regressions.rs` through the
//! same code. Each function takes arbitrary bytes and must not panic; where a property holds
//! (what is signed verifies) it asserts it.
use http::{HeaderMap, HeaderName, HeaderValue};
use jiff::Timestamp;
use serde_json::{Map, Value};

use crate::api::endpoint::SigningScheme;
use crate::delivery::payload::{self, WebhookRef};
use crate::delivery::signing::{self, SigningKeys};
use crate::delivery::verify;

/// A target: its name (the directory under `fuzz/regressions/`) and what it runs.
pub type Target = (&'static str, fn(&[u8]));

/// The targets.
pub const TARGETS: [Target; 6] = [
    ("ingest", ingest),
    ("signing", sign_then_verify),
    ("verify", verify),
    ("parsers", parsers),
    ("transform", transform_compile),
    ("bound", transform_bound),
];

fn now() -> Timestamp {
    Timestamp::from_second(1_750_000_000).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn webhook() -> WebhookRef {
    WebhookRef {
        id: "ns/endpoint".into(),
        name: "Endpoint".into(),
    }
}

/// The ingest body parsers; an accepted event is rendered as every attempt renders it.
pub fn ingest(body: &[u8]) {
    use crate::dispatcher::http::ingest::{parse_batch, parse_single};
    let mut accepted = Vec::new();
    if let Ok(event) = parse_single(body) {
        accepted.push(event);
    }
    if let Ok(events) = parse_batch(body) {
        accepted.extend(events);
    }
    for event in accepted {
        let data = payload::canonical_data(&event.event_type, &event.data)
            .expect("an accepted event has canonical data");
        payload::render_stored("evt_1", now(), &webhook(), &event.event_type, &data)
            .expect("canonical data renders");
    }
}

/// Splits `input` into at most `n` parts at 0xff bytes (lossy UTF-8 each).
fn parts(input: &[u8], n: usize) -> Vec<String> {
    input
        .splitn(n, |b| *b == 0xff)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

/// A body rendered from arbitrary data and signed with an arbitrary secret verifies, in both
/// schemes, and fails once a byte of it changes.
pub fn sign_then_verify(input: &[u8]) {
    let p = parts(input, 3);
    let (secret, event_type, data) = (
        p.first().cloned().unwrap_or_default(),
        p.get(1).cloned().unwrap_or_default(),
        p.get(2).cloned().unwrap_or_default(),
    );
    let data: Map<String, Value> = match serde_json::from_str(&data) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let Ok(body) = payload::render("evt_1", now(), &webhook(), &event_type, &data) else {
        return;
    };
    let unix_ts = now().as_second();
    for scheme in [SigningScheme::Pitchey, SigningScheme::StandardWebhooks] {
        let secret = match scheme {
            SigningScheme::StandardWebhooks => format!(
                "whsec_{}",
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    secret.as_bytes()
                )
            ),
            _ => secret.clone(),
        };
        if secret.is_empty() {
            continue;
        }
        let Ok(signed) = signing::sign(
            scheme,
            &SigningKeys::new(secret.clone()),
            "evt_1",
            unix_ts,
            &body,
        ) else {
            continue;
        };
        let mut headers = HeaderMap::new();
        for (name, value) in signed {
            headers.insert(name, value);
        }
        headers.insert("webhook-id", HeaderValue::from_static("evt_1"));
        let check = |body: &[u8]| match scheme {
            SigningScheme::StandardWebhooks => {
                verify::verify_standard(&secret, &headers, body, now(), verify::DEFAULT_TOLERANCE)
            }
            _ => verify::verify_pitchey(&secret, &headers, body, now(), verify::DEFAULT_TOLERANCE),
        };
        assert!(check(&body).is_ok(), "a signed body verifies ({scheme:?})");
        let mut tampered = body.to_vec();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
            assert!(
                check(&tampered).is_err(),
                "a changed body does not verify ({scheme:?})"
            );
        }
    }
}

/// Both verifiers on arbitrary headers, body and secret.
pub fn verify(input: &[u8]) {
    let p = parts(input, 6);
    let get = |i: usize| p.get(i).cloned().unwrap_or_default();
    let mut headers = HeaderMap::new();
    for (i, name) in [
        "x-webhook-timestamp",
        "x-webhook-signature",
        "webhook-id",
        "webhook-signature",
    ]
    .into_iter()
    .enumerate()
    {
        if let Ok(value) = HeaderValue::from_str(&get(i + 1)) {
            headers.insert(HeaderName::from_static(name), value.clone());
            if name == "x-webhook-timestamp" {
                headers.insert("webhook-timestamp", value);
            }
        }
    }
    let secret = get(0);
    let body = get(5);
    let _ = verify::verify_pitchey(
        &secret,
        &headers,
        body.as_bytes(),
        now(),
        verify::DEFAULT_TOLERANCE,
    );
    let _ = verify::verify_standard(
        &secret,
        &headers,
        body.as_bytes(),
        now(),
        verify::DEFAULT_TOLERANCE,
    );
    let _ = signing::decode_standard_secret(&secret);
}

/// The small parsers, each on the same text.
pub fn parsers(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    if let Ok(duration) = crate::api::duration::parse(&text) {
        // What parses formats and parses back to the same duration.
        let formatted = crate::api::duration::format(duration);
        assert_eq!(
            crate::api::duration::parse(&formatted).ok(),
            Some(duration),
            "{formatted}"
        );
    }
    let _ = crate::api::event_types::is_valid_event_type(&text);
    if crate::api::event_types::is_valid_pattern(&text) {
        let _ = crate::api::event_types::pattern_matches(&text, "user.created");
    }
    if let Ok(selector) = crate::api::selector::parse(&text) {
        let _ = crate::api::selector::matches(&selector, &Default::default());
    }
    let _ =
        crate::query::fields::FieldSelector::parse(&text, crate::query::fields::DELIVERY_FIELDS);
    if let Some((endpoint, id, attempt)) = crate::query::names::parse_delivery(&text) {
        assert_eq!(crate::query::names::delivery(endpoint, id, attempt), text);
    }
    let _ = crate::query::names::parse_dead_letter(&text);
    let _ = crate::runtime::trace_context::is_valid(&text);
}

/// The transform parser as the controller runs it: compile only (a program may loop when run),
/// on a thread with the controller's large stack.
pub fn transform_compile(input: &[u8]) {
    let code = String::from_utf8_lossy(input).into_owned();
    let checked = std::thread::Builder::new()
        .stack_size(crate::transform::CHECK_STACK)
        .spawn(move || crate::transform::check(&code))
        .map(|thread| thread.join());
    assert!(
        matches!(checked, Ok(Ok(_))),
        "checking a program never panics"
    );
}

/// Payloads a bounded program runs on in `transform_bound`: the shapes it may meet.
const BOUND_PAYLOADS: [&str; 4] = [
    r#"{"event_id":"evt_1","timestamp":"2024-01-15T10:30:00Z","webhook":{"id":"ns/ep","name":"ep"},"data":{"event_type":"user.created","user":{"id":7,"email":"a@b.c","tags":["x",null,1.5]}}}"#,
    r#"{"a":"\u0000\"<>&","b":[[],{},0.1,-2e300,true],"c":{"d":{"e":"ê"}}}"#,
    "[1,2,3]",
    "\"just a string\"",
];

/// A program (the bytes, lossy UTF-8) through the bound the dispatcher uses to run programs in
/// process (`transform/bounds/`), on a large-stack thread as the dispatcher checks it. When it
/// is bounded and compiles, it runs on payloads on a thread with a tokio worker's stack (2 MiB),
/// as it would in the dispatcher, and every output must be within the bound. A program the
/// bound accepts that loops shows up as libFuzzer's timeout, one that recurses as a crash.
pub fn transform_bound(input: &[u8]) {
    use crate::transform::bounds;
    use crate::transform::{Output, Program};
    let code = String::from_utf8_lossy(input).into_owned();
    let checked = std::thread::Builder::new()
        .stack_size(crate::transform::CHECK_STACK)
        .spawn(move || {
            let cost = bounds::cost(&code).ok()?;
            Some((cost, Program::compile(&code).ok()?))
        })
        .map(|thread| thread.join());
    let Ok(Ok(checked)) = checked else {
        panic!("checking a program's bound never panics");
    };
    let Some((cost, program)) = checked else {
        return;
    };
    let ran = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            for payload in BOUND_PAYLOADS {
                if !cost.fits_in_process(payload.as_bytes()) {
                    continue;
                }
                if let Ok(Output::Body(body)) = program.run(payload.as_bytes(), usize::MAX) {
                    let bound = cost.peak.at(payload.len());
                    assert!(
                        body.len() as f64 <= bound,
                        "an output of {} bytes passed its bound of {bound}",
                        body.len()
                    );
                }
            }
        })
        .map(|thread| thread.join());
    assert!(
        matches!(ran, Ok(Ok(()))),
        "a bounded program runs within its bound"
    );
}
