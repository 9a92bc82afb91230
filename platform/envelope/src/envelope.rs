//! The event envelope.
//!
//! On the wire an event is a JSON object `{"type": "...", "data": {...}}`. Switchyard adds
//! `id` (unique, set by the producer), `seq` (position in the bus's log), `occurredAt` and
//! `correlationId`. Unknown extra fields are kept, so an event passes through the bus unchanged.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Longest accepted event id.
pub const MAX_ID_LEN: usize = 128;
/// Longest accepted event type name.
pub const MAX_TYPE_LEN: usize = 128;
/// Longest accepted `correlationId` (the request id that caused the event, which the
/// services keep to this length too).
pub const MAX_CORRELATION_LEN: usize = 128;
/// Longest accepted `occurredAt`.
pub const MAX_OCCURRED_AT_LEN: usize = 64;
/// Largest JSON of the envelope's other fields together (those it keeps as they came).
pub const MAX_EXTRA_BYTES: usize = 4096;
/// Largest event a service publishes (its JSON): half the bus's default body limit, so an
/// event a service committed can always be stored. The services' input limits keep their
/// events far below it.
pub const MAX_EVENT_BYTES: usize = 32 * 1024;

/// An event as it travels between services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique id; producers set it, the bus assigns one when it is missing.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub data: Value,
    /// Position in the bus's log, assigned by the bus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    #[serde(
        default,
        rename = "occurredAt",
        skip_serializing_if = "Option::is_none"
    )]
    pub occurred_at: Option<String>,
    #[serde(
        default,
        rename = "correlationId",
        skip_serializing_if = "Option::is_none"
    )]
    pub correlation_id: Option<String>,
    /// Any other envelope field, kept as it came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why a JSON value is not an event envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("an event must be a JSON object")]
    NotAnObject,
    #[error("{field} is required")]
    Missing { field: &'static str },
    #[error("{field} must be a {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("{field} must be at most {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    /// The fields an envelope keeps as they came are bounded together.
    #[error("the {field}'s other fields must be at most {max} bytes of JSON")]
    TooLarge { field: &'static str, max: usize },
    /// PostgreSQL stores no NUL in text: refused on every backend alike.
    #[error("{field} must not contain NUL characters")]
    Nul { field: &'static str },
}

impl EnvelopeError {
    /// The envelope field the error is about.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            EnvelopeError::NotAnObject => None,
            EnvelopeError::Missing { field }
            | EnvelopeError::WrongType { field, .. }
            | EnvelopeError::TooLong { field, .. }
            | EnvelopeError::Empty { field }
            | EnvelopeError::TooLarge { field, .. }
            | EnvelopeError::Nul { field } => Some(field),
        }
    }
}

impl Envelope {
    /// A new event with a fresh id and the current time.
    pub fn new(event_type: impl Into<String>, data: Value) -> Self {
        Envelope {
            id: crate::ids::event_id(),
            event_type: event_type.into(),
            data,
            seq: None,
            occurred_at: Some(crate::ids::now_rfc3339()),
            correlation_id: None,
            extra: Map::new(),
        }
    }

    /// Sets the correlation id (the request or event that caused this one). One longer
    /// than [`MAX_CORRELATION_LEN`] is left out: the event must stay valid.
    pub fn with_correlation(mut self, correlation_id: Option<String>) -> Self {
        self.correlation_id =
            correlation_id.filter(|c| check_text("correlationId", c, MAX_CORRELATION_LEN).is_ok());
        self
    }

    /// Parses and checks an envelope: an object with a non-empty string `type`; `id`, when
    /// present, a non-empty string; `seq` an integer; `occurredAt`/`correlationId` strings.
    pub fn from_value(value: Value) -> Result<Self, EnvelopeError> {
        let Value::Object(mut map) = value else {
            return Err(EnvelopeError::NotAnObject);
        };
        let event_type = match map.remove("type") {
            None | Some(Value::Null) => return Err(EnvelopeError::Missing { field: "type" }),
            Some(Value::String(s)) => s,
            Some(_) => {
                return Err(EnvelopeError::WrongType {
                    field: "type",
                    expected: "string",
                });
            }
        };
        check_text("type", &event_type, MAX_TYPE_LEN)?;
        let id = match map.remove("id") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => {
                check_text("id", &s, MAX_ID_LEN)?;
                s
            }
            Some(_) => {
                return Err(EnvelopeError::WrongType {
                    field: "id",
                    expected: "string",
                });
            }
        };
        let seq = match map.remove("seq") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(n.as_i64().ok_or(EnvelopeError::WrongType {
                field: "seq",
                expected: "integer",
            })?),
            Some(_) => {
                return Err(EnvelopeError::WrongType {
                    field: "seq",
                    expected: "integer",
                });
            }
        };
        let occurred_at = optional_string(&mut map, "occurredAt", MAX_OCCURRED_AT_LEN)?;
        let correlation_id = optional_string(&mut map, "correlationId", MAX_CORRELATION_LEN)?;
        let data = map.remove("data").unwrap_or(Value::Null);
        if !map.is_empty() && serde_json::to_vec(&map).map_or(0, |v| v.len()) > MAX_EXTRA_BYTES {
            return Err(EnvelopeError::TooLarge {
                field: "envelope",
                max: MAX_EXTRA_BYTES,
            });
        }
        Ok(Envelope {
            id,
            event_type,
            data,
            seq,
            occurred_at,
            correlation_id,
            extra: map,
        })
    }

    /// Parses an envelope from JSON bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, EnvelopeParseError> {
        let value: Value = serde_json::from_slice(bytes).map_err(EnvelopeParseError::Json)?;
        Envelope::from_value(value).map_err(EnvelopeParseError::Envelope)
    }

    /// The JSON bytes of this envelope.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing a struct of strings, numbers and JSON values cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Error parsing an envelope from bytes.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeParseError {
    #[error("malformed JSON: {0}")]
    Json(serde_json::Error),
    #[error(transparent)]
    Envelope(EnvelopeError),
}

fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), EnvelopeError> {
    if value.trim().is_empty() {
        return Err(EnvelopeError::Empty { field });
    }
    if value.chars().count() > max {
        return Err(EnvelopeError::TooLong { field, max });
    }
    if value.contains('\0') {
        return Err(EnvelopeError::Nul { field });
    }
    Ok(())
}

fn optional_string(
    map: &mut Map<String, Value>,
    field: &'static str,
    max: usize,
) -> Result<Option<String>, EnvelopeError> {
    match map.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            check_text(field, &s, max)?;
            Ok(Some(s))
        }
        Some(_) => Err(EnvelopeError::WrongType {
            field,
            expected: "string",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_original_envelope_parses() {
        let env = Envelope::from_value(
            json!({"type": "PostCreated", "data": {"id": "ab", "title": "t"}}),
        )
        .expect("valid");
        assert_eq!(env.event_type, "PostCreated");
        assert!(env.id.is_empty());
        assert_eq!(env.data["title"], "t");
    }

    #[test]
    fn round_trip_keeps_metadata_and_extra_fields() {
        let value = json!({"id": "e1", "type": "X", "data": {}, "seq": 7, "occurredAt": "2026-01-01T00:00:00Z", "correlationId": "r1", "other": [1]});
        let env = Envelope::from_value(value.clone()).expect("valid");
        assert_eq!(env.seq, Some(7));
        assert_eq!(env.extra["other"], json!([1]));
        let back: Value = serde_json::from_slice(&env.to_bytes()).expect("json");
        assert_eq!(back, value);
    }

    #[test]
    fn an_over_long_correlation_is_left_out_of_a_new_event() {
        let at = "r".repeat(MAX_CORRELATION_LEN);
        let kept = Envelope::new("X", json!({})).with_correlation(Some(at.clone()));
        assert_eq!(kept.correlation_id.as_deref(), Some(at.as_str()));
        let over = Envelope::new("X", json!({})).with_correlation(Some("r".repeat(70_000)));
        assert_eq!(over.correlation_id, None);
        assert!(Envelope::from_slice(&over.to_bytes()).is_ok());
    }

    #[test]
    fn rejects_bad_shapes() {
        assert_eq!(
            Envelope::from_value(json!([1])),
            Err(EnvelopeError::NotAnObject)
        );
        assert_eq!(
            Envelope::from_value(json!({"data": {}})),
            Err(EnvelopeError::Missing { field: "type" })
        );
        assert_eq!(
            Envelope::from_value(json!({"type": 3})),
            Err(EnvelopeError::WrongType {
                field: "type",
                expected: "string"
            })
        );
        assert_eq!(
            Envelope::from_value(json!({"type": "X", "id": 5})),
            Err(EnvelopeError::WrongType {
                field: "id",
                expected: "string"
            })
        );
        assert_eq!(
            Envelope::from_value(json!({"type": " "})),
            Err(EnvelopeError::Empty { field: "type" })
        );
        // The free-form fields are bounded: at the limit they are taken, one over refused.
        for (field, max) in [
            ("correlationId", MAX_CORRELATION_LEN),
            ("occurredAt", MAX_OCCURRED_AT_LEN),
        ] {
            let at = Envelope::from_value(json!({"type": "X", field: "c".repeat(max)}));
            assert!(at.is_ok(), "{field} at its limit: {at:?}");
            assert_eq!(
                Envelope::from_value(json!({"type": "X", field: "c".repeat(max + 1)})),
                Err(EnvelopeError::TooLong { field, max })
            );
        }
        let extra = |n: usize| json!({"type": "X", "other": "e".repeat(n)});
        // `{"other":"…"}` is 12 bytes of JSON around the text.
        assert!(Envelope::from_value(extra(MAX_EXTRA_BYTES - 12)).is_ok());
        assert_eq!(
            Envelope::from_value(extra(MAX_EXTRA_BYTES - 11)),
            Err(EnvelopeError::TooLarge {
                field: "envelope",
                max: MAX_EXTRA_BYTES
            })
        );
        let long = "x".repeat(MAX_ID_LEN + 1);
        assert_eq!(
            Envelope::from_value(json!({"type": "X", "id": long})),
            Err(EnvelopeError::TooLong {
                field: "id",
                max: MAX_ID_LEN
            })
        );
    }
}
