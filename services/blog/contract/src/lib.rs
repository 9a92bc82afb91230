//! The blog's events, as the contract (`shared/spec/blog.md`) defines them: the types the
//! blog's services publish and consume, with checked payloads.
//!
//! | type               | data                                       |
//! |--------------------|--------------------------------------------|
//! | `PostCreated`      | `{id, title}`                              |
//! | `CommentCreated`   | `{id, content, postId, status: "pending"}` |
//! | `CommentModerated` | `{id, postId, status, content}`            |
//! | `CommentUpdated`   | `{id, status, postId, content}`            |

pub mod http;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use switchyard_events::payload::{object, text};
use switchyard_events::{Envelope, EnvelopeError};

pub use switchyard_events::PayloadError;

pub const POST_CREATED: &str = "PostCreated";
pub const COMMENT_CREATED: &str = "CommentCreated";
pub const COMMENT_MODERATED: &str = "CommentModerated";
pub const COMMENT_UPDATED: &str = "CommentUpdated";

/// Longest id accepted inside an event payload.
pub const MAX_REF_LEN: usize = 128;
/// Longest post title (characters).
pub const MAX_TITLE_LEN: usize = 300;
/// Longest comment content (characters).
pub const MAX_CONTENT_LEN: usize = 2000;

/// A comment's moderation status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommentStatus {
    Pending,
    Approved,
    Rejected,
}

impl CommentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CommentStatus::Pending => "pending",
            CommentStatus::Approved => "approved",
            CommentStatus::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(CommentStatus::Pending),
            "approved" => Some(CommentStatus::Approved),
            "rejected" => Some(CommentStatus::Rejected),
            _ => None,
        }
    }
}

/// A blog event with a checked payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlogEvent {
    PostCreated {
        id: String,
        title: String,
    },
    CommentCreated {
        id: String,
        post_id: String,
        content: String,
        status: CommentStatus,
    },
    CommentModerated {
        id: String,
        post_id: String,
        content: String,
        status: CommentStatus,
    },
    CommentUpdated {
        id: String,
        post_id: String,
        content: String,
        status: CommentStatus,
    },
}

impl BlogEvent {
    /// Reads a blog event from an envelope. `Ok(None)` for a type the blog does not know
    /// (consumers ignore those); `Err` for a known type whose payload is malformed.
    pub fn from_envelope(env: &Envelope) -> Result<Option<BlogEvent>, PayloadError> {
        let event_type: &'static str = match env.event_type.as_str() {
            POST_CREATED => POST_CREATED,
            COMMENT_CREATED => COMMENT_CREATED,
            COMMENT_MODERATED => COMMENT_MODERATED,
            COMMENT_UPDATED => COMMENT_UPDATED,
            _ => return Ok(None),
        };
        let err = |source| PayloadError { event_type, source };
        let data = object(env, event_type)?;
        let event = match event_type {
            POST_CREATED => BlogEvent::PostCreated {
                id: text(data, "id", MAX_REF_LEN, false).map_err(err)?,
                title: text(data, "title", MAX_TITLE_LEN, true).map_err(err)?,
            },
            _ => {
                let id = text(data, "id", MAX_REF_LEN, false).map_err(err)?;
                let post_id = text(data, "postId", MAX_REF_LEN, false).map_err(err)?;
                let content = text(data, "content", MAX_CONTENT_LEN, true).map_err(err)?;
                let status = match event_type {
                    // The contract says "pending"; an absent status means the same.
                    COMMENT_CREATED if data.get("status").is_none_or(Value::is_null) => {
                        CommentStatus::Pending
                    }
                    _ => status(data).map_err(err)?,
                };
                match event_type {
                    COMMENT_CREATED => BlogEvent::CommentCreated {
                        id,
                        post_id,
                        content,
                        status,
                    },
                    COMMENT_MODERATED => BlogEvent::CommentModerated {
                        id,
                        post_id,
                        content,
                        status,
                    },
                    _ => BlogEvent::CommentUpdated {
                        id,
                        post_id,
                        content,
                        status,
                    },
                }
            }
        };
        Ok(Some(event))
    }

    /// The post the event is about (a post's own id for `PostCreated`).
    pub fn post_id(&self) -> &str {
        match self {
            BlogEvent::PostCreated { id, .. } => id,
            BlogEvent::CommentCreated { post_id, .. }
            | BlogEvent::CommentModerated { post_id, .. }
            | BlogEvent::CommentUpdated { post_id, .. } => post_id,
        }
    }

    /// The event's type name.
    pub fn event_type(&self) -> &'static str {
        match self {
            BlogEvent::PostCreated { .. } => POST_CREATED,
            BlogEvent::CommentCreated { .. } => COMMENT_CREATED,
            BlogEvent::CommentModerated { .. } => COMMENT_MODERATED,
            BlogEvent::CommentUpdated { .. } => COMMENT_UPDATED,
        }
    }

    /// The contract's `data` payload.
    pub fn data(&self) -> Value {
        match self {
            BlogEvent::PostCreated { id, title } => json!({"id": id, "title": title}),
            BlogEvent::CommentCreated {
                id,
                post_id,
                content,
                status,
            } => json!({"id": id, "content": content, "postId": post_id, "status": status}),
            BlogEvent::CommentModerated {
                id,
                post_id,
                content,
                status,
            } => json!({"id": id, "postId": post_id, "status": status, "content": content}),
            BlogEvent::CommentUpdated {
                id,
                post_id,
                content,
                status,
            } => json!({"id": id, "status": status, "postId": post_id, "content": content}),
        }
    }

    /// A new envelope for this event (fresh id, current time).
    pub fn into_envelope(self, correlation_id: Option<String>) -> Envelope {
        Envelope::new(self.event_type(), self.data()).with_correlation(correlation_id)
    }
}

