//! OpenTelemetry export: spans over OTLP/HTTP (protobuf) to `--otlp-endpoint`
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`), off when it is unset. The batch processor and its settings
//! follow the SDK's environment variables (`OTEL_BSP_SCHEDULE_DELAY`, …). The trace context
//! itself: `runtime::trace_context`.
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

/// Why export could not start.
#[derive(Debug, thiserror::Error)]
#[error("OpenTelemetry export to {endpoint}: {message}")]
pub struct OtelError {
    endpoint: String,
    message: String,
}

/// The exporter; spans still buffered are sent when it is dropped.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("webhook-operator: flushing traces: {error}");
        }
    }
}

/// The traces URL of an OTLP endpoint: `<endpoint>/v1/traces`, as the OTLP specification builds
/// it from `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub fn traces_url(endpoint: &str) -> String {
    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
}

/// Starts the exporter for `service` and gives the tracing layer that feeds it.
pub fn start<S>(
    endpoint: &str,
    service: &str,
) -> Result<
    (
        Exporter,
        tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>,
    ),
    OtelError,
>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let url = traces_url(endpoint);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(&url)
        .build()
        .map_err(|e| OtelError {
            endpoint: url.clone(),
            message: e.to_string(),
        })?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build();
    let tracer = provider.tracer("webhook-operator");
    Ok((
        Exporter { provider },
        tracing_opentelemetry::layer().with_tracer(tracer),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn traces_url_appends_the_signal_path() {
        assert_eq!(
            super::traces_url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            super::traces_url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
    }
}
