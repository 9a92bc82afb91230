//! The event contract shared by every service.
//!
//! * [`envelope`]: the wire envelope `{"type", "data"}` plus the metadata Switchyard adds
//!   (`id`, `seq`, `occurredAt`, `correlationId`), which services written for the plain
//!   envelope ignore.
//! * [`blog`]: the blog's event types and their payloads, with validation.
//! * [`ids`]: id generation for events and entities.

pub mod blog;
pub mod envelope;
pub mod ids;

pub use blog::{BlogEvent, CommentStatus};
pub use envelope::{Envelope, EnvelopeError};
