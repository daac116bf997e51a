//! What the dashboard writes to the security log: logins (and failed ones), logouts, and every
//! action a user takes.
use super::Dashboard;

/// One security-log entry from the dashboard.
pub struct Entry<'a> {
    pub kind: &'static str,
    pub namespace: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    pub source: Option<String>,
    pub user: Option<&'a str>,
    pub detail: String,
}

impl Dashboard {
    pub fn audit(&self, entry: Entry<'_>) {
        tracing::info!(
            target: "audit",
            kind = entry.kind,
            namespace = entry.namespace,
            endpoint = entry.endpoint,
            source = entry.source.as_deref(),
            user = entry.user,
            "{}",
            entry.detail
        );
    }
}
