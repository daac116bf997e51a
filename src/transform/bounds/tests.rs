//! The bound refuses what can loop or blow up, accepts the straight-line templates, and is an
//! upper bound: a property test runs accepted programs and checks their outputs against it.
use proptest::prelude::*;
use serde::Deserialize;

use super::{cost, nesting_within, Cost};
use crate::transform::program::{Output, Program};

/// The `spec.transform.jq` of the WebhookEndpoint in an example file.
fn example(file: &str) -> String {
    let path = format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    for document in serde_norway::Deserializer::from_str(&text) {
        let value = serde_norway::Value::deserialize(document).unwrap();
        if value["kind"] == "WebhookEndpoint" {
            return value["spec"]["transform"]["jq"]
                .as_str()
                .unwrap()
                .to_owned();
        }
    }
    panic!("no WebhookEndpoint with a transform in {path}");
}

/// A JSON string of `bytes` bytes.
fn payload_of(bytes: usize) -> Vec<u8> {
    let mut payload = vec![b'x'; bytes.max(2)];
    payload[0] = b'"';
    payload[bytes.max(2) - 1] = b'"';
    payload
}

#[test]
fn nesting_counts_brackets_outside_strings() {
    assert!(nesting_within(br#"{"a":[1,{"b":[]}]}"#, 4));
    assert!(!nesting_within(br#"{"a":[1,{"b":[]}]}"#, 3));
    assert!(nesting_within(br#"{"a":"[[[[\"[[[["}"#, 1));
    let deep = format!("{}1{}", "[".repeat(161), "]".repeat(161));
    assert!(!nesting_within(deep.as_bytes(), 160));
    // A bounded program on a payload nested past the limit goes to a worker.
    let cost = cost(".a").unwrap();
    assert!(cost.fits_in_process(br#"{"a":1}"#));
    assert!(!cost.fits_in_process(deep.as_bytes()));
}

fn refused(code: &str) -> String {
    match cost(code) {
        Ok(cost) => panic!("{code:?} was bounded: {cost:?}"),
        Err(why) => why.0,
    }
}

#[test]
fn straight_line_templates_are_bounded_and_recursive_ones_are_not() {
    for file in ["30-integration-slack.yaml", "32-integration-mailchimp.yaml"] {
        let cost = cost(&example(file)).unwrap_or_else(|why| panic!("{file}: {why}"));
        assert!(cost.fits_in_process(&payload_of(1024)), "{file}: {cost:?}");
        assert!(
            cost.fits_in_process(&payload_of(16 << 10)),
            "{file}: {cost:?}"
        );
    }
    // HubSpot's number formatting multiplies and strips zeros by recursion: a worker runs it.
    let why = refused(&example("31-integration-hubspot.yaml"));
    assert!(why.contains("`*`") || why.contains("calls itself"), "{why}");
}

#[test]
fn what_can_loop_iterate_or_escape_is_refused_with_the_reason() {
    let cases = [
        ("def f: f; f", "calls itself"),
        ("def f: def g: f; g; f", "calls itself"),
        // A user definition shadows the builtin it is named after.
        ("def select(f): select(f); select(.)", "calls itself"),
        ("repeat(.)", "repeat/1"),
        ("[range(1e9)]", "range/1"),
        ("[.[]]", "`.[]` iterates"),
        ("[..]", "`..`"),
        ("\"a\" * 1000000000", "`*`"),
        (".a - .b", "`-`"),
        ("reduce .x as $x (0; . + $x)", "`reduce`"),
        ("label $out | 1", "`label`"),
        (".a = 1", "assignments"),
        ("fromjson", "fromjson/0"),
        ("input", "input/0"),
        ("debug", "debug/0"),
        ("$__loc__", "not bound"),
        ("$ENV", "not bound"),
        ("@sh \"\\(.)\"", "`@sh`"),
        ("@base64d", "@base64d/0"),
        ("import \"x\" as x; .", "does not parse"),
    ];
    for (code, reason) in cases {
        let why = refused(code);
        assert!(
            why.contains(reason),
            "{code:?}: {why:?} does not say {reason:?}"
        );
    }
    let deep = format!("{}.{}", "[".repeat(200), "]".repeat(200));
    assert!(refused(&deep).contains("nests too deeply"));
}

#[test]
fn doubling_is_bounded_but_grows_past_the_in_process_budget() {
    // Each step doubles the value: 2^20 times the payload.
    let mut code = String::from(". as $v0");
    for step in 1..=20 {
        code.push_str(&format!(" | [$v{0}, $v{0}] as $v{step}", step - 1));
    }
    code.push_str(" | $v20");
    let cost: Cost = cost(&code).unwrap();
    assert!(cost.peak.per_byte >= (1 << 20) as f64, "{cost:?}");
    assert!(!cost.fits_in_process(&payload_of(1)), "{cost:?}");
    // Five doublings of a small payload are fine.
    let small = cost_of_doublings(5);
    assert!(small.fits_in_process(&payload_of(1024)), "{small:?}");
    assert!(!small.fits_in_process(&payload_of(1 << 20)), "{small:?}");
}

fn cost_of_doublings(steps: usize) -> Cost {
    let mut code = String::from(".");
    for _ in 0..steps {
        code.push_str(" | [., .]");
    }
    cost(&code).unwrap()
}

/// Programs from a grammar of what the bound accepts (and some it refuses).
fn program() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(".".to_owned()),
        Just(".a".to_owned()),
        Just(".b?".to_owned()),
        Just(".a.b".to_owned()),
        Just("\"s\"".to_owned()),
        Just("12".to_owned()),
        Just("null".to_owned()),
        Just("tostring".to_owned()),
        Just("length".to_owned()),
        Just("$v".to_owned()),
        Just("empty".to_owned()),
        Just("tojson".to_owned()),
        Just("ascii_upcase?".to_owned()),
        Just("ltrimstr(\"a\")".to_owned()),
        Just("has(\"a\")?".to_owned()),
        Just(".a[1:]?".to_owned()),
        Just("(.a - 0.9)?".to_owned()),
        Just("(.b / \"a\")?".to_owned()),
        Just("@html \"<\\(.)>\"".to_owned()),
        Just("@base64 \"\\(.)\"".to_owned()),
        Just("@uri \"\\(.)\"".to_owned()),
        Just("(tostring | tonumber?)".to_owned()),
        Just("-(length)".to_owned()),
        Just("not".to_owned()),
        Just("1e2".to_owned()),
    ];
    leaf.prop_recursive(5, 48, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} | {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}, {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} + {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} // {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} == {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} and {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} or {b})")),
            inner.clone().prop_map(|a| format!("[{a}]")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{{a: {a}, b: {b}}}")),
            inner.clone().prop_map(|a| format!("\"x\\({a})y\"")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(c, t, e)| format!("(if {c} then {t} else {e} end)")),
            inner.clone().prop_map(|a| format!("select({a})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("(try {a} catch {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} as $v | {b})")),
            inner
                .clone()
                .prop_map(|a| format!("(def f(g): [g, g]; f({a}))")),
            inner
                .clone()
                .prop_map(|a| format!("(def f($x): {{x: $x, y: $x}}; f({a}))")),
            inner.clone().prop_map(|a| format!(".[{a}]?")),
            inner
                .clone()
                .prop_map(|a| format!("(try error({a}) catch .)")),
            inner
                .clone()
                .prop_map(|a| format!("(0.1 + ({a} | length))")),
        ]
    })
}

fn payload() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i32>().prop_map(serde_json::Value::from),
        "[a-z\"\\\\\\n]{0,12}".prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[ab]", inner, 0..3)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    });
    (value.clone(), value).prop_map(|(a, b)| serde_json::json!({"a": a, "b": b}))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever a bounded program outputs is no larger than its bound says.
    #[test]
    fn outputs_stay_within_the_bound(code in program(), payload in payload()) {
        // `$v` outside an `as` is unbound: refused, and jq would not compile it either.
        let code = format!(". as $v | {code}");
        let bytes = serde_json::to_vec(&payload).unwrap();
        if let Ok(cost) = cost(&code) {
            let program = Program::compile(&code).unwrap();
            // Several outputs are an error after the first is built; the first still counts.
            if let Ok(Output::Body(body)) = program.run(&bytes, usize::MAX) {
                let bound = cost.peak.at(bytes.len());
                prop_assert!(body.len() as f64 <= bound, "{code}: {} > {bound}", body.len());
            }
        }
    }
}
