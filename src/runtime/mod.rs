//! Process plumbing shared by the controller and the dispatcher: logging, the health and metrics
//! HTTP server, shutdown signals, and the status apply patch.
pub mod access;
pub mod health;
pub mod http_server;
pub mod kube;
pub mod lease;
pub mod logging;
pub mod metrics_auth;
pub mod metrics_text;
pub mod otel;
pub mod process_metrics;
pub mod shutdown;
pub mod status_patch;
pub mod tls;
pub mod trace_context;
