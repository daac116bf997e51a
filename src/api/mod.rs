//! CRD types of `webhooks.pitchey.io/v1alpha1`, their conditions, validation and the effective,
//! defaulted delivery policy. This layer imports nothing else of ours.
pub mod conditions;
pub mod crds;
pub mod duration;
pub mod endpoint;
pub mod event;
pub mod event_samples;
pub mod event_types;
pub mod key_path;
pub mod policy;
pub mod references;
pub mod replay;
pub mod schema;
pub mod selector;
pub mod subscription;
pub mod time;
pub mod validation;

pub use conditions::Condition;
pub use endpoint::{WebhookEndpoint, WebhookEndpointSpec, WebhookEndpointStatus};
pub use event::{WebhookEvent, WebhookEventSpec, WebhookEventStatus};
pub use replay::{WebhookReplay, WebhookReplaySpec, WebhookReplayStatus};
pub use subscription::{WebhookSubscription, WebhookSubscriptionSpec, WebhookSubscriptionStatus};

/// The API group of every resource here.
pub const GROUP: &str = "webhooks.pitchey.io";
/// Prefix of the annotations and labels this operator reads and writes.
pub const ANNOTATION_PREFIX: &str = "webhooks.pitchey.io/";
/// Annotation whose every new value rotates the endpoint's generated signing key.
pub const ROTATE_SECRET_ANNOTATION: &str = "webhooks.pitchey.io/rotate-secret";
/// Annotation whose every new value sends a `webhook.test` delivery to the endpoint.
pub const TEST_ANNOTATION: &str = "webhooks.pitchey.io/test";
/// Annotation that resumes an ordered endpoint paused by a dead letter: the event id shown in
/// `status.ordering.pausedBy.eventId` skips that dead letter; `retry:<event id>` sends it again.
pub const RESUME_ANNOTATION: &str = "webhooks.pitchey.io/resume";
/// Annotation on a WebhookEvent: the W3C `traceparent` it is published in; its deliveries carry
/// the trace on, so receivers join the producer's trace.
pub const TRACEPARENT_ANNOTATION: &str = "webhooks.pitchey.io/traceparent";
/// Label the dispatcher keeps equal to a WebhookEvent's phase, for `kubectl get -l`.
pub const PHASE_LABEL: &str = "webhooks.pitchey.io/phase";
/// Label put on every object the controller provisions.
pub const ENDPOINT_LABEL: &str = "webhooks.pitchey.io/endpoint";
