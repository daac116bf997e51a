//! Schema helpers for fields whose JSON schema the derive cannot express on its own.
use schemars::{json_schema, Schema, SchemaGenerator};

use super::duration::DURATION_PATTERN;

// Every string a CEL rule reads has a maximum length: an API server (1.25+) estimates a rule's
// cost from the largest value it may see, and refuses the CRD when that exceeds its budget.

/// A Go-style duration string such as `1s`, `5m` or `1h30m`.
pub fn duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": DURATION_PATTERN,
        "maxLength": 32,
    })
}

/// An RFC 3339 timestamp string.
pub fn date_time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "format": "date-time",
        "maxLength": 64,
    })
}

/// An optional RFC 3339 timestamp string.
pub fn optional_date_time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "format": "date-time",
        "maxLength": 64,
        "nullable": true,
    })
}

/// A free-form JSON object whose fields the API server keeps as they are.
pub fn free_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// An event type (`user.created`) or a pattern (`pitch.*`, `*`).
pub fn event_type_patterns(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "string",
            "pattern": crate::api::event_types::PATTERN_REGEX,
            "maxLength": 128,
        },
    })
}
