//! Label selector matching (`matchLabels` and `matchExpressions`), as Kubernetes defines it.
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy `selector`. An empty selector matches everything. An unknown
/// operator matches nothing (validation reports it).
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let expressions_match = selector.match_expressions.iter().flatten().all(|expr| {
        let values = expr.values.as_deref().unwrap_or_default();
        let value = labels.get(&expr.key);
        match expr.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_match && expressions_match
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(matches(&LabelSelector::default(), &labels(&[])));
    }

    #[test]
    fn match_labels_needs_every_pair() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("team", "crm"), ("tier", "gold")])),
            ..Default::default()
        };
        assert!(matches(
            &selector,
            &labels(&[("team", "crm"), ("tier", "gold"), ("x", "y")])
        ));
        assert!(!matches(&selector, &labels(&[("team", "crm")])));
    }

    #[test]
    fn match_expressions_follow_kubernetes_semantics() {
        let l = labels(&[("team", "crm")]);
        let sel = |e| LabelSelector {
            match_expressions: Some(vec![e]),
            ..Default::default()
        };
        assert!(matches(&sel(expr("team", "In", &["crm", "mail"])), &l));
        assert!(!matches(&sel(expr("team", "NotIn", &["crm"])), &l));
        assert!(matches(&sel(expr("tier", "NotIn", &["gold"])), &l));
        assert!(matches(&sel(expr("team", "Exists", &[])), &l));
        assert!(matches(&sel(expr("tier", "DoesNotExist", &[])), &l));
        assert!(!matches(&sel(expr("team", "Bogus", &[])), &l));
    }
}
