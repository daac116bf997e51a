use super::*;
use crate::api::endpoint::{HeaderFromSecret, RetryPolicySpec};
use crate::api::references::{LocalObjectReference, SecretKeySelector};

fn endpoint(url: &str) -> WebhookEndpointSpec {
    serde_json::from_value(serde_json::json!({ "url": url })).unwrap()
}

fn fields(errors: &SpecErrors) -> Vec<&str> {
    errors.0.iter().map(|e| e.field.as_str()).collect()
}

#[test]
fn defaults_give_the_seed_policy() {
    let policy =
        validate_endpoint(&endpoint("https://crm.example.com/hook"), "crm", false).unwrap();
    assert_eq!(policy.timeout_seconds, 30);
    assert_eq!(policy.retry.max_attempts, 3);
    assert_eq!(policy.retry.base_delay_ms, 1_000);
    assert_eq!(policy.retry.max_delay_ms, 3_600_000);
    assert_eq!(policy.rate_limit.requests_per_minute, 100);
    assert!(policy.rate_limit.adaptive);
    assert_eq!(policy.circuit_breaker.failure_threshold, 5);
    assert_eq!(policy.circuit_breaker.open_duration_ms, 300_000);
    assert_eq!(policy.signing.rotation_grace_period_ms, 86_400_000);
    assert_eq!(policy.display_name, "crm");
}

#[test]
fn plain_http_needs_the_operator_setting() {
    let spec = endpoint("http://127.0.0.1:8080/hook");
    let errors = validate_endpoint(&spec, "x", false).unwrap_err();
    assert_eq!(fields(&errors), ["spec.url"]);
    assert!(errors.to_string().contains("use https://"), "{errors}");
    assert!(validate_endpoint(&spec, "x", true).is_ok());
}

#[test]
fn bad_urls_are_named() {
    for url in [
        "not a url",
        "ftp://example.com/x",
        "https://user:pw@example.com/",
    ] {
        let errors = validate_endpoint(&endpoint(url), "x", false).unwrap_err();
        assert_eq!(fields(&errors), ["spec.url"], "{url}: {errors}");
    }
}

#[test]
fn base_delay_longer_than_max_delay_is_refused() {
    let mut spec = endpoint("https://example.com/");
    spec.retry_policy = RetryPolicySpec {
        base_delay: "2h".into(),
        max_delay: "1h".into(),
        ..Default::default()
    };
    let errors = validate_endpoint(&spec, "x", false).unwrap_err();
    assert_eq!(fields(&errors), ["spec.retryPolicy.baseDelay"]);
    assert!(errors.to_string().contains("at most maxDelay"));
}

#[test]
fn malformed_durations_and_ranges_name_each_field() {
    let mut spec = endpoint("https://example.com/");
    spec.retry_policy.max_delay = "forever".into();
    spec.circuit_breaker.open_duration = "0s".into();
    spec.timeout_seconds = 0;
    spec.rate_limit.requests_per_minute = 0;
    let errors = validate_endpoint(&spec, "x", false).unwrap_err();
    let found = fields(&errors);
    for field in [
        "spec.retryPolicy.maxDelay",
        "spec.circuitBreaker.openDuration",
        "spec.timeoutSeconds",
        "spec.rateLimit.requestsPerMinute",
    ] {
        assert!(found.contains(&field), "{field} missing from {errors}");
    }
}

#[test]
fn reserved_headers_cannot_be_set() {
    let mut spec = endpoint("https://example.com/");
    spec.headers
        .insert("X-Webhook-Signature".into(), "forged".into());
    spec.headers.insert("User-Agent".into(), "me".into());
    spec.headers.insert("X-Team".into(), "crm".into());
    spec.headers_from.push(HeaderFromSecret {
        name: "webhook-id".into(),
        secret_key_ref: SecretKeySelector {
            name: "s".into(),
            key: "k".into(),
        },
    });
    let errors = validate_endpoint(&spec, "x", false).unwrap_err();
    assert_eq!(errors.0.len(), 3, "{errors}");
    assert!(errors.to_string().contains("cannot be overridden"));
}

/// Headers the sender would drop (framing, connection and proxy control) are refused up front,
/// with InvalidSpec naming the header, instead of passing and vanishing at send time.
#[test]
fn headers_the_sender_drops_are_refused_by_name() {
    for header in [
        "Content-Encoding",
        "Trailer",
        "Expect",
        "Proxy-Authorization",
        "proxy-connection",
        "Proxy-Anything",
        "TE",
        "Keep-Alive",
    ] {
        let mut spec = endpoint("https://example.com/");
        spec.headers.insert(header.into(), "v".into());
        let errors = validate_endpoint(&spec, "x", false).unwrap_err();
        assert_eq!(
            fields(&errors),
            [format!("spec.headers[{header}]")],
            "{errors}"
        );
        assert!(
            errors.to_string().contains(&format!("`{header}`")),
            "{errors}"
        );

        let mut from_secret = endpoint("https://example.com/");
        from_secret.headers_from.push(HeaderFromSecret {
            name: header.into(),
            secret_key_ref: SecretKeySelector {
                name: "s".into(),
                key: "k".into(),
            },
        });
        let errors = validate_endpoint(&from_secret, "x", false).unwrap_err();
        assert_eq!(fields(&errors), ["spec.headersFrom[0].name"], "{errors}");
    }
}

#[test]
fn header_values_with_newlines_are_refused() {
    let mut spec = endpoint("https://example.com/");
    spec.headers
        .insert("X-Team".into(), "a\r\nX-Evil: 1".into());
    assert!(validate_endpoint(&spec, "x", false).is_err());
}

