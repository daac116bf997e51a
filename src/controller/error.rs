//! Errors of the reconcilers. Invalid specs are not errors: they become conditions.
use std::time::Duration;

/// A failure while reconciling; retried with per-object exponential backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {kind} {namespace}/{name}: {source}")]
    Kube {
        action: &'static str,
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{kind} {name} has no namespace; webhook resources are namespaced")]
    MissingNamespace { kind: &'static str, name: String },
}

impl Error {
    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::MissingNamespace { .. } => "missing_namespace",
        }
    }
}

/// Builds a [`Error::Kube`] with the object it concerned.
pub fn kube_error(
    action: &'static str,
    kind: &'static str,
    namespace: &str,
    name: &str,
) -> impl FnOnce(kube::Error) -> Error {
    let (namespace, name) = (namespace.to_string(), name.to_string());
    move |source| Error::Kube {
        action,
        kind,
        namespace,
        name,
        source,
    }
}

/// Per-object exponential backoff for transient errors: 1 s, 2 s, 4 s … capped at 5 minutes.
pub fn backoff(consecutive_failures: u32) -> Duration {
    let exponent = consecutive_failures.min(9);
    Duration::from_secs((1u64 << exponent).min(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(100), Duration::from_secs(300));
    }
}
