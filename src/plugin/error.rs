//! Errors that say what to fix: a missing endpoint names the command that lists them, a missing
//! CRD or query API names the object to check, a refusal quotes the API server. Usage errors
//! (exit code 2) are their own type; everything else exits 1.
use kube::core::Status;

use crate::query::{Resource, GROUP, VERSION};

/// A bad value on the command line that clap could not catch (`--data` that is not a JSON
/// object, a replay range the API would refuse). Exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The APIService that registers the query API.
pub fn api_service() -> String {
    format!("{VERSION}.{GROUP}")
}

/// What a request was about, for messages: a kind, in a namespace or across all.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The resource's kind, e.g. `WebhookEndpoint`.
    pub kind: &'a str,
    pub namespace: Option<&'a str>,
}

impl<'a> Target<'a> {
    pub fn new(kind: &'a str, namespace: &'a str) -> Self {
        Self {
            kind,
            namespace: Some(namespace),
        }
    }
}

/// The name a Status names, if any (a missing object, not a missing resource or path).
fn named(status: &Status) -> Option<&str> {
    status
        .details
        .as_ref()
        .map(|d| d.name.as_str())
        .filter(|n| !n.is_empty())
}

fn in_namespace(namespace: Option<&str>) -> String {
    namespace
        .map(|ns| format!(" in namespace \"{ns}\""))
        .unwrap_or_default()
}

/// Whatever went wrong below the API: no answer, or no credentials.
fn transport(action: &str, error: kube::Error) -> anyhow::Error {
    match error {
        kube::Error::Auth(error) => anyhow::anyhow!(
            "{action}: authenticating to the Kubernetes API server failed: {error}; check the \
             kubeconfig's user (kubectl auth whoami)"
        ),
        other => anyhow::anyhow!(
            "{action}: cannot reach the Kubernetes API server: {other}; check --context and \
             --kubeconfig (kubectl cluster-info)"
        ),
    }
}

/// An error of a request on the CRDs (`webhooks.pitchey.io`).
pub fn api_error(error: kube::Error, action: &str, target: Target<'_>) -> anyhow::Error {
    let kube::Error::Api(status) = error else {
        return transport(action, error);
    };
    let kind = target.kind;
    let lower = kind.to_lowercase();
    match status.code {
        404 => match named(&status) {
            Some(name) => {
                let namespace = target.namespace.unwrap_or_default();
                let hint = if kind == "WebhookEndpoint" {
                    format!(
                        ": list the endpoints with `kubectl webhooks status -n {namespace}` (or -A \
                         for every namespace)"
                    )
                } else {
                    String::new()
                };
                anyhow::anyhow!(
                    "{lower} \"{name}\" not found{}{hint}",
                    in_namespace(target.namespace)
                )
            }
            None => anyhow::anyhow!(
                "{action}: the API server does not serve {kind} ({}): is webhook-operator's CRD \
                 installed? kubectl get crd {lower}s.webhooks.pitchey.io (install the chart, or \
                 kubectl apply -f crds/)",
                status.message
            ),
        },
        403 => anyhow::anyhow!("{action} was forbidden: {}", status.message),
        422 | 400 => anyhow::anyhow!("{action} was refused: {}", status.message),
        _ => anyhow::anyhow!(
            "{action} failed: {} (HTTP {}{})",
            status.message,
            status.code,
            if status.reason.is_empty() {
                String::new()
            } else {
                format!(", {}", status.reason)
            }
        ),
    }
}

