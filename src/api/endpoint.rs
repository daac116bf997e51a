//! `WebhookEndpoint`: a receiver URL and how to deliver to it.
use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::Condition;
use super::references::SecretKeySelector;

/// A receiver URL and how to deliver to it: timeout, retries, rate limit, circuit breaker,
/// custom headers and request signing.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "webhooks.pitchey.io",
    version = "v1alpha1",
    kind = "WebhookEndpoint",
    namespaced,
    status = "WebhookEndpointStatus",
    shortname = "whep",
    category = "webhooks",
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Circuit","type":"string","jsonPath":".status.circuit.state"}"#,
    printcolumn = r#"{"name":"Paused","type":"boolean","jsonPath":".status.ordering.paused"}"#,
    printcolumn = r#"{"name":"Success rate","type":"string","jsonPath":".status.delivery.successRateLastHour"}"#,
    printcolumn = r#"{"name":"Last delivery","type":"date","jsonPath":".status.delivery.lastDeliveryTime"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Health","type":"integer","priority":1,"jsonPath":".status.delivery.healthScore"}"#,
    printcolumn = r#"{"name":"Pending","type":"integer","priority":1,"jsonPath":".status.delivery.pending"}"#,
    printcolumn = r#"{"name":"Rate/min","type":"integer","priority":1,"jsonPath":".status.delivery.currentRatePerMinute"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpointSpec {
    /// The receiver's URL. `https://` unless the operator allows plain HTTP. Set this or
    /// `urlFrom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub url: Option<String>,
    /// The receiver's URL read from a Secret key, for URLs that are secrets themselves (a Slack
    /// incoming webhook) or carry one (a list id). Checked like `url` when it is read, and subject
    /// to the same egress rules. Set this or `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_from: Option<UrlFrom>,
    /// The HTTP method of every request: `POST` (default), `PUT` or `PATCH`.
    #[serde(default)]
    pub method: HttpMethod,
    /// A human-readable name, sent as `webhook.name` in every payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub display_name: Option<String>,
    /// What this endpoint is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Total time allowed for one request, in seconds (1–300).
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: u32,
    /// How failed deliveries are retried.
    #[serde(default)]
    pub retry_policy: RetryPolicySpec,
    /// How fast requests may be sent to this endpoint.
    #[serde(default)]
    pub rate_limit: RateLimitSpec,
    /// When to stop sending to a failing endpoint for a while.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerSpec,
    /// Static headers added to every request. Reserved headers (signature, event id, content
    /// type, user agent, host) cannot be set here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub headers: BTreeMap<String, String>,
    /// Headers whose values come from Secret keys, e.g. an `Authorization` token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub headers_from: Vec<HeaderFromSecret>,
    /// How requests are signed.
    #[serde(default)]
    pub signing: SigningSpec,
    /// Stops deliveries while true; they are held, not lost, and sent once it is false again.
    #[serde(default)]
    pub suspend: bool,
    /// In what order deliveries reach the receiver. Unset: in parallel, and a retried delivery
    /// may arrive after newer ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<OrderingSpec>,
    /// Reshapes each payload before it is sent, for receivers that want their own format (a
    /// Slack message, a CRM contact). Unset: the payload is sent as documented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<TransformSpec>,
}

impl WebhookEndpointSpec {
    /// Whether the controller reads the Secret `name` for this endpoint (`signing.secretRef`,
    /// `urlFrom`), so a change to it must reconcile the endpoint.
    pub fn reads_secret(&self, name: &str) -> bool {
        let named = |reference: &SecretKeySelector| reference.name == name;
        self.signing.secret_ref.as_ref().is_some_and(named)
            || self
                .url_from
                .as_ref()
                .is_some_and(|from| named(&from.secret_key_ref))
    }
}

/// Where `urlFrom` reads the URL.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UrlFrom {
    /// The Secret key holding the whole URL.
    pub secret_key_ref: SecretKeySelector,
}

/// The method of delivery requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Post,
    Put,
    Patch,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
        }
    }
}

