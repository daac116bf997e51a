//! OpenTelemetry: a producer's `traceparent` at ingest (or on a WebhookEvent) reaches the delivery
//! request, and with export on, the dispatcher's spans (the ingest request, each delivery) are
//! sent over OTLP/HTTP in the producer's trace. The collector is a stand-in on loopback that
//! decodes what the exporter sends.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::json;

use crate::dispatcher::Setup;
use crate::receiver::{Behavior, Receiver};
use crate::support::wait_for;

const T: Duration = Duration::from_secs(60);
const PRODUCER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PRODUCER_SPAN: &str = "00f067aa0ba902b7";

/// A span as the collector received it.
#[derive(Clone, Debug)]
struct Collected {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

/// An OTLP/HTTP traces endpoint on loopback that keeps every span.
async fn collector() -> (String, Arc<Mutex<Vec<Collected>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let kept = kept.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| r.attributes.iter())
                        .find(|a| a.key == "service.name")
                        .and_then(|a| a.value.as_ref())
                        .map(|v| format!("{:?}", v.value))
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            kept.lock().unwrap().push(Collected {
                                service: service.clone(),
                                name: span.name,
                                trace_id: hex::encode(span.trace_id),
                                span_id: hex::encode(span.span_id),
                                parent_span_id: hex::encode(span.parent_span_id),
                            });
                        }
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, spans)
}

#[tokio::test]
async fn a_delivery_joins_the_producers_trace() {
    let (otlp, spans) = collector().await;
    let mut setup = Setup::new_without_dispatcher("tracing").await;
    // The batch processor exports every 5 s (the SDK's default).
    let api = setup.start_dispatcher(&["--otlp-endpoint", &otlp]);
    let receiver = Receiver::start(Behavior::Ok).await;
    setup.endpoint("crm", &receiver, json!({})).await;

    let traceparent = format!("00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01");
    let http = webhook_operator::runtime::tls::http_client();
    let response = http
        .post(format!(
            "http://{api}/v1/namespaces/{}/events",
            setup.ns.name
        ))
        .bearer_auth("test-admin-token")
        .header("traceparent", &traceparent)
        .header("content-type", "application/json")
        .body(json!({"type": "user.created", "data": {"user": {"id": 7}}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{:?}", response.text().await);

    let delivered = wait_for("the delivery", T, || async {
        receiver
            .received()
            .into_iter()
            .find(|r| r.event_type == "user.created")
    })
    .await;
    let carried = delivered
        .traceparent
        .expect("the request carries a traceparent");
    let fields: Vec<&str> = carried.split('-').collect();
    assert_eq!(
        fields[1], PRODUCER_TRACE,
        "the receiver is in the producer's trace: {carried}"
    );
    assert_ne!(
        fields[2], PRODUCER_SPAN,
        "its parent is the dispatcher's delivery span"
    );

    // The ingest request's span is the producer's child; the delivery span the ingest span's
    // child, and the parent the receiver was given.
    let collected = wait_for("the spans exported", T, || async {
        let spans = spans.lock().unwrap().clone();
        let ingest = spans
            .iter()
            .find(|s| s.name == "api" && s.trace_id == PRODUCER_TRACE)?
            .clone();
        let delivery = spans
            .iter()
            .find(|s| s.name == "delivery" && s.trace_id == PRODUCER_TRACE)?
            .clone();
        Some((ingest, delivery))
    })
    .await;
    let (ingest, delivery) = collected;
    assert_eq!(ingest.parent_span_id, PRODUCER_SPAN, "{ingest:?}");
    assert_eq!(delivery.parent_span_id, ingest.span_id, "{delivery:?}");
    assert_eq!(
        delivery.span_id, fields[2],
        "the receiver's parent is the delivery span"
    );
    assert!(
        delivery.service.contains("webhook-operator-dispatcher"),
        "{delivery:?}"
    );
}

#[tokio::test]
async fn a_webhook_events_annotation_is_carried_without_export() {
    let setup = Setup::new("traceannot").await;
    let receiver = Receiver::start(Behavior::Ok).await;
    setup.endpoint("crm", &receiver, json!({})).await;
    let traceparent = format!("00-{PRODUCER_TRACE}-{PRODUCER_SPAN}-01");
    let event: webhook_operator::api::WebhookEvent = serde_json::from_value(json!({
        "apiVersion": "webhooks.pitchey.io/v1alpha1", "kind": "WebhookEvent",
        "metadata": {"name": "traced", "annotations": {"webhooks.pitchey.io/traceparent": traceparent}},
        "spec": {"type": "pitch.created", "data": {}}
    }))
    .unwrap();
    setup
        .ns
        .api::<webhook_operator::api::WebhookEvent>()
        .create(&Default::default(), &event)
        .await
        .unwrap();
    let delivered = wait_for("the delivery", T, || async {
        receiver
            .received()
            .into_iter()
            .find(|r| r.event_type == "pitch.created")
    })
    .await;
    // Export is off here: the producer's context passes through unchanged.
    assert_eq!(delivered.traceparent.as_deref(), Some(traceparent.as_str()));
}
