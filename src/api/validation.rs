//! Spec validation done by the controller. The same rules are in the CRD's OpenAPI schema and
//! CEL rules (see `crds.rs`), but an API server before 1.25 ignores CEL, so the controller checks
//! again and reports `Ready=False`, reason `InvalidSpec`, with a message naming the field.
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::duration;
use super::endpoint::{OrderingMode, OrderingSpec, WebhookEndpointSpec};
use super::event::WebhookEventSpec;
use super::event_types;
use super::key_path::KeyPath;
use super::policy::{
    generated_secret_name, EffectiveCircuitBreaker, EffectivePolicy, EffectiveRateLimit,
    EffectiveRetry, EffectiveSigning, GENERATED_PREVIOUS_KEY, GENERATED_SECRET_KEY,
};
use super::replay::WebhookReplaySpec;
use super::subscription::WebhookSubscriptionSpec;

pub mod reserved_headers;

/// One problem in a spec: the field's path and what is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Every problem found in a spec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors(pub Vec<FieldError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        f.write_str(&parts.join("; "))
    }
}

/// Collects field errors while a spec is checked.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_string(),
            message: message.into(),
        });
    }

    fn duration(&mut self, field: &str, value: &str) -> Duration {
        duration::parse(value).unwrap_or_else(|e| {
            self.add(field, e.to_string());
            Duration::ZERO
        })
    }

    fn range(&mut self, field: &str, value: u64, min: u64, max: u64) {
        if value < min || value > max {
            self.add(
                field,
                format!("{value} is out of range; allowed: {min}–{max}"),
            );
        }
    }

    fn finish<T>(self, value: T) -> Result<T, SpecErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(SpecErrors(self.0))
        }
    }
}

