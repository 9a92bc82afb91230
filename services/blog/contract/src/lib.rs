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
use serde_json::{Map, Value};

use switchyard_events::payload::{object, text};
use switchyard_events::{Envelope, EnvelopeError, EventDoc};

pub use switchyard_events::PayloadError;

pub const POST_CREATED: &str = PostCreated::NAME;
pub const COMMENT_CREATED: &str = CommentCreated::NAME;
pub const COMMENT_MODERATED: &str = CommentModerated::NAME;
pub const COMMENT_UPDATED: &str = CommentUpdated::NAME;

/// Longest id accepted inside an event payload.
pub const MAX_REF_LEN: usize = 128;
/// Longest post title (characters).
pub const MAX_TITLE_LEN: usize = 300;
/// Longest comment content (characters).
pub const MAX_CONTENT_LEN: usize = 2000;

/// A comment's moderation status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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

switchyard_events::id_type!(
    /// A post's id.
    pub PostId
);
switchyard_events::id_type!(
    /// A comment's id.
    pub CommentId
);

impl PostId {
    /// A new post's id ([`switchyard_events::ids::entity_id`]).
    pub fn generate() -> PostId {
        PostId(switchyard_events::ids::entity_id())
    }
}

impl CommentId {
    /// A new comment's id ([`switchyard_events::ids::entity_id`]).
    pub fn generate() -> CommentId {
        CommentId(switchyard_events::ids::entity_id())
    }
}

/// An event of the contract: a payload type and its type name. The type is the one wire
/// shape of its event: services build it to publish, consumers get it from
/// [`BlogEvent::from_envelope`], and the AsyncAPI document takes its schema from it.
pub trait ContractEvent: Serialize + utoipa::ToSchema + Into<BlogEvent> {
    /// The event type.
    const NAME: &'static str;
}

/// `PostCreated`: a post was written (posts publishes; query keeps it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PostCreated {
    #[schema(value_type = String, min_length = 1, max_length = 128)]
    pub id: PostId,
    /// Up to 300 characters.
    #[schema(max_length = 300)]
    pub title: String,
}

/// `CommentCreated`: a comment was written, pending moderation (comments publishes;
/// moderation judges it, query shows it as pending). Its status is always `pending`; an
/// absent status is read as `pending`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommentCreated {
    #[schema(value_type = String, min_length = 1, max_length = 128)]
    pub id: CommentId,
    /// Up to 2000 characters.
    #[schema(max_length = 2000)]
    pub content: String,
    #[schema(value_type = String, min_length = 1, max_length = 128)]
    pub post_id: PostId,
    #[schema(inline)]
    pub status: CommentStatus,
}

/// `CommentModerated`: moderation's verdict on a comment (moderation publishes; comments
/// records it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommentModerated {
    #[schema(value_type = String, min_length = 1, max_length = 128)]
    pub id: CommentId,
    #[schema(value_type = String, min_length = 1, max_length = 128)]
    pub post_id: PostId,
    #[schema(inline)]
    pub status: CommentStatus,
    #[schema(max_length = 2000)]
    pub content: String,
}

/// `CommentUpdated`: a comment's status (or content) changed (comments publishes; query
/// shows it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommentUpdated {
    #[schema(value_type = String, min_length = 1, max_length = 128)]
    pub id: CommentId,
    #[schema(inline)]
    pub status: CommentStatus,
    #[schema(value_type = String, min_length = 1, max_length = 128)]
    pub post_id: PostId,
    #[schema(max_length = 2000)]
    pub content: String,
}

/// A blog event with a checked payload: one variant per type, each holding its payload
/// type. Consumers match it without a wildcard arm, so a new event makes every consumer
/// decide about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlogEvent {
    PostCreated(PostCreated),
    CommentCreated(CommentCreated),
    CommentModerated(CommentModerated),
    CommentUpdated(CommentUpdated),
}

/// Implements [`ContractEvent`] and the conversion into [`BlogEvent`] for each payload
/// type, and lists the types in [`EVENT_TYPES`] and the documents in [`event_docs`], from
/// one list.
macro_rules! contract_events {
    ($($variant:ident => $name:literal),+ $(,)?) => {
        $(
            impl ContractEvent for $variant {
                const NAME: &'static str = $name;
            }
            impl From<$variant> for BlogEvent {
                fn from(event: $variant) -> Self {
                    BlogEvent::$variant(event)
                }
            }
        )+

        /// Every event type of the blog.
        pub const EVENT_TYPES: &[&str] = &[$($name),+];

        /// Every event's type and payload schema, for the app's AsyncAPI document.
        pub fn event_docs() -> Vec<EventDoc> {
            vec![$(EventDoc::of::<$variant>($name)),+]
        }

        impl BlogEvent {
            /// The event's type name.
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(BlogEvent::$variant(_) => $name,)+
                }
            }

            /// The contract's `data` payload.
            pub fn data(&self) -> Value {
                match self {
                    $(BlogEvent::$variant(event) => payload(event),)+
                }
            }
        }
    };
}

contract_events! {
    PostCreated => "PostCreated",
    CommentCreated => "CommentCreated",
    CommentModerated => "CommentModerated",
    CommentUpdated => "CommentUpdated",
}

