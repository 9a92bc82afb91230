//! Request bodies parsed, not validated.
//!
//! A request body is one Rust type (declared with [`request_body!`]): the handler's
//! extractor parses the JSON into it, the same type derives the OpenAPI schema, and a
//! handler never sees a body that broke a rule. Each field's type is a small parser
//! ([`FieldValue`]) with the contract's own messages, so that a body with several bad
//! fields is answered with every one of them (the course's clients show them all), which
//! a derived `Deserialize` stopping at the first error would not do.

mod body;
mod text;

pub use body::{BodyError, FieldValue, RequestBody};
pub use text::Text;

#[doc(hidden)]
pub use serde_json as __json;
