//! Client wiring: the kubeconfig read as kubectl reads it, and requests to the aggregated query
//! API (`/apis/query.webhooks.pitchey.io/v1alpha1/...`) answered as the types of `crate::query`.
use anyhow::Context as _;
use futures::{Stream, StreamExt};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::WatchEvent;
use kube::{Client, Config};
use serde::de::DeserializeOwned;

use super::cli::KubeArgs;
use super::error::query_error;
use crate::query::{ObjectList, Resource, WebhookDelivery, GROUP, VERSION};

/// The largest page the query API serves.
pub const MAX_PAGE: usize = 500;
/// How long one watch request lasts before it is made again (the server's longest is an hour).
const WATCH_SECONDS: u64 = 30 * 60;

/// A client for the kubeconfig's cluster and user, and its default namespace: the context's,
/// else `default` (in a Pod: the ServiceAccount's namespace).
pub async fn connect(args: &KubeArgs) -> anyhow::Result<(Client, String)> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let context = args
        .context
        .as_deref()
        .map(|c| format!(" (context {c})"))
        .unwrap_or_default();
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .with_context(|| format!("loading the kubeconfig {}{context}", path.display()))?
        }
        None if args.context.is_some() => {
            Config::from_kubeconfig(&options).await.with_context(|| {
                format!("loading the kubeconfig ($KUBECONFIG or ~/.kube/config){context}")
            })?
        }
        None => Config::infer().await.context(
            "no kubeconfig ($KUBECONFIG, ~/.kube/config) and not in a Pod: pass --kubeconfig PATH",
        )?,
    };
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config).context("building the Kubernetes client")?;
    Ok((client, namespace))
}

/// A path of the query API: one namespace's or every namespace's `resource`, or one object.
pub fn path(namespace: Option<&str>, resource: Resource, name: Option<&str>) -> String {
    let mut path = format!("/apis/{GROUP}/{VERSION}/");
    if let Some(namespace) = namespace {
        path.push_str(&format!("namespaces/{namespace}/"));
    }
    path.push_str(resource.plural());
    if let Some(name) = name {
        path.push('/');
        path.push_str(name);
    }
    path
}

/// The query string of `pairs`, empty values left out.
fn query_string(pairs: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        query.append_pair(key, value);
    }
    let query = query.finish();
    if query.is_empty() {
        query
    } else {
        format!("?{query}")
    }
}

fn get_request(uri: String) -> anyhow::Result<http::Request<Vec<u8>>> {
    http::Request::get(&uri)
        .body(Vec::new())
        .with_context(|| format!("building the request GET {uri}"))
}

/// Objects of a list, collected over pages, and the list's resourceVersion (where a watch of
/// deliveries starts).
#[derive(Debug)]
pub struct Collected<T> {
    pub items: Vec<T>,
    pub resource_version: String,
}

/// Reads of the query API with the plugin's client.
pub struct Query<'a>(pub &'a Client);

impl Query<'_> {
    /// One object.
    pub async fn get<T: DeserializeOwned>(
        &self,
        namespace: &str,
        resource: Resource,
        name: &str,
    ) -> anyhow::Result<T> {
        let request = get_request(path(Some(namespace), resource, Some(name)))?;
        self.0
            .request(request)
            .await
            .map_err(|e| query_error(e, resource, Some(namespace), Some(name)))
    }

    /// One page.
    pub async fn list<T: DeserializeOwned>(
        &self,
        namespace: Option<&str>,
        resource: Resource,
        field_selector: &str,
        limit: usize,
        continue_: Option<&str>,
    ) -> anyhow::Result<ObjectList<T>> {
        let limit = limit.clamp(1, MAX_PAGE).to_string();
        let uri = format!(
            "{}{}",
            path(namespace, resource, None),
            query_string(&[
                ("fieldSelector", field_selector),
                ("limit", &limit),
                ("continue", continue_.unwrap_or_default()),
            ])
        );
        self.0
            .request(get_request(uri)?)
            .await
            .map_err(|e| query_error(e, resource, namespace, None))
    }

    /// Up to `max` objects, following `metadata.continue` with pages of `page` objects. A page a
    /// selector filtered may hold fewer objects than asked for while more follow.
    pub async fn collect<T: DeserializeOwned>(
        &self,
        namespace: Option<&str>,
        resource: Resource,
        field_selector: &str,
        max: usize,
        page: usize,
    ) -> anyhow::Result<Collected<T>> {
        let mut items = Vec::new();
        let mut next: Option<String> = None;
        let mut resource_version = None;
        loop {
            let list: ObjectList<T> = self
                .list(namespace, resource, field_selector, page, next.as_deref())
                .await?;
            resource_version = resource_version.or(list.metadata.resource_version);
            items.extend(list.items);
            next = list.metadata.continue_.filter(|c| !c.is_empty());
            if items.len() >= max || next.is_none() {
                break;
            }
        }
        items.truncate(max);
        Ok(Collected {
            items,
            resource_version: resource_version.unwrap_or_default(),
        })
    }

    /// Every delivery attempt recorded after `resource_version` that matches `field_selector`,
    /// as they are recorded. The stream ends when the server ends the watch (after half an hour);
    /// watch again from the last attempt's resourceVersion.
    pub async fn watch_deliveries(
        &self,
        namespace: &str,
        field_selector: &str,
        resource_version: &str,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<WatchEvent<WebhookDelivery>>> + use<>>
    {
        let resource = Resource::Deliveries;
        let timeout = WATCH_SECONDS.to_string();
        let uri = format!(
            "{}{}",
            path(Some(namespace), resource, None),
            query_string(&[
                ("watch", "true"),
                ("resourceVersion", resource_version),
                ("fieldSelector", field_selector),
                ("timeoutSeconds", &timeout),
            ])
        );
        let namespace = namespace.to_owned();
        let events = self
            .0
            .request_events::<WebhookDelivery>(get_request(uri)?)
            .await
            .map_err(|e| query_error(e, resource, Some(&namespace), None))?;
        Ok(events
            .map(move |event| event.map_err(|e| query_error(e, resource, Some(&namespace), None)))
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries_are_the_api_s() {
        assert_eq!(
            path(Some("crm"), Resource::Deliveries, None),
            "/apis/query.webhooks.pitchey.io/v1alpha1/namespaces/crm/webhookdeliveries"
        );
        assert_eq!(
            path(None, Resource::Analytics, None),
            "/apis/query.webhooks.pitchey.io/v1alpha1/webhookanalytics"
        );
        assert_eq!(
            path(Some("crm"), Resource::DeadLetters, Some("crm.7")),
            "/apis/query.webhooks.pitchey.io/v1alpha1/namespaces/crm/webhookdeadletters/crm.7"
        );
        assert_eq!(
            query_string(&[
                ("fieldSelector", "endpoint=crm,outcome=Failed"),
                ("continue", "")
            ]),
            "?fieldSelector=endpoint%3Dcrm%2Coutcome%3DFailed"
        );
        assert_eq!(query_string(&[("continue", "")]), "");
    }
}
