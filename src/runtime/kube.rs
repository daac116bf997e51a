//! Small helpers both processes use with the Kubernetes API.
use kube::api::Api;
use kube::Client;

/// An Api for all namespaces, or for one when the process is namespace-scoped.
pub fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// This replica's identity when none is configured: host name and process id.
pub fn default_identity(fallback: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| fallback.to_string());
    format!("{host}-{}", std::process::id())
}
