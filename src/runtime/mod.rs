//! Process plumbing shared by the controller and the dispatcher: logging, the health and metrics
//! HTTP server, and shutdown signals.
pub mod health;
pub mod kube;
pub mod lease;
pub mod logging;
pub mod shutdown;
