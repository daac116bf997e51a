//! `?watch=true` on webhookdeliveries: every attempt recorded after the given resourceVersion (an
//! attempt's `seq`), as `ADDED` events, one JSON object a line. The store is polled once a second,
//! so any replica streams the attempts of every replica (PostgreSQL) and a watch costs one
//! indexed read a second. With PostgreSQL an attempt committed late with a lower `seq` than one
//! already sent is not sent (ids are handed out at insert, commits may finish out of order).
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::status::QueryError;
use crate::query::table::{self, IncludeObject};
use crate::query::WebhookDelivery;
use crate::store::{AttemptScope, Store};

/// How often the store is read for new attempts.
const POLL: Duration = Duration::from_secs(1);
/// Attempts read at once.
const BATCH: usize = 500;

/// How events are written: the object itself, or kubectl's one-row Table.
#[derive(Clone, Copy)]
pub struct Format {
    pub table: bool,
    pub include: IncludeObject,
}

/// The streaming response; it ends after `timeout`, when the client goes away, or with an
/// `ERROR` event if the store fails.
pub fn deliveries(
    store: Arc<dyn Store>,
    scope: AttemptScope,
    from: i64,
    filter: impl Fn(&WebhookDelivery) -> bool + Send + 'static,
    format: Format,
    timeout: Duration,
) -> Response {
    let (tx, mut rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let deadline = Instant::now() + timeout;
        let mut last = from;
        loop {
            let batch = match store.attempts_after(scope.clone(), last, BATCH).await {
                Ok(batch) => batch,
                Err(error) => {
                    let status = QueryError::from(error).body();
                    let _ = tx
                        .send(line(&json!({"type": "ERROR", "object": status})))
                        .await;
                    return;
                }
            };
            let full = batch.len() == BATCH;
            for entry in &batch {
                last = entry.seq;
                let object = WebhookDelivery::from_attempt(entry);
                if !filter(&object) {
                    continue;
                }
                let body = if format.table {
                    table::table(
                        std::slice::from_ref(&object),
                        format.include,
                        &entry.seq.to_string(),
                        None,
                        Timestamp::now(),
                    )
                } else {
                    json!(object)
                };
                if tx
                    .send(line(&json!({"type": "ADDED", "object": body})))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if full {
                continue;
            }
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = tx.closed() => return,
            }
        }
    });
    let stream =
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|b| b.map(Ok::<_, Infallible>)));
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

fn line(value: &serde_json::Value) -> Bytes {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}
