//! The dispatcher's HTTP API: ingest, dead letters, delivery history, analytics, test deliveries.
use std::sync::Arc;

use super::Shared;

/// The `/v1/...` routes.
pub fn router(_shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
}
