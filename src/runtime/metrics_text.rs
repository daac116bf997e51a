//! The `/metrics` exposition, encoded without holding more than it must.
//!
//! With per-endpoint series the text grows with the endpoints: about 3 KB each, so a scrape of a
//! dispatcher with 10,000 endpoints is ~30 MB of text. Built as one `String` that doubles as it
//! grows, such a scrape held up to 1.5× that at once, and it was the largest single allocation
//! of a loaded dispatcher (docs/benchmarks.md, issue 19, session 22). So:
//!
//! - a client that accepts gzip (Prometheus always sends `Accept-Encoding: gzip`) gets the text
//!   compressed as it is encoded, and only the compressed bytes are ever held;
//! - any other client gets the text in a buffer sized from the previous scrape, so it is
//!   allocated once instead of doubling through every power of two.
use std::fmt;
use std::io::Write as _;

use flate2::write::GzEncoder;
use flate2::Compression;
use prometheus_client::registry::Registry;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether an `Accept-Encoding` header value accepts gzip: a `gzip` (or `x-gzip`, or `*`)
/// coding whose quality is not zero (RFC 9110 §12.5.3).
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    accept_encoding.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        let named = ["gzip", "x-gzip", "*"]
            .iter()
            .any(|name| coding.eq_ignore_ascii_case(name));
        named && parts.all(|param| !is_zero_quality(param))
    })
}

/// `q=0`, `q=0.0`, `q=0.000`: the coding is refused.
fn is_zero_quality(param: &str) -> bool {
    let Some((name, value)) = param.split_once('=') else {
        return false;
    };
    name.trim().eq_ignore_ascii_case("q")
        && value
            .trim()
            .parse::<f32>()
            .is_ok_and(|quality| quality == 0.0)
}

/// Encoding the exposition failed (the registry's encoder reported an error).
#[derive(Debug, thiserror::Error)]
#[error("encoding the metrics failed: {0}")]
pub struct EncodeError(String);

impl EncodeError {
    /// The registry's lock was poisoned: a thread panicked while holding it.
    pub fn poisoned() -> Self {
        Self("the registry's lock is poisoned (a thread panicked while holding it)".into())
    }
}

/// The exposition as text, in a buffer of `capacity` bytes to start with (the previous
/// scrape's length and a margin).
pub fn encode_text(registry: &Registry, capacity: usize) -> Result<String, EncodeError> {
    let mut out = String::with_capacity(capacity);
    prometheus_client::encoding::text::encode(&mut out, registry)
        .map_err(|error| EncodeError(error.to_string()))?;
    Ok(out)
}

/// The exposition gzip-compressed, compressed as it is encoded. Fast compression: the text is
/// repetitive (the same label sets line after line), so even level 1 shrinks it ~10–20×.
pub fn encode_gzip(registry: &Registry) -> Result<Vec<u8>, EncodeError> {
    let mut out = GzipText {
        encoder: GzEncoder::new(Vec::new(), Compression::fast()),
        failed: None,
    };
    let encoded = prometheus_client::encoding::text::encode(&mut out, registry);
    if let Some(error) = out.failed {
        return Err(EncodeError(format!("compressing: {error}")));
    }
    encoded.map_err(|error| EncodeError(error.to_string()))?;
    out.encoder
        .finish()
        .map_err(|error| EncodeError(format!("compressing: {error}")))
}

/// A `fmt::Write` that compresses what is written; keeps the first I/O error for the caller.
struct GzipText {
    encoder: GzEncoder<Vec<u8>>,
    failed: Option<std::io::Error>,
}

impl fmt::Write for GzipText {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.encoder.write_all(text.as_bytes()).map_err(|error| {
            self.failed.get_or_insert(error);
            fmt::Error
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use std::io::Read as _;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct Labels {
        endpoint: String,
    }

    /// A registry with `n` endpoints' counters, like a dispatcher's per-endpoint series.
    fn registry(n: usize) -> Registry {
        let mut registry = Registry::default();
        let family = Family::<Labels, Counter>::default();
        registry.register("attempts", "Attempts", family.clone());
        for i in 0..n {
            family
                .get_or_create(&Labels {
                    endpoint: format!("ep-{i}"),
                })
                .inc_by(i as u64);
        }
        registry
    }

    #[test]
    fn gzip_is_accepted_as_clients_say_it() {
        for accepted in [
            "gzip",
            "GZIP",
            "gzip, deflate",
            "deflate, gzip;q=0.5",
            "identity, x-gzip",
            "*",
            "br;q=1.0, gzip; q=0.001",
        ] {
            assert!(accepts_gzip(accepted), "{accepted}");
        }
        for refused in [
            "",
            "identity",
            "deflate, br",
            "gzip;q=0",
            "gzip; q=0.000",
            "gzipx",
        ] {
            assert!(!accepts_gzip(refused), "{refused}");
        }
    }

    #[test]
    fn gzip_holds_the_same_text_in_far_fewer_bytes() {
        let registry = registry(2_000);
        let text = encode_text(&registry, 0).unwrap();
        assert!(text.contains("attempts_total{endpoint=\"ep-1999\"} 1999"));
        assert!(text.ends_with("# EOF\n"), "the OpenMetrics terminator");

        let compressed = encode_gzip(&registry).unwrap();
        let mut unpacked = String::new();
        flate2::read::GzDecoder::new(compressed.as_slice())
            .read_to_string(&mut unpacked)
            .unwrap();
        assert_eq!(unpacked, text);
        assert!(
            compressed.len() * 5 < text.len(),
            "{} compressed bytes for {} of text",
            compressed.len(),
            text.len()
        );
    }

    #[test]
    fn the_text_buffer_starts_at_the_hint() {
        let registry = registry(10);
        let text = encode_text(&registry, 1 << 16).unwrap();
        assert!(text.capacity() >= 1 << 16);
        assert_eq!(text, encode_text(&registry, 0).unwrap());
    }
}
