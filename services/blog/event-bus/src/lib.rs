//! The event bus (port 4005).
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
pub mod delivery;
pub mod log;
pub mod routes;

use std::sync::Arc;

use switchyard_kit::{Db, HttpStack, Metrics, Migrations, Shutdown};
use tokio::net::TcpListener;

pub use config::{Settings, Subscriber};

/// The bus's schema, per dialect.
pub static MIGRATIONS: Migrations = Migrations {
    sqlite: &[("event log", include_str!("../migrations/sqlite.sql"))],
    postgres: &[("event log", include_str!("../migrations/postgres.sql"))],
};

pub const SERVICE: &str = "event-bus";
pub const DEFAULT_PORT: u16 = 4005;

/// Runs the bus on `listener` until `shutdown`.
pub async fn launch(
    settings: Settings,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let common = &settings.common;
    let db = Db::open(common, &MIGRATIONS).await?;
    let metrics = Metrics::new(SERVICE);
    let log = log::EventLog::open(db.clone(), &shutdown).await?;
    delivery::start(&settings, log.clone(), metrics.clone(), &shutdown).await?;
    let router = HttpStack::new(common, metrics)
        .ready_when(Arc::new(db.clone()))
        .wrap(routes::router(log));
    let result = switchyard_kit::serve(listener, router, shutdown, common.shutdown_grace).await;
    db.close().await;
    result
}
