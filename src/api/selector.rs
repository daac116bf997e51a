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

/// Parses a label selector as `kubectl -l` writes it: `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
/// `k notin (a,b)`, `k`, `!k`, joined by commas.
pub fn parse(selector: &str) -> Result<LabelSelector, String> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    let mut labels = BTreeMap::new();
    let mut expressions = Vec::new();
    for term in terms.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
        let requirement = |key: &str, operator: &str, values: Vec<String>| {
            let key = key.trim();
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(format!(
                    "invalid label selector term `{term}`: a key is missing or has spaces"
                ));
            }
            Ok(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: key.to_owned(),
                    operator: operator.to_owned(),
                    values: (!values.is_empty()).then_some(values),
                },
            )
        };
        if let Some((key, value)) = term.split_once("!=") {
            expressions.push(requirement(key, "NotIn", vec![value.trim().to_owned()])?);
        } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            let key = key.trim();
            if key.is_empty() {
                return Err(format!(
                    "invalid label selector term `{term}`: the key is missing"
                ));
            }
            labels.insert(key.to_owned(), value.trim().to_owned());
        } else if let Some((key, rest)) = set_operator(term) {
            let (operator, list) = rest;
            let inner = list
                .trim()
                .strip_prefix('(')
                .and_then(|l| l.strip_suffix(')'))
                .ok_or_else(|| {
                    format!(
                        "invalid label selector term `{term}`: write `key {operator_word} (a,b)`",
                        operator_word = if operator == "In" { "in" } else { "notin" }
                    )
                })?;
            let values = inner
                .split(',')
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .collect();
            expressions.push(requirement(key, operator, values)?);
        } else if let Some(key) = term.strip_prefix('!') {
            expressions.push(requirement(key, "DoesNotExist", Vec::new())?);
        } else {
            expressions.push(requirement(term, "Exists", Vec::new())?);
        }
    }
    Ok(LabelSelector {
        match_labels: (!labels.is_empty()).then_some(labels),
        match_expressions: (!expressions.is_empty()).then_some(expressions),
    })
}

/// `key in (…)` or `key notin (…)`: the key, the operator and what follows it.
fn set_operator(term: &str) -> Option<(&str, (&'static str, &str))> {
    for (word, operator) in [(" notin ", "NotIn"), (" in ", "In")] {
        if let Some((key, rest)) = term.split_once(word) {
            return Some((key, (operator, rest)));
        }
    }
    None
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
    fn parses_what_kubectl_sends() {
        let s = parse("team=crm, tier!=gold,env in (prod, staging),!legacy,owner").unwrap();
        assert!(matches(
            &s,
            &labels(&[("team", "crm"), ("env", "prod"), ("owner", "x")])
        ));
        assert!(!matches(
            &s,
            &labels(&[("team", "crm"), ("env", "dev"), ("owner", "x")])
        ));
        assert!(!matches(
            &s,
            &labels(&[
                ("team", "crm"),
                ("env", "prod"),
                ("owner", "x"),
                ("legacy", "1")
            ])
        ));
        assert!(!matches(
            &s,
            &labels(&[
                ("team", "crm"),
                ("tier", "gold"),
                ("env", "prod"),
                ("owner", "x")
            ])
        ));
        let notin = parse("env notin (prod)").unwrap();
        assert!(matches(&notin, &labels(&[("env", "dev")])));
        assert!(matches(&parse("").unwrap(), &labels(&[])));
        assert!(parse("env in prod").is_err());
        assert!(parse("=x").is_err());
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