/// A transform of the payload into the request body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransformSpec {
    /// A jq program (the jaq implementation, with jq's standard library; no modules, no I/O).
    /// Its input is the payload (`event_id`, `timestamp`, `webhook`, `data`); its one output is
    /// the JSON body sent and signed. A program that outputs nothing (`empty`, or a `select`
    /// that fails) drops the event for this endpoint: the delivery is `Filtered`, not failed.
    /// An error, a second output or a non-JSON value dead-letters the delivery. Each run is
    /// bounded in time, memory and output size by the dispatcher.
    #[schemars(length(min = 1, max = 16384))]
    pub jq: String,
}

/// Ordered delivery: one delivery at a time per lane, in publish order. A failing delivery
/// blocks its lane until it is delivered or dead-lettered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderingSpec {
    /// `None` (parallel, the default), `Strict` (one lane: one delivery at a time, in publish
    /// order) or `ByKey` (one lane per value of `key`: in order per key, in parallel across keys,
    /// up to the dispatcher's per-endpoint concurrency).
    #[serde(default)]
    pub mode: OrderingMode,
    /// For `ByKey`: the path of the key in the event, `data.` followed by dot-separated field
    /// names (or array indexes), e.g. `data.user.id`; or `event_type`. Events without it share
    /// one lane. At most 16 names of at most 63 characters each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 256),
        regex(pattern = r"^(event_type|data(\.[A-Za-z0-9_-]+)+)$")
    )]
    pub key: Option<String>,
    /// What follows a dead letter in a lane: `Continue` with the next delivery (the default), or
    /// `Pause` the endpoint until someone resumes it (annotation `webhooks.pitchey.io/resume`).
    #[serde(default)]
    pub on_dead_letter: OnDeadLetter,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OrderingMode {
    #[default]
    None,
    Strict,
    ByKey,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OnDeadLetter {
    #[default]
    Continue,
    Pause,
}

fn default_timeout_seconds() -> u32 {
    30
}

/// How failed deliveries are retried. The defaults give the seed's schedule: 1 s, 2 s, 4 s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicySpec {
    /// Retries after the first attempt (0–20). Default 3.
    #[serde(default = "default_max_attempts")]
    #[schemars(range(max = 20))]
    pub max_attempts: u32,
    /// How the delay grows between retries.
    #[serde(default)]
    pub backoff: Backoff,
    /// Delay before the first retry. Default `1s`.
    #[serde(default = "default_base_delay")]
    #[schemars(schema_with = "super::schema::duration")]
    pub base_delay: String,
    /// Upper bound of any delay, including a receiver's `Retry-After`. Default `1h`.
    #[serde(default = "default_max_delay")]
    #[schemars(schema_with = "super::schema::duration")]
    pub max_delay: String,
    /// Randomizes each delay by up to this percentage either way (0–100). Default 0.
    #[serde(default)]
    #[schemars(range(max = 100))]
    pub jitter: u8,
    /// Retry at once, before the delays, when the first attempt gets a 5xx or a transport failure
    /// (the immediate retry does not count toward maxAttempts). Default: true when the rest of the
    /// policy is the default (the document's schedule: at once, then 1 s, 2 s, 4 s), false when you
    /// set your own schedule, which so stays as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immediate_retry: Option<bool>,
}

impl RetryPolicySpec {
    /// Whether the immediate retry applies: as set, else only for the default schedule.
    pub fn effective_immediate_retry(&self) -> bool {
        self.immediate_retry.unwrap_or_else(|| {
            let schedule = Self {
                immediate_retry: None,
                ..self.clone()
            };
            schedule == Self::default()
        })
    }
}

impl Default for RetryPolicySpec {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            backoff: Backoff::default(),
            base_delay: default_base_delay(),
            max_delay: default_max_delay(),
            jitter: 0,
            immediate_retry: None,
        }
    }
}

