//! The event bus: infrastructure any app can use (the blog's runs on port 4005).
//!
//! It stores and delivers any well-formed envelope; the app's contract may add payload
//! checks for the types it knows ([`Settings::payload_check`]), and each subscriber may
//! declare the types it takes.
//!
//! * `POST /events` appends the event to a durable log before answering 200
//!   `{"status":"OK"}`; an id already in the log is not stored twice; an event without an id
//!   gets one.
//! * `GET /events` returns the whole log oldest first; `GET /events?after=<seq>&limit=<n>`
//!   pages through it.
//! * Every subscriber gets every event in log order, at least once, through its own
//!   persistent cursor; failed deliveries are retried with capped exponential backoff, and a
//!   slow or dead subscriber never delays the others.

pub mod config;
pub mod dead_letters;
pub mod delivery;
pub mod log;
pub mod routes;

use std::sync::Arc;

use switchyard_kit::server::Listeners;
use switchyard_kit::{Db, HttpStack, Metrics, Migration, Migrations, Shutdown};

pub use config::{PayloadCheck, Settings, Subscriber};

/// The bus's schema, per dialect.
pub static MIGRATIONS: Migrations = Migrations(&[
    Migration {
        version: 1,
        description: "event log",
        sqlite: include_str!("../migrations/sqlite.sql"),
        postgres: include_str!("../migrations/postgres.sql"),
    },
    Migration {
        version: 2,
        description: "parked events",
        sqlite: PARKED,
        postgres: PARKED,
    },
]);

/// Events a subscriber deferred (425), or dead letters replayed: delivered again beside
/// the subscriber's stream, not holding it up.
const PARKED: &str = "
CREATE TABLE parked (
    subscriber TEXT NOT NULL,
    seq BIGINT NOT NULL,
    since BIGINT NOT NULL,
    PRIMARY KEY (subscriber, seq)
);
";

/// The bus's name in metrics and logs (and its default data file).
pub const SERVICE: &str = "event-bus";

/// Runs the bus on `listeners` until `shutdown`.
pub async fn launch(
    settings: Settings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let common = &settings.common;
    let db = Db::open(common, &[&MIGRATIONS]).await?;
    let metrics = Metrics::new(&common.service);
    let log = log::EventLog::open(db.clone(), &shutdown).await?;
    let replays = delivery::start(&settings, log.clone(), metrics.clone(), &shutdown).await?;
    let stack = HttpStack::new(common, metrics).ready_when(Arc::new(db.clone()));
    if settings.secret.is_none() {
        tracing::warn!(
            "EVENT_BUS_SECRET is not set: anyone who reaches this port may publish events and read the log (as the course's own services expect)"
        );
    }
    let (routes, doc) =
        routes::router(log.clone(), settings.payload_check, settings.secret.clone())
            .split_for_parts();
    let doc = switchyard_kit::openapi::document(SERVICE, doc);
    let result = switchyard_kit::serve(
        listeners,
        stack.wrap(routes),
        stack.ops_router_with(
            &shutdown,
            switchyard_kit::openapi::route(&doc).merge(dead_letters::router(log, replays)),
        ),
        shutdown,
        common.shutdown_grace,
    )
    .await;
    db.close().await;
    result
}