#[test]
fn subscription_needs_exactly_one_target() {
    let both = WebhookSubscriptionSpec {
        endpoint_ref: Some(LocalObjectReference { name: "a".into() }),
        endpoint_selector: Some(Default::default()),
        event_types: vec!["*".into()],
        suspend: false,
    };
    assert!(validate_subscription(&both)
        .unwrap_err()
        .to_string()
        .contains("not both"));
    let neither = WebhookSubscriptionSpec {
        endpoint_ref: None,
        endpoint_selector: None,
        ..both.clone()
    };
    assert!(validate_subscription(&neither).is_err());
    let by_name = WebhookSubscriptionSpec {
        endpoint_selector: None,
        ..both
    };
    assert!(validate_subscription(&by_name).is_ok());
}

#[test]
fn subscription_event_types_are_checked() {
    let spec = WebhookSubscriptionSpec {
        endpoint_ref: Some(LocalObjectReference { name: "a".into() }),
        endpoint_selector: None,
        event_types: vec!["user.created".into(), "Pitch".into()],
        suspend: false,
    };
    let errors = validate_subscription(&spec).unwrap_err();
    assert_eq!(fields(&errors), ["spec.eventTypes[1]"]);
}

#[test]
fn event_type_and_embedded_event_type() {
    let ok: WebhookEventSpec = serde_json::from_value(
        serde_json::json!({"type": "user.created", "data": {"user": {"id": 1}}}),
    )
    .unwrap();
    assert!(validate_event(&ok).is_ok());
    let bad: WebhookEventSpec =
        serde_json::from_value(serde_json::json!({"type": "user", "data": {"event_type": "x.y"}}))
            .unwrap();
    let errors = validate_event(&bad).unwrap_err();
    assert_eq!(fields(&errors), ["spec.type", "spec.data.event_type"]);
}

#[test]
fn replay_range_must_be_ordered() {
    let spec: WebhookReplaySpec = serde_json::from_value(serde_json::json!({
        "endpointRef": {"name": "crm"},
        "from": "2026-01-02T00:00:00Z",
        "to": "2026-01-01T00:00:00Z"
    }))
    .unwrap();
    assert_eq!(fields(&validate_replay(&spec).unwrap_err()), ["spec.to"]);
    let spec: WebhookReplaySpec = serde_json::from_value(serde_json::json!({
        "endpointRef": {"name": "crm"},
        "from": "2026-01-01T00:00:00Z"
    }))
    .unwrap();
    assert!(validate_replay(&spec).is_ok());
}

/// The immediate retry: on for the default schedule (the document's), off for a schedule of
/// one's own unless asked for, and as set when set.
#[test]
fn immediate_retry_follows_the_schedule_unless_set() {
    let policy = |retry: serde_json::Value| {
        let mut spec = endpoint("https://example.com/");
        spec.retry_policy = serde_json::from_value(retry).unwrap();
        validate_endpoint(&spec, "x", false)
            .unwrap()
            .retry
            .immediate_retry
    };
    assert!(policy(serde_json::json!({})));
    assert!(policy(
        serde_json::json!({"maxAttempts": 3, "baseDelay": "1s"})
    ));
    assert!(!policy(serde_json::json!({"maxAttempts": 5})));
    assert!(!policy(serde_json::json!({"baseDelay": "2s"})));
    assert!(policy(
        serde_json::json!({"baseDelay": "2s", "immediateRetry": true})
    ));
    assert!(!policy(serde_json::json!({"immediateRetry": false})));
}

#[test]
fn exactly_one_of_url_and_url_from() {
    let from =
        |json: serde_json::Value| -> WebhookEndpointSpec { serde_json::from_value(json).unwrap() };
    let secret = serde_json::json!({"secretKeyRef": {"name": "slack", "key": "url"}});
    let policy = validate_endpoint(
        &from(serde_json::json!({"urlFrom": secret, "method": "PATCH"})),
        "x",
        false,
    )
    .unwrap();
    assert_eq!(policy.url, "");
    assert_eq!(
        policy.url_from.as_ref().map(|s| s.name.as_str()),
        Some("slack")
    );
    assert_eq!(policy.method, crate::api::endpoint::HttpMethod::Patch);
    let both = from(serde_json::json!({"url": "https://a.example.com/", "urlFrom": secret}));
    let errors = validate_endpoint(&both, "x", false).unwrap_err();
    assert_eq!(fields(&errors), ["spec.urlFrom"]);
    let neither = from(serde_json::json!({}));
    let errors = validate_endpoint(&neither, "x", false).unwrap_err();
    assert_eq!(fields(&errors), ["spec.url"]);
    assert!(errors.to_string().contains("urlFrom"), "{errors}");
    let empty = from(serde_json::json!({"urlFrom": {"secretKeyRef": {"name": "", "key": "url"}}}));
    let errors = validate_endpoint(&empty, "x", false).unwrap_err();
    assert_eq!(fields(&errors), ["spec.urlFrom.secretKeyRef"]);
}

#[test]
fn urls_read_from_secrets_are_checked_like_spec_url() {
    assert_eq!(
        url_problems("https://hooks.slack.com/services/T0/B0/x", false),
        None
    );
    assert_eq!(url_problems("http://127.0.0.1:9/hook", true), None);
    for bad in [
        "ftp://files.example.com/in",
        "not a url",
        "https://u:p@example.com/",
    ] {
        let problem = url_problems(bad, true).unwrap_or_default();
        assert!(!problem.is_empty(), "{bad} accepted");
    }
    assert!(url_problems("http://example.com/", false)
        .unwrap()
        .contains("https://"));
}
