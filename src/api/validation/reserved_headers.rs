//! The one list of header names an endpoint's custom headers may not use. Validation refuses them
//! (`InvalidSpec`), the CRD's CEL rule is generated from them, and the sender
//! (`delivery::headers`) drops them, so a header is either refused up front or sent.
//!
//! Reserved are the headers the dispatcher sets itself (`Content-Type`, `User-Agent`,
//! `X-Webhook-*`, `Webhook-*`) and those that control the connection, the message framing or a
//! proxy, which a receiver would misread if an endpoint could set them.

/// Reserved names, lowercase.
pub const NAMES: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "user-agent",
    "host",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
];

/// Reserved prefixes, lowercase: signatures and delivery metadata, and proxy control.
pub const PREFIXES: &[&str] = &["x-webhook-", "webhook-", "proxy-"];

/// Whether `name` is reserved (case-insensitive, surrounding whitespace ignored).
pub fn is_reserved(name: &str) -> bool {
    let lower = name.trim().to_ascii_lowercase();
    NAMES.contains(&lower.as_str()) || PREFIXES.iter().any(|p| lower.starts_with(p))
}

/// The reserved names and prefixes for messages, e.g. `content-type, …, x-webhook-*`.
pub fn describe() -> String {
    NAMES
        .iter()
        .map(|n| n.to_string())
        .chain(PREFIXES.iter().map(|p| format!("{p}*")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A CEL condition that is true when the string expression `name` (e.g. `h` or `f.name`) is not
/// reserved; the CRD's rules wrap it in `self.all(…)`.
pub fn cel_condition(name: &str) -> String {
    let names = NAMES
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let prefixes: String = PREFIXES
        .iter()
        .map(|p| format!(" && !{name}.lowerAscii().startsWith('{p}')"))
        .collect();
    format!("!({name}.lowerAscii() in [{names}]){prefixes}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixes_are_reserved_in_any_case() {
        for name in [
            "Content-Type",
            "CONTENT-ENCODING",
            "Trailer",
            "expect",
            "Proxy-Authorization",
            "proxy-connection",
            "Proxy-Anything",
            "X-Webhook-Signature",
            "webhook-id",
            " Host ",
        ] {
            assert!(is_reserved(name), "{name}");
        }
        for name in [
            "Authorization",
            "X-Team",
            "Content-Language",
            "Webhook",
            "Xproxy-a",
        ] {
            assert!(!is_reserved(name), "{name}");
        }
    }

    #[test]
    fn the_cel_condition_names_every_name_and_prefix() {
        let cel = cel_condition("h");
        for name in NAMES {
            assert!(cel.contains(&format!("'{name}'")), "{name} missing: {cel}");
        }
        for prefix in PREFIXES {
            assert!(
                cel.contains(&format!("!h.lowerAscii().startsWith('{prefix}')")),
                "{prefix} missing: {cel}"
            );
        }
        assert!(cel.starts_with("!(h.lowerAscii() in ['content-type', "));
    }

    #[test]
    fn lists_are_lowercase_so_lookups_match() {
        for entry in NAMES.iter().chain(PREFIXES) {
            assert_eq!(*entry, entry.to_ascii_lowercase());
        }
        assert!(describe().contains("proxy-*") && describe().contains("trailer"));
    }
}
