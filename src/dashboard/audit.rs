//! What the dashboard writes to the security log: logins, logouts, and every action a user takes
//! (failed logins are recorded with every other 401 by the API's middleware).
use super::Dashboard;
use crate::security::{SecurityEvent, SecurityKind};

/// One security-log entry from the dashboard.
pub struct Entry<'a> {
    pub kind: SecurityKind,
    pub namespace: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    pub source: Option<String>,
    pub user: Option<&'a str>,
    pub detail: String,
}

impl Dashboard {
    pub fn audit(&self, entry: Entry<'_>) {
        self.shared.security.record(SecurityEvent {
            kind: entry.kind,
            namespace: entry.namespace.map(str::to_owned),
            endpoint: entry.endpoint.map(str::to_owned),
            source: entry.source,
            user: entry.user.map(str::to_owned),
            address: None,
            detail: entry.detail,
        });
    }
}
