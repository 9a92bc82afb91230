//! The posts service (port 4000).
//!
//! * `GET /posts` → 200 `{ "<id>": {"id", "title"} }` in creation order;
//! * `POST /posts/create` `{"title"}` → 201 `{"id", "title"}`; the post and its
//!   `PostCreated` event are committed together (outbox), so the answer is 201 even while
//!   the bus is down, and the event reaches the bus when it is back;
//! * `POST /events` ← the bus; posts consumes no event type and answers 200 `{}`.

mod routes;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use switchyard_bus_client::consumer::Handled;
use switchyard_bus_client::outbox::{MESSAGING_POSTGRES, MESSAGING_SQLITE};
use switchyard_bus_client::{EventHandler, Foundation, HandleError, Outbox, ServiceSettings};
use switchyard_events::Envelope;
use switchyard_kit::{ConfigError, Db, Env, Migrations, Shutdown};
use tokio::net::TcpListener;

pub const SERVICE: &str = "posts";
pub const DEFAULT_PORT: u16 = 4000;

pub static MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        ("messaging", MESSAGING_SQLITE),
        ("posts", include_str!("../migrations/sqlite.sql")),
    ],
    postgres: &[
        ("messaging", MESSAGING_POSTGRES),
        ("posts", include_str!("../migrations/postgres.sql")),
    ],
};

/// The service's settings: the common ones and the bus's.
pub type Settings = ServiceSettings;

/// Reads the settings from the environment.
pub fn settings_from_env(env: &Env) -> Result<Settings, ConfigError> {
    ServiceSettings::from_env(env, SERVICE, DEFAULT_PORT)
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub db: Db,
    pub outbox: Outbox,
}

/// Runs the service on `listener` until `shutdown`.
pub async fn launch(
    settings: Settings,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let common = &settings.common;
    let base =
        Foundation::start(SERVICE, common, &settings.bus, &MIGRATIONS, true, &shutdown).await?;
    let state = AppState {
        db: base.db.clone(),
        outbox: base.outbox.clone(),
    };
    base.serve(
        common,
        routes::router(state),
        Arc::new(IgnoresEvents),
        listener,
        shutdown,
    )
    .await
}

/// Posts consumes no event; it acknowledges every well-formed one.
struct IgnoresEvents;

impl EventHandler for IgnoresEvents {
    fn handle(&self, _event: Envelope) -> BoxFuture<'_, Result<Handled, HandleError>> {
        Box::pin(async { Ok(Handled::Ignored) })
    }
}