/// Checks an endpoint's spec and returns its effective, defaulted policy.
/// `allow_plain_http` is the operator's setting for `http://` URLs.
pub fn validate_endpoint(
    spec: &WebhookEndpointSpec,
    name: &str,
    allow_plain_http: bool,
) -> Result<EffectivePolicy, SpecErrors> {
    let mut errors = Errors::default();
    match (&spec.url, &spec.url_from) {
        (Some(url), None) => check_url(&mut errors, "spec.url", url, allow_plain_http),
        (None, Some(from)) => {
            let reference = &from.secret_key_ref;
            if reference.name.is_empty() || reference.key.is_empty() {
                errors.add(
                    "spec.urlFrom.secretKeyRef",
                    "needs both the Secret's name and a key",
                );
            }
        }
        (Some(_), Some(_)) => errors.add(
            "spec.urlFrom",
            "set exactly one of url and urlFrom; remove one of them",
        ),
        (None, None) => errors.add(
            "spec.url",
            "is required (or urlFrom: the URL in a Secret); write e.g. https://crm.example.com/webhooks",
        ),
    }
    errors.range("spec.timeoutSeconds", spec.timeout_seconds.into(), 1, 300);

    let retry = &spec.retry_policy;
    errors.range(
        "spec.retryPolicy.maxAttempts",
        retry.max_attempts.into(),
        0,
        20,
    );
    errors.range("spec.retryPolicy.jitter", retry.jitter.into(), 0, 100);
    let base_delay = errors.duration("spec.retryPolicy.baseDelay", &retry.base_delay);
    let max_delay = errors.duration("spec.retryPolicy.maxDelay", &retry.max_delay);
    if base_delay > max_delay {
        errors.add(
            "spec.retryPolicy.baseDelay",
            format!(
                "{} is longer than maxDelay {}; baseDelay must be at most maxDelay",
                retry.base_delay, retry.max_delay
            ),
        );
    }

    let rate = &spec.rate_limit;
    errors.range(
        "spec.rateLimit.requestsPerMinute",
        rate.requests_per_minute.into(),
        1,
        6_000_000,
    );
    errors.range("spec.rateLimit.burst", rate.burst.into(), 1, 100_000);

    let breaker = &spec.circuit_breaker;
    errors.range(
        "spec.circuitBreaker.failureThreshold",
        breaker.failure_threshold.into(),
        1,
        1000,
    );
    let open_duration = errors.duration("spec.circuitBreaker.openDuration", &breaker.open_duration);
    if open_duration.is_zero() && duration::parse(&breaker.open_duration).is_ok() {
        errors.add("spec.circuitBreaker.openDuration", "must be longer than 0s");
    }
    if let Some(ordering) = &spec.ordering {
        check_ordering(&mut errors, ordering);
    }
    let grace = errors.duration(
        "spec.signing.rotationGracePeriod",
        &spec.signing.rotation_grace_period,
    );

    for header in spec.headers.keys() {
        check_header_name(&mut errors, &format!("spec.headers[{header}]"), header);
    }
    for (header, value) in &spec.headers {
        if !is_valid_header_value(value) {
            errors.add(
                &format!("spec.headers[{header}]"),
                "the value has control characters; use printable characters only",
            );
        }
    }
    for (index, from) in spec.headers_from.iter().enumerate() {
        let field = format!("spec.headersFrom[{index}]");
        check_header_name(&mut errors, &format!("{field}.name"), &from.name);
        if from.secret_key_ref.name.is_empty() || from.secret_key_ref.key.is_empty() {
            errors.add(
                &format!("{field}.secretKeyRef"),
                "needs both the Secret's name and a key",
            );
        }
    }
    if let Some(secret_ref) = &spec.signing.secret_ref {
        if secret_ref.name.is_empty() || secret_ref.key.is_empty() {
            errors.add(
                "spec.signing.secretRef",
                "needs both the Secret's name and a key",
            );
        }
    }

    let (secret_name, secret_key, previous_secret_key) = match &spec.signing.secret_ref {
        Some(user) => (
            user.name.clone(),
            user.key.clone(),
            format!("{}.previous", user.key),
        ),
        None => (
            generated_secret_name(name),
            GENERATED_SECRET_KEY.to_string(),
            GENERATED_PREVIOUS_KEY.to_string(),
        ),
    };
    errors.finish(EffectivePolicy {
        url: spec.url.clone().unwrap_or_default(),
        url_from: spec.url_from.as_ref().map(|f| f.secret_key_ref.clone()),
        method: spec.method,
        display_name: spec
            .display_name
            .clone()
            .unwrap_or_else(|| name.to_string()),
        timeout_seconds: spec.timeout_seconds,
        retry: EffectiveRetry {
            max_attempts: retry.max_attempts,
            backoff: retry.backoff,
            base_delay_ms: millis(base_delay),
            max_delay_ms: millis(max_delay),
            jitter_percent: retry.jitter,
            immediate_retry: retry.effective_immediate_retry(),
        },
        rate_limit: EffectiveRateLimit {
            requests_per_minute: rate.requests_per_minute,
            burst: rate.burst,
            adaptive: rate.adaptive,
        },
        circuit_breaker: EffectiveCircuitBreaker {
            failure_threshold: breaker.failure_threshold,
            open_duration_ms: millis(open_duration),
        },
        signing: EffectiveSigning {
            scheme: spec.signing.scheme,
            rotation_grace_period_ms: millis(grace),
            secret_name,
            secret_key,
            previous_secret_key,
        },
        headers: spec.headers.clone(),
        headers_from: spec.headers_from.clone(),
        suspend: spec.suspend,
        ordering: spec
            .ordering
            .clone()
            .filter(|o| o.mode != OrderingMode::None),
        transform: spec.transform.as_ref().map(|t| Arc::from(t.jq.as_str())),
    })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// What is wrong with a receiver URL, if anything: as the controller reports it for `spec.url`,
/// and as the dispatcher reports a URL read from a Secret (`urlFrom`).
pub fn url_problems(raw: &str, allow_plain_http: bool) -> Option<String> {
    let mut errors = Errors::default();
    check_url(&mut errors, "url", raw, allow_plain_http);
    (!errors.0.is_empty()).then(|| {
        errors
            .0
            .iter()
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    })
}

fn check_url(errors: &mut Errors, field: &str, raw: &str, allow_plain_http: bool) {
    let url = match url::Url::parse(raw) {
        Ok(url) => url,
        Err(e) => {
            errors.add(
                field,
                format!("`{raw}` is not a URL ({e}); write e.g. https://crm.example.com/webhooks"),
            );
            return;
        }
    };
    match url.scheme() {
        "https" => {}
        "http" if allow_plain_http => {}
        "http" => errors.add(
            field,
            "plain http:// is not allowed by this operator's configuration; use https://",
        ),
        other => errors.add(
            field,
            format!("scheme `{other}` is not allowed; use https://"),
        ),
    }
    if url.host_str().is_none_or(str::is_empty) {
        errors.add(
            field,
            "has no host; write e.g. https://crm.example.com/webhooks",
        );
    }
    if !url.username().is_empty() || url.password().is_some() {
        errors.add(
            field,
            "must not carry credentials; put them in a Secret and use spec.headersFrom",
        );
    }
}

fn check_header_name(errors: &mut Errors, field: &str, name: &str) {
    let is_token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !is_token {
        errors.add(field, format!("`{name}` is not a valid HTTP header name"));
        return;
    }
    if reserved_headers::is_reserved(name) {
        errors.add(
            field,
            format!(
                "`{name}` is reserved (set by the dispatcher, or it controls the connection) and cannot be overridden; reserved: {}",
                reserved_headers::describe()
            ),
        );
    }
}

fn is_valid_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// Checks a subscription's spec.
pub fn validate_subscription(spec: &WebhookSubscriptionSpec) -> Result<(), SpecErrors> {
    let mut errors = Errors::default();
    match (&spec.endpoint_ref, &spec.endpoint_selector) {
        (Some(_), Some(_)) => errors.add(
            "spec.endpointRef",
            "set either endpointRef or endpointSelector, not both",
        ),
        (None, None) => errors.add(
            "spec.endpointRef",
            "set endpointRef (an endpoint's name) or endpointSelector (labels)",
        ),
        (Some(reference), None) if reference.name.is_empty() => {
            errors.add("spec.endpointRef.name", "must not be empty")
        }
        _ => {}
    }
    if let Some(selector) = &spec.endpoint_selector {
        for (index, expr) in selector.match_expressions.iter().flatten().enumerate() {
            if !["In", "NotIn", "Exists", "DoesNotExist"].contains(&expr.operator.as_str()) {
                errors.add(
                    &format!("spec.endpointSelector.matchExpressions[{index}].operator"),
                    format!(
                        "`{}` is not an operator; allowed: In, NotIn, Exists, DoesNotExist",
                        expr.operator
                    ),
                );
            }
        }
    }
    check_patterns(&mut errors, "spec.eventTypes", &spec.event_types, false);
    errors.finish(())
}

fn check_patterns(errors: &mut Errors, field: &str, patterns: &[String], may_be_empty: bool) {
    if patterns.is_empty() && !may_be_empty {
        errors.add(
            field,
            "list at least one event type, e.g. user.created, pitch.* or *",
        );
    }
    for (index, pattern) in patterns.iter().enumerate() {
        if !event_types::is_valid_pattern(pattern) {
            errors.add(
                &format!("{field}[{index}]"),
                format!("`{pattern}` is not an event type or pattern; allowed: user.created, pitch.*, *"),
            );
        }
    }
}

/// Checks an event's spec.
pub fn validate_event(spec: &WebhookEventSpec) -> Result<(), SpecErrors> {
    let mut errors = Errors::default();
    if !event_types::is_valid_event_type(&spec.type_) {
        errors.add(
            "spec.type",
            format!(
                "`{}` is not an event type; write dot-separated lowercase words, e.g. user.created",
                spec.type_
            ),
        );
    }
    if let Some(embedded) = spec.data.get("event_type") {
        if embedded.as_str() != Some(spec.type_.as_str()) {
            errors.add(
                "spec.data.event_type",
                "is set by the dispatcher from spec.type; remove it or make it equal to spec.type",
            );
        }
    }
    errors.finish(())
}

/// Checks a replay's spec and returns its time range.
pub fn validate_replay(
    spec: &WebhookReplaySpec,
) -> Result<(jiff::Timestamp, Option<jiff::Timestamp>), SpecErrors> {
    let mut errors = Errors::default();
    if spec.endpoint_ref.name.is_empty() {
        errors.add("spec.endpointRef.name", "must not be empty");
    }
    let parse = |errors: &mut Errors, field: &str, value: &str| {
        value
            .parse::<jiff::Timestamp>()
            .map_err(|e| {
                errors.add(
                    field,
                    format!(
                        "`{value}` is not an RFC 3339 time ({e}); write e.g. 2026-01-15T10:30:00Z"
                    ),
                );
            })
            .ok()
    };
    let from = parse(&mut errors, "spec.from", &spec.from);
    let to = spec
        .to
        .as_deref()
        .and_then(|to| parse(&mut errors, "spec.to", to));
    if let (Some(from), Some(to)) = (from, to) {
        if from >= to {
            errors.add("spec.to", "must be after spec.from");
        }
    }
    check_patterns(&mut errors, "spec.eventTypes", &spec.event_types, true);
    if spec.outcomes.is_empty() {
        errors.add(
            "spec.outcomes",
            "list at least one of DeadLettered, Delivered",
        );
    }
    let range = (from.unwrap_or_default(), to);
    errors.finish(range)
}

#[cfg(test)]
mod tests;

/// `spec.ordering`: a key exactly when the mode is `ByKey`, and a key path that parses.
fn check_ordering(errors: &mut Errors, ordering: &OrderingSpec) {
    match (ordering.mode, &ordering.key) {
        (OrderingMode::ByKey, None) => errors.add(
            "spec.ordering.key",
            "is required when mode is ByKey: the path of the key in the event, e.g. data.user.id",
        ),
        (OrderingMode::ByKey, Some(key)) => {
            if let Err(error) = KeyPath::parse(key) {
                errors.add("spec.ordering.key", error.to_string());
            }
        }
        (_, Some(_)) => errors.add(
            "spec.ordering.key",
            "is only used with mode ByKey; remove it or set mode: ByKey",
        ),
        (_, None) => {}
    }
}
