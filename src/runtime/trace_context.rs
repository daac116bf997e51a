//! The W3C trace context (`traceparent`) an event is published in, and the one its delivery
//! requests carry, so a receiver joins the producer's trace. With OpenTelemetry export on
//! (`runtime::otel`), the dispatcher's own spans sit in between: the producer's span is the parent
//! of the ingest span, which is the parent of each delivery span, whose context the request
//! carries. With export off, the producer's `traceparent` is passed through unchanged.
use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (and the key of the stored context).
pub const TRACEPARENT: &str = "traceparent";

/// Whether `value` is a `traceparent` of version `00` (or a later version, read as `00`):
/// `VV-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, ids not all zero, version not `ff`.
pub fn is_valid(value: &str) -> bool {
    let parts: Vec<&str> = value.trim().split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    match parts.as_slice() {
        [version, trace, parent, flags, rest @ ..] => {
            hex(version, 2)
                && *version != "ff"
                && (*version != "00" || rest.is_empty())
                && hex(trace, 32)
                && nonzero(trace)
                && hex(parent, 16)
                && nonzero(parent)
                && hex(flags, 2)
        }
        _ => false,
    }
}

/// `value` trimmed, when it is a valid `traceparent`.
pub fn valid(value: Option<&str>) -> Option<String> {
    value.filter(|v| is_valid(v)).map(|v| v.trim().to_owned())
}

/// Makes the context in `traceparent` (when valid) the parent of `span` (a no-op without export).
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent.filter(|t| is_valid(t)) else {
        return;
    };
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.trim().to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    // Fails only when the span is disabled; then there is no trace to join.
    let _ = span.set_parent(parent);
}

/// The `traceparent` naming `span` (when exported), else `fallback` when valid.
pub fn of_span(span: &tracing::Span, fallback: Option<&str>) -> Option<String> {
    let context = span.context();
    if context.span().span_context().is_valid() {
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&context, &mut carrier);
        if let Some(value) = carrier.remove(TRACEPARENT) {
            return Some(value);
        }
    }
    valid(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_the_w3c_format() {
        assert!(is_valid(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(is_valid(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-later"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn without_export_the_producers_context_passes_through() {
        let span = tracing::Span::none();
        let producer = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        set_parent(&span, Some(producer));
        assert_eq!(of_span(&span, Some(producer)).as_deref(), Some(producer));
        assert_eq!(of_span(&span, Some("garbage")), None);
        assert_eq!(of_span(&span, None), None);
    }
}
