//! Field selectors (`--field-selector endpoint=crm,outcome=Failed`) as Kubernetes writes them:
//! `field=value`, `field==value`, `field!=value`, joined by commas. Each resource names the fields
//! it can select on; any other is refused, as the API server refuses one.
use super::objects::{WebhookAnalytics, WebhookDeadLetter, WebhookDelivery};

/// One requirement of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub field: String,
    pub equal: bool,
    pub value: String,
}

/// A parsed field selector: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<Requirement>,
}

impl FieldSelector {
    /// Parses `selector` and checks each field is one of `supported`.
    pub fn parse(selector: &str, supported: &[&str]) -> Result<FieldSelector, String> {
        let mut requirements = Vec::new();
        for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "invalid field selector term `{term}`: write field=value, field==value or field!=value"
                ));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                return Err(format!(
                    "field label not supported: `{field}` (supported: {})",
                    supported.join(", ")
                ));
            }
            requirements.push(Requirement {
                field: field.to_owned(),
                equal,
                value: value.trim().to_owned(),
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// The value `field` must equal, when the selector says so (for narrowing a store read).
    pub fn equal_to(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.equal && r.field == field)
            .map(|r| r.value.as_str())
    }

    /// Whether an object whose fields `get` reads satisfies every requirement.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| {
            let value = get(&r.field).unwrap_or_default();
            (value == r.value) == r.equal
        })
    }
}

/// Fields of a WebhookDelivery a selector may name.
pub const DELIVERY_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "endpoint",
    "outcome",
    "next",
    "eventType",
    "eventID",
];

/// Fields of a WebhookDeadLetter a selector may name.
pub const DEAD_LETTER_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "endpoint",
    "eventType",
    "eventID",
];

/// Fields of a WebhookAnalytics a selector may name.
pub const ANALYTICS_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "endpoint"];

fn metadata(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    field: &str,
) -> Option<String> {
    match field {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        _ => None,
    }
}

impl WebhookDelivery {
    /// A selectable field's value.
    pub fn field(&self, field: &str) -> Option<String> {
        match field {
            "endpoint" => Some(self.endpoint.clone()),
            "outcome" => Some(self.outcome.as_str().to_owned()),
            "next" => self.next.map(|n| n.as_str().to_owned()),
            "eventType" => Some(self.event_type.clone()),
            "eventID" => Some(self.event_id.clone()),
            other => metadata(&self.metadata, other),
        }
    }
}

impl WebhookDeadLetter {
    /// A selectable field's value.
    pub fn field(&self, field: &str) -> Option<String> {
        match field {
            "endpoint" => Some(self.endpoint.clone()),
            "eventType" => Some(self.event_type.clone()),
            "eventID" => Some(self.event_id.clone()),
            other => metadata(&self.metadata, other),
        }
    }
}

impl WebhookAnalytics {
    /// A selectable field's value.
    pub fn field(&self, field: &str) -> Option<String> {
        match field {
            "endpoint" => Some(self.endpoint.clone()),
            other => metadata(&self.metadata, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_operators() {
        let s = FieldSelector::parse(
            "endpoint=crm, outcome==Failed,eventType!=user.created",
            DELIVERY_FIELDS,
        )
        .unwrap();
        assert_eq!(s.requirements.len(), 3);
        assert_eq!(s.equal_to("endpoint"), Some("crm"));
        assert_eq!(s.equal_to("outcome"), Some("Failed"));
        assert_eq!(s.equal_to("eventType"), None);
        let get = |f: &str| match f {
            "endpoint" => Some("crm".to_owned()),
            "outcome" => Some("Failed".to_owned()),
            "eventType" => Some("pitch.created".to_owned()),
            _ => None,
        };
        assert!(s.matches(get));
        let s = FieldSelector::parse("eventType!=pitch.created", DELIVERY_FIELDS).unwrap();
        assert!(!s.matches(get));
        assert!(FieldSelector::parse("", DELIVERY_FIELDS)
            .unwrap()
            .matches(|_| None));
    }

    #[test]
    fn refuses_unknown_fields_and_bad_terms() {
        let e = FieldSelector::parse("spec.url=x", DELIVERY_FIELDS).unwrap_err();
        assert!(e.contains("field label not supported: `spec.url`"), "{e}");
        assert!(e.contains("outcome"), "{e}");
        let e = FieldSelector::parse("endpoint", DELIVERY_FIELDS).unwrap_err();
        assert!(e.contains("field=value"), "{e}");
        assert!(FieldSelector::parse("outcome=Failed", DEAD_LETTER_FIELDS).is_err());
    }
}
