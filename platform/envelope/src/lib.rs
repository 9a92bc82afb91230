//! The event envelope every app's events travel in, and helpers for their payloads.
//!
//! * [`envelope`]: the wire envelope `{"type", "data"}` plus the metadata Switchyard adds
//!   (`id`, `seq`, `occurredAt`, `correlationId`), which services written for the plain
//!   envelope ignore.
//! * [`payload`]: checked reading of `data` fields, for the apps' contract crates (each app
//!   keeps its event types in its own crate, e.g. `services/blog/contract`).
//! * [`ids`]: id generation for events and entities.
//! * [`schema`]: the envelope as an OpenAPI schema.
//! * [`docs`]: each event of a contract as its AsyncAPI document states it.

pub mod docs;
pub mod envelope;
pub mod ids;
pub mod payload;
pub mod schema;
pub mod trace;

pub use docs::EventDoc;
pub use envelope::{Envelope, EnvelopeError};
pub use payload::PayloadError;
pub use schema::EventSchema;
pub use trace::{TRACEPARENT, TraceContext};
