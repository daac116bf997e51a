//! `spec.ordering.key`: a path into an event (`event_type`, or `data.` and field names or array
//! indexes), and the value it points at. Pure; the controller checks the syntax, the dispatcher
//! reads the value.
use serde_json::{Map, Value};

/// A parsed `ordering.key`: `event_type`, or `data.` and a path into the event's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyPath {
    EventType,
    Data(Vec<String>),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyPathError {
    #[error("`{0}` is not a key path: write `data.` and dot-separated field names (or array indexes), e.g. data.user.id, or event_type")]
    Syntax(String),
}

impl KeyPath {
    pub fn parse(path: &str) -> Result<Self, KeyPathError> {
        if path == "event_type" {
            return Ok(Self::EventType);
        }
        let syntax = || KeyPathError::Syntax(path.to_owned());
        let rest = path.strip_prefix("data.").ok_or_else(syntax)?;
        let segments: Vec<String> = rest.split('.').map(str::to_owned).collect();
        let valid = |s: &String| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if segments.len() > 16 || !segments.iter().all(valid) {
            return Err(syntax());
        }
        Ok(Self::Data(segments))
    }

    /// The value at this path, if there is one. A segment of digits also indexes an array.
    pub fn lookup<'a>(
        &self,
        event_type: &'a str,
        data: &'a Map<String, Value>,
    ) -> Option<KeyValue<'a>> {
        let segments = match self {
            Self::EventType => return Some(KeyValue::Str(event_type)),
            Self::Data(segments) => segments,
        };
        let (first, rest) = segments.split_first()?;
        let mut value = data.get(first)?;
        for segment in rest {
            value = match value {
                Value::Object(map) => map.get(segment)?,
                Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(KeyValue::Json(value))
    }
}

/// A key's value: the event type, or a JSON value in the data.
#[derive(Debug)]
pub enum KeyValue<'a> {
    Str(&'a str),
    Json(&'a Value),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_are_checked() {
        assert_eq!(KeyPath::parse("event_type"), Ok(KeyPath::EventType));
        assert_eq!(
            KeyPath::parse("data.user.id"),
            Ok(KeyPath::Data(vec!["user".into(), "id".into()]))
        );
        for bad in [
            "user.id",
            "data",
            "data.",
            "data..id",
            "data.a b",
            "$.data.id",
            "",
        ] {
            assert!(KeyPath::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
