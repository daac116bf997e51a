//! The aggregated query API, `query.webhooks.pitchey.io/v1alpha1`: delivery history, dead letters
//! and analytics served through the Kubernetes API (registered by an APIService) and read by
//! `kubectl get` and the `kubectl webhooks` plugin. Pure: the objects, their names, field and
//! label selectors, continue tokens and `kubectl get`'s Table. The dispatcher serves it
//! (`dispatcher/query_api`); the plugin reads it (`plugin`).
pub mod discovery;
pub mod fields;
pub mod names;
pub mod objects;
pub mod table;

pub use objects::{
    AnalyticsBucket, AnalyticsWindow, AttemptSummary, ObjectList, WebhookAnalytics,
    WebhookDeadLetter, WebhookDelivery,
};

/// The API group.
pub const GROUP: &str = "query.webhooks.pitchey.io";
/// Its one version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every object it serves.
pub const API_VERSION: &str = "query.webhooks.pitchey.io/v1alpha1";

/// The three resources: plural (the URL segment), kind, singular and short names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Deliveries,
    DeadLetters,
    Analytics,
}

impl Resource {
    pub const ALL: [Resource; 3] = [
        Resource::Deliveries,
        Resource::DeadLetters,
        Resource::Analytics,
    ];

    pub fn plural(self) -> &'static str {
        match self {
            Resource::Deliveries => "webhookdeliveries",
            Resource::DeadLetters => "webhookdeadletters",
            Resource::Analytics => "webhookanalytics",
        }
    }

    pub fn singular(self) -> &'static str {
        match self {
            Resource::Deliveries => "webhookdelivery",
            Resource::DeadLetters => "webhookdeadletter",
            Resource::Analytics => "webhookanalytics",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Resource::Deliveries => "WebhookDelivery",
            Resource::DeadLetters => "WebhookDeadLetter",
            Resource::Analytics => "WebhookAnalytics",
        }
    }

    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Resource::Deliveries => &["whdel"],
            Resource::DeadLetters => &["whdl"],
            Resource::Analytics => &["whan"],
        }
    }

    /// Whether `?watch=true` is served: new attempts appear as they are recorded. Dead letters
    /// and analytics are read on demand.
    pub fn watchable(self) -> bool {
        matches!(self, Resource::Deliveries)
    }

    pub fn from_plural(plural: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.plural() == plural)
    }
}
