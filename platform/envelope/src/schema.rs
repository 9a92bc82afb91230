//! The envelope as an OpenAPI schema, for the documents of the routes that take or give
//! events (the bus's `POST /events` and `GET /events`, each service's `POST /events`).
//!
//! [`Envelope::from_value`](crate::Envelope::from_value) is what checks an event; this
//! schema states the same rules so that a client generated from it sends what is accepted.

use serde_json::Value;
use utoipa::ToSchema;

/// An event: `{"type", "data"}` plus the metadata the platform adds. Any other field is
/// kept as it came.
#[derive(ToSchema)]
#[schema(as = Event)]
#[allow(dead_code)]
pub struct EventSchema {
    /// The event type, e.g. `CommentCreated` or `ticket:created`.
    #[schema(
        rename = "type",
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00]*\S[^\x00]*$"
    )]
    event_type: String,
    /// The payload; the app's contract says what each type carries.
    data: Option<Value>,
    /// Unique id; the bus assigns one when it is missing.
    #[schema(min_length = 1, max_length = 128, pattern = r"^[^\x00]*\S[^\x00]*$")]
    id: Option<String>,
    /// The position in the bus's log, assigned by the bus (a client's own is ignored).
    seq: Option<i64>,
    /// When the event happened (RFC 3339).
    #[schema(rename = "occurredAt")]
    occurred_at: Option<String>,
    /// The request or event that caused this one.
    #[schema(rename = "correlationId")]
    correlation_id: Option<String>,
}
