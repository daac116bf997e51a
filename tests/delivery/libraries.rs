//! Receivers no one here wrote: the reference Standard Webhooks library (Python package
//! `standardwebhooks`) verifies our signatures, including during a rotation. Skipped with a
//! printed reason where the package is not installed (`pip install standardwebhooks`), except in
//! CI, which installs it.
use jiff::Timestamp;
use serde_json::json;
use webhook_operator::delivery::signing::{self, SigningKeys, SigningScheme};

use super::support::{self, STANDARD_SECRET};

const SCRIPT: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
for case in json.load(sys.stdin):
    Webhook(case["secret"]).verify(case["body"], case["headers"])
    try:
        Webhook("whsec_d3Jvbmctc2VjcmV0").verify(case["body"], case["headers"])
        raise SystemExit("a wrong secret was accepted")
    except Exception as err:
        if isinstance(err, SystemExit):
            raise
print("ok")
"#;

#[test]
fn reference_standard_webhooks_library_verifies_our_signatures() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .output();
    if !probe.map(|out| out.status.success()).unwrap_or(false) {
        crate::skip_unless_ci("the Python package standardwebhooks is not installed");
        return;
    }
    let event = support::event(SigningScheme::StandardWebhooks);
    let body = std::str::from_utf8(&event.body).unwrap();
    let now = Timestamp::now().as_second();
    let mut cases = Vec::new();
    for (keys, secret) in [
        (SigningKeys::new(STANDARD_SECRET), STANDARD_SECRET),
        (
            SigningKeys {
                primary: "whsec_bmV3LXNlY3JldA==".into(),
                previous: Some(STANDARD_SECRET.into()),
            },
            STANDARD_SECRET,
        ),
        (
            SigningKeys {
                primary: "whsec_bmV3LXNlY3JldA==".into(),
                previous: Some(STANDARD_SECRET.into()),
            },
            "whsec_bmV3LXNlY3JldA==",
        ),
    ] {
        let headers = signing::sign(
            SigningScheme::StandardWebhooks,
            &keys,
            &event.id,
            now,
            event.body.as_ref(),
        )
        .unwrap();
        let headers: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .map(|(name, value)| (name.as_str().to_string(), json!(value.to_str().unwrap())))
            .collect();
        cases.push(json!({"secret": secret, "body": body, "headers": headers}));
    }
    let output = super::run_with_stdin(
        "python3",
        &["-c", SCRIPT],
        &serde_json::to_vec(&cases).unwrap(),
    )
    .unwrap();
    assert_eq!(output.trim(), "ok");
}