/// An error of a request to the query API (`query.webhooks.pitchey.io`).
pub fn query_error(
    error: kube::Error,
    resource: Resource,
    namespace: Option<&str>,
    name: Option<&str>,
) -> anyhow::Error {
    let plural = resource.plural();
    let action = match name {
        Some(name) => format!("reading {} \"{name}\"", resource.singular()),
        None => format!("listing {plural}"),
    };
    let kube::Error::Api(status) = error else {
        return transport(&action, error);
    };
    let unavailable = |said: &str| {
        anyhow::anyhow!(
            "the query API is not available ({said}): is the APIService {service} Available? \
             kubectl get apiservice {service} (its conditions name the problem: the dispatcher \
             not running or not reachable, or its serving certificate)",
            service = api_service()
        )
    };
    match status.code {
        404 if named(&status).is_some() => {
            let hint = if resource == Resource::Analytics {
                format!(
                    ": no WebhookEndpoint of that name here (kubectl webhooks status -n {})",
                    namespace.unwrap_or_default()
                )
            } else {
                String::new()
            };
            anyhow::anyhow!(
                "{} \"{}\" not found{}{hint}",
                resource.singular(),
                named(&status).unwrap_or_default(),
                in_namespace(namespace)
            )
        }
        404 => unavailable(&format!(
            "the API server does not serve {plural}.{GROUP}: {}",
            status.message
        )),
        503 if !status.message.starts_with("the delivery store") => {
            unavailable(&format!("HTTP 503: {}", status.message))
        }
        403 => anyhow::anyhow!(
            "{}: reading delivery history needs get, list and watch on {plural} in the API \
             group {GROUP} (the chart's ClusterRole for it is aggregated to view, edit and admin)",
            status.message
        ),
        400 => anyhow::anyhow!("{action} was refused: {}", status.message),
        code => anyhow::anyhow!("{action} failed: {} (HTTP {code})", status.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, message: &str, name: Option<&str>) -> kube::Error {
        let mut status = serde_json::json!({"status": "Failure", "message": message, "code": code});
        if let Some(name) = name {
            status["details"] = serde_json::json!({ "name": name });
        }
        kube::Error::Api(serde_json::from_value::<Status>(status).unwrap().boxed())
    }

    #[test]
    fn a_missing_endpoint_names_the_command_that_lists_them() {
        let e = api_error(
            status(404, "webhookendpoints \"crn\" not found", Some("crn")),
            "reading webhookendpoint crn",
            Target::new("WebhookEndpoint", "crm"),
        );
        assert_eq!(
            e.to_string(),
            "webhookendpoint \"crn\" not found in namespace \"crm\": list the endpoints with \
             `kubectl webhooks status -n crm` (or -A for every namespace)"
        );
    }

    #[test]
    fn a_missing_crd_says_to_install_it() {
        let e = api_error(
            status(
                404,
                "the server could not find the requested resource",
                None,
            ),
            "listing webhookendpoints",
            Target::new("WebhookEndpoint", "crm"),
        );
        let text = e.to_string();
        assert!(
            text.contains("kubectl get crd webhookendpoints.webhooks.pitchey.io"),
            "{text}"
        );
    }

    #[test]
    fn an_unavailable_query_api_names_the_apiservice() {
        for (code, message) in [
            (503, "the server is currently unable to handle the request"),
            (404, "the server could not find the requested resource"),
        ] {
            let e = query_error(
                status(code, message, None),
                Resource::Deliveries,
                Some("crm"),
                None,
            );
            let text = e.to_string();
            assert!(
                text.contains("is the APIService v1alpha1.query.webhooks.pitchey.io Available?")
                    && text.contains("kubectl get apiservice v1alpha1.query.webhooks.pitchey.io")
                    && text.contains(message),
                "{text}"
            );
        }
        // The dispatcher's own 503 (its store) is not the aggregation layer's.
        let e = query_error(
            status(503, "the delivery store: disk I/O error", None),
            Resource::Deliveries,
            Some("crm"),
            None,
        );
        assert!(e.to_string().contains("disk I/O error"), "{e}");
        assert!(!e.to_string().contains("APIService"), "{e}");
    }

    #[test]
    fn a_refusal_says_which_rights_are_missing() {
        let e = query_error(
            status(403, "webhookdeliveries.query.webhooks.pitchey.io is forbidden: User \"x\" cannot list resource", None),
            Resource::Deliveries,
            Some("crm"),
            None,
        );
        let text = e.to_string();
        assert!(text.starts_with("webhookdeliveries.query"), "{text}");
        assert!(
            text.contains("get, list and watch on webhookdeliveries"),
            "{text}"
        );
        let e = query_error(
            status(404, "webhookanalytics \"crn\" not found", Some("crn")),
            Resource::Analytics,
            Some("crm"),
            Some("crn"),
        );
        assert!(
            e.to_string().starts_with(
                "webhookanalytics \"crn\" not found in namespace \"crm\": no WebhookEndpoint"
            ),
            "{e}"
        );
    }
}
