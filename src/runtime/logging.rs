//! Tracing setup: human-readable by default, JSON with `--log-json`; filter via `RUST_LOG`; spans
//! exported over OTLP too when an endpoint is given (`runtime::otel`).
use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use super::otel::{self, Exporter, OtelError};

/// Installs the subscriber. With `otlp_endpoint`, spans are exported as `service`; keep the
/// returned exporter alive until exit (dropping it flushes).
pub fn init(
    json: bool,
    otlp_endpoint: Option<&str>,
    service: &str,
) -> Result<Option<Exporter>, OtelError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: redirected logs (files, `kubectl logs`) stay plain text.
    let ansi = std::io::stdout().is_terminal();
    let format = if json {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_target(true)
            .boxed()
    } else {
        fmt::layer().with_target(true).with_ansi(ansi).boxed()
    };
    let (exporter, export) = match otlp_endpoint {
        Some(endpoint) => {
            let (exporter, layer) = otel::start(endpoint, service)?;
            (Some(exporter), Some(layer))
        }
        None => (None, None),
    };
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(format)
        .with(export)
        .try_init();
    Ok(exporter)
}
