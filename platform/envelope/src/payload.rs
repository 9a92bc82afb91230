//! Reading an event's `data` payload with checks, for any app's contract crate.
//!
//! A contract crate turns an [`Envelope`] of a type it knows into a typed event; these
//! helpers read the fields and say which one is at fault, so a malformed event is rejected
//! with a message that names `data.<field>` instead of being half-applied.

use serde_json::{Map, Value};

use crate::envelope::{Envelope, EnvelopeError};

/// Why an event of a known type has a malformed payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{event_type}: {source}")]
pub struct PayloadError {
    pub event_type: &'static str,
    pub source: EnvelopeError,
}

impl PayloadError {
    /// The payload field at fault, as `data.<name>` (nested fields as `data.a.b`).
    pub fn field(&self) -> Option<String> {
        self.source.field().map(|f| format!("data.{f}"))
    }
}

/// The payload object of `env`, or the error for a missing or non-object `data`.
pub fn object<'a>(
    env: &'a Envelope,
    event_type: &'static str,
) -> Result<&'a Map<String, Value>, PayloadError> {
    match &env.data {
        Value::Object(data) => Ok(data),
        Value::Null => Err(PayloadError {
            event_type,
            source: EnvelopeError::Missing { field: "data" },
        }),
        _ => Err(PayloadError {
            event_type,
            source: EnvelopeError::WrongType {
                field: "data",
                expected: "object",
            },
        }),
    }
}

/// A string field of at most `max` characters; empty (or blank) only when `allow_empty`.
pub fn text(
    data: &Map<String, Value>,
    field: &'static str,
    max: usize,
    allow_empty: bool,
) -> Result<String, EnvelopeError> {
    match data.get(field) {
        None | Some(Value::Null) => Err(EnvelopeError::Missing { field }),
        Some(Value::String(s)) => {
            if !allow_empty && s.trim().is_empty() {
                Err(EnvelopeError::Empty { field })
            } else if s.chars().count() > max {
                Err(EnvelopeError::TooLong { field, max })
            } else if s.contains('\0') {
                Err(EnvelopeError::Nul { field })
            } else {
                Ok(s.clone())
            }
        }
        Some(_) => Err(EnvelopeError::WrongType {
            field,
            expected: "string",
        }),
    }
}

/// An optional string field: absent or `null` is `None`.
pub fn optional_text(
    data: &Map<String, Value>,
    field: &'static str,
    max: usize,
) -> Result<Option<String>, EnvelopeError> {
    match data.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => text(data, field, max, false).map(Some),
    }
}

/// A non-negative integer field (versions, counts).
pub fn unsigned(data: &Map<String, Value>, field: &'static str) -> Result<i64, EnvelopeError> {
    match data.get(field) {
        None | Some(Value::Null) => Err(EnvelopeError::Missing { field }),
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|v| *v >= 0)
            .ok_or(EnvelopeError::WrongType {
                field,
                expected: "non-negative integer",
            }),
        Some(_) => Err(EnvelopeError::WrongType {
            field,
            expected: "non-negative integer",
        }),
    }
}

/// A finite number field.
pub fn number(data: &Map<String, Value>, field: &'static str) -> Result<f64, EnvelopeError> {
    match data.get(field) {
        None | Some(Value::Null) => Err(EnvelopeError::Missing { field }),
        Some(Value::Number(n)) => {
            n.as_f64()
                .filter(|v| v.is_finite())
                .ok_or(EnvelopeError::WrongType {
                    field,
                    expected: "number",
                })
        }
        Some(_) => Err(EnvelopeError::WrongType {
            field,
            expected: "number",
        }),
    }
}

/// A nested object field.
pub fn nested<'a>(
    data: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a Map<String, Value>, EnvelopeError> {
    match data.get(field) {
        None | Some(Value::Null) => Err(EnvelopeError::Missing { field }),
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(EnvelopeError::WrongType {
            field,
            expected: "object",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn fields_are_checked_and_named() {
        let data = map(json!({"t": "x", "blank": " ", "n": 3, "f": 1.5, "neg": -1, "o": {}}));
        assert_eq!(text(&data, "t", 5, false), Ok("x".into()));
        assert_eq!(
            text(&data, "blank", 5, false),
            Err(EnvelopeError::Empty { field: "blank" })
        );
        assert_eq!(
            text(&data, "t", 0, true),
            Err(EnvelopeError::TooLong { field: "t", max: 0 })
        );
        assert_eq!(optional_text(&data, "missing", 5), Ok(None));
        let nul = map(json!({"t": "a\u{0}b"}));
        assert_eq!(
            text(&nul, "t", 5, false),
            Err(EnvelopeError::Nul { field: "t" })
        );
        assert_eq!(unsigned(&data, "n"), Ok(3));
        assert!(unsigned(&data, "neg").is_err());
        assert!(unsigned(&data, "f").is_err());
        assert_eq!(number(&data, "f"), Ok(1.5));
        assert!(nested(&data, "o").is_ok());
        assert!(nested(&data, "t").is_err());
    }

    #[test]
    fn payload_errors_name_the_data_field() {
        let err = PayloadError {
            event_type: "X",
            source: EnvelopeError::Missing { field: "id" },
        };
        assert_eq!(err.field().as_deref(), Some("data.id"));
        let env = Envelope::new("X", Value::Null);
        assert!(object(&env, "X").is_err());
    }
}