impl BlogEvent {
    /// Reads a blog event from an envelope. `Ok(None)` for a type the blog does not know
    /// (consumers ignore those); `Err` for a known type whose payload is malformed.
    pub fn from_envelope(env: &Envelope) -> Result<Option<BlogEvent>, PayloadError> {
        let Some(event_type) = EVENT_TYPES.iter().copied().find(|t| *t == env.event_type) else {
            return Ok(None);
        };
        let err = |source| PayloadError { event_type, source };
        let data = object(env, event_type)?;
        if event_type == POST_CREATED {
            return Ok(Some(
                PostCreated {
                    id: text(data, "id", MAX_REF_LEN, false)
                        .map(PostId::from_string)
                        .map_err(err)?,
                    title: text(data, "title", MAX_TITLE_LEN, true).map_err(err)?,
                }
                .into(),
            ));
        }
        let id = text(data, "id", MAX_REF_LEN, false)
            .map(CommentId::from_string)
            .map_err(err)?;
        let post_id = text(data, "postId", MAX_REF_LEN, false)
            .map(PostId::from_string)
            .map_err(err)?;
        let content = text(data, "content", MAX_CONTENT_LEN, true).map_err(err)?;
        let event = match event_type {
            // The contract says "pending"; an absent status means the same.
            COMMENT_CREATED => CommentCreated {
                id,
                content,
                post_id,
                status: match data.get("status") {
                    None | Some(Value::Null) => CommentStatus::Pending,
                    Some(_) => status(data).map_err(err)?,
                },
            }
            .into(),
            COMMENT_MODERATED => CommentModerated {
                id,
                post_id,
                status: status(data).map_err(err)?,
                content,
            }
            .into(),
            // COMMENT_UPDATED, the last type of EVENT_TYPES (the round-trip test decodes
            // one of each).
            _ => CommentUpdated {
                id,
                status: status(data).map_err(err)?,
                post_id,
                content,
            }
            .into(),
        };
        Ok(Some(event))
    }

    /// The post the event is about (a post's own id for `PostCreated`).
    pub fn post_id(&self) -> &str {
        match self {
            BlogEvent::PostCreated(post) => post.id.as_str(),
            BlogEvent::CommentCreated(c) => c.post_id.as_str(),
            BlogEvent::CommentModerated(c) => c.post_id.as_str(),
            BlogEvent::CommentUpdated(c) => c.post_id.as_str(),
        }
    }

    /// A new envelope for this event (fresh id, current time).
    pub fn into_envelope(self, correlation_id: Option<String>) -> Envelope {
        Envelope::new(self.event_type(), self.data()).with_correlation(correlation_id)
    }
}

/// An event's `data`: its payload type as JSON.
fn payload<E: Serialize>(event: &E) -> Value {
    // Plain structs of strings: serialising cannot fail.
    serde_json::to_value(event).expect("a contract payload serialises to JSON")
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
    use serde_json::json;

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
            Ok(Some(BlogEvent::CommentCreated(CommentCreated {
                id: "c".into(),
                post_id: "p".into(),
                content: "hi".into(),
                status: CommentStatus::Pending
            })))
        );
        let e = env(
            json!({"type": "CommentUpdated", "data": {"id": "c", "content": "hi", "postId": "p", "status": "rejected"}}),
        );
        assert!(matches!(
            BlogEvent::from_envelope(&e),
            Ok(Some(BlogEvent::CommentUpdated(CommentUpdated {
                status: CommentStatus::Rejected,
                ..
            })))
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
        let (id, post_id, content) = (CommentId::from("c"), PostId::from("p"), String::from("x"));
        let status = CommentStatus::Approved;
        let events: Vec<BlogEvent> = vec![
            PostCreated {
                id: "p".into(),
                title: "t".into(),
            }
            .into(),
            CommentCreated {
                id: id.clone(),
                content: content.clone(),
                post_id: post_id.clone(),
                status: CommentStatus::Pending,
            }
            .into(),
            CommentModerated {
                id: id.clone(),
                post_id: post_id.clone(),
                status,
                content: content.clone(),
            }
            .into(),
            CommentUpdated {
                id,
                status,
                post_id,
                content,
            }
            .into(),
        ];
        let types: Vec<&str> = events.iter().map(BlogEvent::event_type).collect();
        assert_eq!(types, EVENT_TYPES, "one of each type");
        for ev in events {
            let envelope = ev.clone().into_envelope(Some("r".into()));
            assert_eq!(BlogEvent::from_envelope(&envelope), Ok(Some(ev)));
            assert_eq!(envelope.correlation_id.as_deref(), Some("r"));
        }
    }

    #[test]
    fn the_wire_payloads_are_the_courses() {
        let e = BlogEvent::from(CommentModerated {
            id: "c".into(),
            post_id: "p".into(),
            status: CommentStatus::Rejected,
            content: "x".into(),
        });
        assert_eq!(
            serde_json::to_string(&e.data()).expect("json"),
            r#"{"id":"c","postId":"p","status":"rejected","content":"x"}"#
        );
    }

    #[test]
    fn every_event_is_documented_with_its_payload_schema() {
        let docs = event_docs();
        let names: Vec<&str> = docs.iter().map(|d| d.name).collect();
        assert_eq!(names, EVENT_TYPES);
        let created = &docs[1];
        assert_eq!(created.message, "CommentCreated");
        let status = &created.payload["properties"]["status"];
        assert_eq!(
            status["enum"],
            json!(["pending", "approved", "rejected"]),
            "{status}"
        );
    }
}
