//! An OTLP/HTTP traces receiver: `POST /v1/traces` in protobuf or JSON, as the services'
//! exporters send them ([`switchyard_kit::otel`](../switchyard_kit/otel/index.html)), and the
//! latest spans kept in memory, bounded, to be read by trace (`GET /v1/traces/{trace_id}`).
//! The console draws its waterfalls from it; the tests collect the services' spans with it.

mod decode;
mod routes;
mod store;

pub use decode::{DecodeError, Encoding, decode};
pub use routes::{MAX_BODY_BYTES, router, serve};
pub use store::{SpanKind, SpanRecord, SpanStore};
