//! An app's events as documentation: what its AsyncAPI document says of each event,
//! taken from the contract crate's payload types so the document cannot drift from them.

use serde_json::Value;

/// One event of an app's contract: its wire name, the name of its payload type and the
/// payload's JSON Schema (with the type's doc comment as its description).
#[derive(Debug, Clone, PartialEq)]
pub struct EventDoc {
    /// The event type on the wire (`CommentCreated`, `ticket:created`).
    pub name: &'static str,
    /// The payload type's name (`CommentCreated`, `TicketCreated`).
    pub message: String,
    /// The payload's schema.
    pub payload: Value,
}

impl EventDoc {
    /// The document of the event `name` whose payload type is `E`.
    pub fn of<E: utoipa::ToSchema>(name: &'static str) -> EventDoc {
        EventDoc {
            name,
            message: E::name().into_owned(),
            // A schema is a tree of maps, strings and numbers: it always serialises.
            payload: serde_json::to_value(E::schema()).expect("a schema serialises to JSON"),
        }
    }
}