fn status(data: &Map<String, Value>) -> Result<CommentStatus, EnvelopeError> {
    let field = "status";
    match data.get(field) {
        None | Some(Value::Null) => Err(EnvelopeError::Missing { field }),
        Some(Value::String(s)) => CommentStatus::parse(s).ok_or(EnvelopeError::WrongType {
            field,
            expected: "one of pending, approved, rejected",
        }),
        Some(_) => Err(EnvelopeError::WrongType {
            field,
            expected: "string",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(value: Value) -> Envelope {
        Envelope::from_value(value).expect("envelope")
    }

    #[test]
    fn parses_each_contract_event() {
        let e = env(
            json!({"type": "CommentCreated", "data": {"id": "c", "content": "hi", "postId": "p", "status": "pending"}}),
        );
        assert_eq!(
            BlogEvent::from_envelope(&e),
            Ok(Some(BlogEvent::CommentCreated {
                id: "c".into(),
                post_id: "p".into(),
                content: "hi".into(),
                status: CommentStatus::Pending
            }))
        );
        let e = env(
            json!({"type": "CommentUpdated", "data": {"id": "c", "content": "hi", "postId": "p", "status": "rejected"}}),
        );
        assert!(matches!(
            BlogEvent::from_envelope(&e),
            Ok(Some(BlogEvent::CommentUpdated {
                status: CommentStatus::Rejected,
                ..
            }))
        ));
    }

    #[test]
    fn unknown_types_are_not_errors() {
        let e = env(json!({"type": "SomethingElse", "data": 1}));
        assert_eq!(BlogEvent::from_envelope(&e), Ok(None));
    }

    #[test]
    fn malformed_payloads_name_the_field() {
        let e = env(json!({"type": "CommentCreated", "data": {"id": "c", "postId": "p"}}));
        let err = BlogEvent::from_envelope(&e).expect_err("missing content");
        assert_eq!(err.field().as_deref(), Some("data.content"));
        let e = env(json!({"type": "PostCreated"}));
        assert!(BlogEvent::from_envelope(&e).is_err());
        let e = env(
            json!({"type": "CommentModerated", "data": {"id": "c", "postId": "p", "content": "x", "status": "maybe"}}),
        );
        assert!(BlogEvent::from_envelope(&e).is_err());
    }

    #[test]
    fn payload_round_trips() {
        let ev = BlogEvent::CommentModerated {
            id: "c".into(),
            post_id: "p".into(),
            content: "x".into(),
            status: CommentStatus::Approved,
        };
        let envelope = ev.clone().into_envelope(Some("r".into()));
        assert_eq!(BlogEvent::from_envelope(&envelope), Ok(Some(ev)));
        assert_eq!(envelope.correlation_id.as_deref(), Some("r"));
    }
}
