//! The service kit: everything a Switchyard service needs besides its own logic.
//!
//! * [`bus_secret`]: the secret an app's services and its HTTP event bus share;
//! * [`clock`]: the wall clock in milliseconds, as timestamps are stored;
//! * [`config`]: typed configuration from environment variables;
//! * [`telemetry`]: tracing logs (human or JSON);
//! * [`otel`] and [`spans`]: the event path's spans, exported by OTLP when the `OTEL_*`
//!   variables name a collector;
//! * [`error`]: the one JSON error body and the JSON body extractor;
//! * [`metrics`]: Prometheus metrics;
//! * [`db`]: SQLite or PostgreSQL chosen by URL, migrations per dialect;
//! * [`http`]: the router every service is wrapped in (request ids, health, limits, errors);
//! * [`request_id`]: which client request ids are kept, and fresh ones;
//! * [`request_stack`]: the one layer of per-request work (request id, span, timeout,
//!   JSON errors, metrics);
//! * [`openapi`]: the OpenAPI document served at `/openapi.json` on the ops listener;
//! * [`page`]: a page of plain files under a strict Content-Security-Policy;
//! * [`server`]: serving with graceful shutdown, and background tasks that drain with it;
//! * [`wait`]: waiting on a condition with a deadline (tests, start-up);
//! * [`backoff`]: capped exponential backoff with jitter for retry loops;
//! * [`testing`]: the "skip without the server, fail under CI" rule for tests.

pub mod backoff;
pub mod bus_secret;
pub mod clock;
pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod metrics;
pub mod openapi;
pub mod otel;
pub mod page;
pub mod priority;
pub mod request_id;
pub mod request_stack;
pub mod server;
pub mod spans;
pub mod telemetry;
pub mod testing;
pub mod trace_context;
pub mod wait;

pub use backoff::Backoff;
pub use bus_secret::{BusSecret, FromBus, HasBusSecret};
pub use config::{CommonConfig, ConfigError, Env};
pub use db::{Db, Dialect, Migration, Migrations};
pub use error::{ApiError, JsonBody, ValidJson};
pub use http::{HttpStack, ReadinessCheck, RequestId};
pub use metrics::Metrics;
pub use server::{Shutdown, serve};