fn default_max_attempts() -> u32 {
    3
}
fn default_base_delay() -> String {
    "1s".to_string()
}
fn default_max_delay() -> String {
    "1h".to_string()
}

/// How the delay between retries grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// base, 2×base, 4×base, …
    #[default]
    Exponential,
    /// base, 2×base, 3×base, …
    Linear,
    /// base every time.
    Fixed,
}

/// Requests per minute to this endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Sustained requests per minute. Default 100.
    #[serde(default = "default_requests_per_minute")]
    #[schemars(range(min = 1, max = 6_000_000))]
    pub requests_per_minute: u32,
    /// Requests that may be sent at once above the sustained rate. Default 10.
    #[serde(default = "default_burst")]
    #[schemars(range(min = 1, max = 100_000))]
    pub burst: u32,
    /// Slow down when the receiver answers 429/503 or `Retry-After`, speed up again on success.
    #[serde(default = "default_true")]
    pub adaptive: bool,
}

impl Default for RateLimitSpec {
    fn default() -> Self {
        Self {
            requests_per_minute: default_requests_per_minute(),
            burst: default_burst(),
            adaptive: true,
        }
    }
}

fn default_requests_per_minute() -> u32 {
    100
}
fn default_burst() -> u32 {
    10
}
fn default_true() -> bool {
    true
}

/// Stops sending to an endpoint after consecutive failures, then probes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreakerSpec {
    /// Consecutive failures that open the circuit. Default 5.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 1000))]
    pub failure_threshold: u32,
    /// How long the circuit stays open before a single probe request. Default `5m`.
    #[serde(default = "default_open_duration")]
    #[schemars(schema_with = "super::schema::duration")]
    pub open_duration: String,
}

impl Default for CircuitBreakerSpec {
    fn default() -> Self {
        Self {
            failure_threshold: default_failure_threshold(),
            open_duration: default_open_duration(),
        }
    }
}

fn default_failure_threshold() -> u32 {
    5
}
fn default_open_duration() -> String {
    "5m".to_string()
}

/// A header whose value is read from a Secret key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderFromSecret {
    /// Header name, e.g. `Authorization`.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// The Secret key holding the header's value.
    pub secret_key_ref: SecretKeySelector,
}

/// How requests are signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SigningSpec {
    /// `pitchey` (X-Webhook-Signature, the default) or `standard-webhooks`.
    #[serde(default)]
    pub scheme: SigningScheme,
    /// A Secret key you manage holding the signing secret. Without it the controller generates
    /// one in the Secret `<endpoint>-signing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeySelector>,
    /// How long the previous key keeps signing after a rotation. Default `24h`.
    #[serde(default = "default_rotation_grace_period")]
    #[schemars(schema_with = "super::schema::duration")]
    pub rotation_grace_period: String,
}

impl Default for SigningSpec {
    fn default() -> Self {
        Self {
            scheme: SigningScheme::default(),
            secret_ref: None,
            rotation_grace_period: default_rotation_grace_period(),
        }
    }
}

fn default_rotation_grace_period() -> String {
    "24h".to_string()
}

/// The signature scheme.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SigningScheme {
    /// `X-Webhook-Timestamp` + `X-Webhook-Signature: sha256=<hex>` over `<timestamp>.<body>`.
    #[default]
    #[serde(rename = "pitchey")]
    Pitchey,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>` (standardwebhooks.com).
    #[serde(rename = "standard-webhooks")]
    StandardWebhooks,
    /// No signature headers, for third-party APIs that authenticate us otherwise (a token in
    /// `headersFrom`) and do not verify webhooks.
    #[serde(rename = "none")]
    None,
}

/// What the controller and dispatcher report about an endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpointStatus {
    /// The generation the controller last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Suspended` (controller); `Healthy`, `CircuitOpen` (dispatcher).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Where the signing key lives (never the key itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<SigningStatus>,
    /// The ConfigMap holding the effective delivery policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_config_map: Option<String>,
    /// Delivery statistics, written by the dispatcher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryStats>,
    /// Circuit breaker state, written by the dispatcher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit: Option<CircuitStatus>,
    /// The last test delivery (annotation `webhooks.pitchey.io/test` or the test API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_test: Option<TestDeliveryStatus>,
    /// Ordered delivery (`spec.ordering`), written by the dispatcher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<OrderingStatus>,
}

