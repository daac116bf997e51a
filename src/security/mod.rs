//! The security log's vocabulary: what is recorded (refused destinations, authentication
//! failures, logins and user actions) and the alerts of suspicious activity ([`detect`]). Pure
//! types; the dispatcher's `security_log` writes them to the store, raises Events and counts them.
use serde::{Deserialize, Serialize};

pub mod detect;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityKind {
    /// The egress policy refused an endpoint's destination (`address`: the resolved IP).
    DestinationRefused,
    /// 401: no bearer token, or one the API server rejected (ingest API or dashboard login).
    AuthenticationFailed,
    /// 403: authenticated, but RBAC said no.
    AccessDenied,
    SecretRotated,
    ReplayCreated,
    TestDelivery,
    EndpointSuspended,
    EndpointResumed,
    DashboardLogin,
    DashboardLogout,
    /// Alert: a burst of authentication failures from one source.
    AuthFailureBurst,
    /// Alert: repeated refused destinations for one endpoint.
    RepeatedRefusals,
    /// Alert: an endpoint that delivered fine now resolves to a refused range.
    DnsRebinding,
}

impl SecurityKind {
    pub const ALL: [SecurityKind; 13] = [
        SecurityKind::DestinationRefused,
        SecurityKind::AuthenticationFailed,
        SecurityKind::AccessDenied,
        SecurityKind::SecretRotated,
        SecurityKind::ReplayCreated,
        SecurityKind::TestDelivery,
        SecurityKind::EndpointSuspended,
        SecurityKind::EndpointResumed,
        SecurityKind::DashboardLogin,
        SecurityKind::DashboardLogout,
        SecurityKind::AuthFailureBurst,
        SecurityKind::RepeatedRefusals,
        SecurityKind::DnsRebinding,
    ];

    /// The stored and displayed name (also the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityKind::DestinationRefused => "destination_refused",
            SecurityKind::AuthenticationFailed => "authentication_failed",
            SecurityKind::AccessDenied => "access_denied",
            SecurityKind::SecretRotated => "secret_rotated",
            SecurityKind::ReplayCreated => "replay_created",
            SecurityKind::TestDelivery => "test_delivery",
            SecurityKind::EndpointSuspended => "endpoint_suspended",
            SecurityKind::EndpointResumed => "endpoint_resumed",
            SecurityKind::DashboardLogin => "dashboard_login",
            SecurityKind::DashboardLogout => "dashboard_logout",
            SecurityKind::AuthFailureBurst => "auth_failure_burst",
            SecurityKind::RepeatedRefusals => "repeated_refusals",
            SecurityKind::DnsRebinding => "dns_rebinding",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// Whether this is an alert of suspicious activity (raised as a Warning Event too).
    pub fn is_alert(self) -> bool {
        matches!(
            self,
            SecurityKind::AuthFailureBurst
                | SecurityKind::RepeatedRefusals
                | SecurityKind::DnsRebinding
        )
    }

    /// The Kubernetes Event reason of an alert (`AuthFailureBurst`, …).
    pub fn reason(self) -> &'static str {
        match self {
            SecurityKind::AuthFailureBurst => "AuthFailureBurst",
            SecurityKind::RepeatedRefusals => "RepeatedRefusals",
            SecurityKind::DnsRebinding => "DnsRebinding",
            _ => "SecurityEvent",
        }
    }
}

/// One entry of the security log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SecurityEvent {
    pub kind: SecurityKind,
    /// `None`: not attributable to one namespace (e.g. a failed dashboard login).
    pub namespace: Option<String>,
    pub endpoint: Option<String>,
    /// The client's IP address, when known.
    pub source: Option<String>,
    /// The Kubernetes user, when known.
    pub user: Option<String>,
    /// The resolved destination address, for refused destinations and DNS rebinding.
    pub address: Option<String>,
    /// What happened, in a sentence.
    pub detail: String,
}

impl SecurityEvent {
    /// An event of `kind` with `detail` and nothing else set.
    pub fn new(kind: SecurityKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: None,
            endpoint: None,
            source: None,
            user: None,
            address: None,
            detail: detail.into(),
        }
    }

    pub fn endpoint(mut self, namespace: &str, name: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self.endpoint = Some(name.to_owned());
        self
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self
    }

    pub fn source(mut self, source: Option<String>) -> Self {
        self.source = source;
        self
    }

    pub fn user(mut self, user: Option<&str>) -> Self {
        self.user = user.map(str::to_owned);
        self
    }

    pub fn address(mut self, address: Option<String>) -> Self {
        self.address = address;
        self
    }
}

/// A stored entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SecurityRecord {
    pub id: i64,
    pub at: jiff::Timestamp,
    #[serde(flatten)]
    pub event: SecurityEvent,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for kind in SecurityKind::ALL {
            assert_eq!(SecurityKind::parse(kind.as_str()), Some(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::String(kind.as_str().into())
            );
        }
        assert_eq!(SecurityKind::parse("nope"), None);
        let alerts: Vec<_> = SecurityKind::ALL
            .into_iter()
            .filter(|k| k.is_alert())
            .collect();
        assert_eq!(alerts.len(), 3);
    }
}
