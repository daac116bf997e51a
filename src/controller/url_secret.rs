//! `spec.urlFrom`: the controller reads the Secret it names at apply time, so a missing key or a
//! value that is not a usable URL shows as `Ready=False` (`SecretNotFound`, `InvalidSpec`) before
//! any event is published, as for `signing.secretRef`. The dispatcher checks it again when it
//! prepares a delivery (the Secret may change in between).
use crate::api::conditions::{DesiredCondition, Reason, READY};
use crate::api::references::SecretKeySelector;
use crate::api::validation::url_problems;

/// The `Ready=False` condition for a `urlFrom` whose Secret key holds `value` (`None`: the Secret
/// or key is missing or empty); `None` when the URL is usable. Pure.
pub fn url_from_problem(
    namespace: &str,
    reference: &SecretKeySelector,
    value: Option<&[u8]>,
    allow_plain_http: bool,
) -> Option<DesiredCondition> {
    let where_ = format!(
        "Secret {namespace}/{} key `{}`",
        reference.name, reference.key
    );
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Some(DesiredCondition::new(
            READY,
            false,
            Reason::SecretNotFound,
            format!("spec.urlFrom.secretKeyRef: {where_} not found or empty; create it with the receiver's URL"),
        ));
    };
    let url = String::from_utf8_lossy(value);
    let problem = url_problems(url.trim(), allow_plain_http)?;
    Some(DesiredCondition::new(
        READY,
        false,
        Reason::InvalidSpec,
        format!("spec.urlFrom: the URL in {where_} is not usable: {problem}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slack() -> SecretKeySelector {
        SecretKeySelector {
            name: "slack".into(),
            key: "url".into(),
        }
    }

    #[test]
    fn a_usable_url_is_fine_and_a_trailing_newline_is_ignored() {
        let url = b"https://hooks.slack.com/services/T0/B0/x\n";
        assert!(url_from_problem("ns", &slack(), Some(url), false).is_none());
    }

    #[test]
    fn missing_keys_and_unusable_urls_are_named() {
        let missing = url_from_problem("ns", &slack(), None, false).unwrap();
        assert_eq!(missing.reason, "SecretNotFound");
        assert!(
            missing.message.contains("Secret ns/slack key `url`"),
            "{}",
            missing.message
        );
        assert_eq!(
            url_from_problem("ns", &slack(), Some(b""), false)
                .unwrap()
                .reason,
            "SecretNotFound"
        );
        let ftp = url_from_problem("ns", &slack(), Some(b"ftp://x.example.com/"), false).unwrap();
        assert_eq!(ftp.reason, "InvalidSpec");
        assert!(ftp.message.contains("ftp"), "{}", ftp.message);
        let plain = b"http://receiver.default.svc/hook";
        assert!(url_from_problem("ns", &slack(), Some(plain), false).is_some());
        assert!(url_from_problem("ns", &slack(), Some(plain), true).is_none());
    }
}
