//! End-to-end tests against a real kube-apiserver + etcd + kube-controller-manager on loopback
//! (`scripts/control-plane.sh`), with the operator's processes started as subprocesses.
//! Each test works in a namespace of its own.
mod adaptive;
#[path = "../common/cel_cases.rs"]
mod cel_cases;
mod controller;
mod dashboard;
mod dispatcher;
mod ingest;
mod kubectl_conventions;
mod ordering;
mod plugin;
mod query_api;
mod receiver;
mod receivers;
mod scaleout;
mod security;
mod server_validation;
mod shutdown;
mod status_budget;
mod support;
mod templates;
mod third_party;
mod tracing;
mod transforms;
