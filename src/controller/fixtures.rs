//! Test support: a [`Context`] whose Kubernetes client talks to a scripted API server in memory
//! (tower-test, as kube-rs/controller-rs does), so a reconcile's exact requests can be asserted
//! without a control plane. The end-to-end suite runs the same code against a real one.
use std::sync::Arc;

use http::{Request, Response};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::Client;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio::task::JoinHandle;
use tower_test::mock;

use super::context::Context;
use super::metrics::Metrics;
use crate::api::WebhookEndpoint;

/// One request the reconcile made, as the API server saw it.
#[derive(Debug)]
pub struct Seen {
    pub method: http::Method,
    /// Path and query.
    pub uri: String,
    pub body: Value,
}

/// How the scripted API server answers one request (always with status 200).
pub enum Answer {
    /// The request's own body (what a create returns).
    Echo,
    /// This object.
    Json(Value),
}

/// The API server's side: answers each request in turn as scripted, and returns every request
/// seen once the script is done. A request beyond the script is never answered.
pub fn api_server(
    mut handle: mock::Handle<Request<Body>, Response<Body>>,
    answers: Vec<Answer>,
) -> JoinHandle<Vec<Seen>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        for answer in answers {
            let Some((request, respond)) = handle.next_request().await else {
                break;
            };
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let answer = match answer {
                Answer::Echo => bytes.to_vec(),
                Answer::Json(value) => serde_json::to_vec(&value).unwrap_or_default(),
            };
            seen.push(Seen {
                method: parts.method,
                uri: parts.uri.to_string(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            });
            let response = Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Body::from(answer))
                .unwrap_or_else(|_| Response::new(Body::empty()));
            respond.send_response(response);
        }
        seen
    })
}

/// A controller context on the mocked client, with an empty endpoint cache.
pub fn context() -> (Arc<Context>, mock::Handle<Request<Body>, Response<Body>>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "webhook-operator-controller".into(),
            instance: None,
        },
    );
    let metrics = Metrics::register(&mut Registry::default());
    let (endpoints, _writer) = reflector::store::<WebhookEndpoint>();
    let ctx = Context::new(client, recorder, metrics, false, endpoints);
    (Arc::new(ctx), handle)
}