/// Where an ordered endpoint's lanes stand.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderingStatus {
    /// True while a dead letter has paused the endpoint (`onDeadLetter: Pause`): nothing more is
    /// sent until it is resumed.
    pub paused: bool,
    /// Deliveries waiting behind an earlier one of their lane (or for the resume).
    pub queued: i64,
    /// The dead letter that paused the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_by: Option<PausedBy>,
}

/// The dead letter that paused an ordered endpoint, and how to resume it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PausedBy {
    /// The dead-lettered event. Resume with `kubectl annotate webhookendpoint NAME
    /// webhooks.pitchey.io/resume=EVENT_ID` (skip it) or `=retry:EVENT_ID` (send it again first).
    pub event_id: String,
    /// Why it was dead-lettered.
    pub reason: String,
    /// When the endpoint was paused.
    pub since: String,
}

/// Where the signing key lives, and its rotation state. Never key material.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SigningStatus {
    /// The Secret holding the signing key.
    pub secret_name: String,
    /// The key inside that Secret.
    pub secret_key: String,
    /// Whether the controller generated the Secret (`Generated`) or you provided it (`User`).
    pub source: String,
    /// When the key was last rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation_time: Option<String>,
    /// Until when the previous key still signs (set during a rotation's grace period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_key_expiry_time: Option<String>,
}

/// Delivery statistics of an endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryStats {
    /// Deliveries that got a 2xx.
    pub total_delivered: i64,
    /// Deliveries the endpoint's transform dropped (`spec.transform`): nothing was sent.
    #[serde(default)]
    pub total_filtered: i64,
    /// Attempts that failed (any non-2xx or transport error).
    pub total_failed: i64,
    /// Deliveries that exhausted their retries or failed without retry.
    pub total_dead_lettered: i64,
    /// Attempts after the first.
    pub total_retries: i64,
    /// Dead letters currently kept for this endpoint.
    pub dead_letter_count: i64,
    /// Of `totalDeadLettered`, how many were announced by `DeliveriesDeadLettered` Events (at
    /// most one a minute), so a restarted dispatcher announces only the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letters_reported: Option<i64>,
    /// When the last `DeliveriesDeadLettered` Event was published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letters_reported_time: Option<String>,
    /// Deliveries waiting to be sent.
    pub pending: i64,
    /// Success rate of attempts over the last hour, e.g. `99.5%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate_last_hour: Option<String>,
    /// Success rate of attempts over the last day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate_last_day: Option<String>,
    /// Error rate of attempts over the last hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate_last_hour: Option<String>,
    /// Error rate of attempts over the last day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate_last_day: Option<String>,
    /// Average response time over the last hour, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_response_ms: Option<i64>,
    /// 95th percentile response time over the last hour, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_response_ms: Option<i64>,
    /// Availability over the last day: the share of attempts the receiver answered without a
    /// server-side failure (any status below 500 except 408; a 4xx is a failed delivery from a
    /// receiver that is up), e.g. `99.9%`. Timeouts, refused connections and TLS errors count
    /// as down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime: Option<String>,
    /// 0–100; the formula is in docs/resources.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_score: Option<i32>,
    /// Requests per minute currently allowed by the adaptive rate limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_rate_per_minute: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Circuit breaker state of an endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitStatus {
    /// `Closed`, `Open` or `HalfOpen`.
    pub state: CircuitState,
    /// Since when the circuit is in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Failures in a row.
    pub consecutive_failures: i64,
}

/// Circuit breaker states.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CircuitState {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

/// The result of the last test delivery.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestDeliveryStatus {
    /// The nonce of the test (the annotation's value).
    pub nonce: String,
    /// When the test was sent.
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
