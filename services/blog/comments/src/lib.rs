//! The comments service (port 4001).
//!
//! * `GET /posts/:id/comments` → 200 `[{"id", "content", "status"}]` (`[]` for an unknown post);
//! * `POST /posts/:id/comments` `{"content"}` → 201 with the post's whole comment list, the new
//!   one last with `status: "pending"`; `CommentCreated` is committed with it (outbox);
//! * `POST /events` ← the bus: on `CommentModerated`, sets the comment's status and publishes
//!   `CommentUpdated`, once per event (inbox); a moderation of an unknown comment is ignored.

mod handler;
mod routes;

use std::sync::Arc;

use switchyard_bus_client::outbox::{MESSAGING_POSTGRES, MESSAGING_SQLITE};
use switchyard_bus_client::{Foundation, Outbox, ServiceSettings};
use switchyard_kit::{ConfigError, Db, Env, Migrations, Shutdown};
use tokio::net::TcpListener;

pub const SERVICE: &str = "comments";
pub const DEFAULT_PORT: u16 = 4001;

pub static MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        ("messaging", MESSAGING_SQLITE),
        ("comments", include_str!("../migrations/sqlite.sql")),
    ],
    postgres: &[
        ("messaging", MESSAGING_POSTGRES),
        ("comments", include_str!("../migrations/postgres.sql")),
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
    let handler = Arc::new(handler::Moderations(state.clone()));
    base.consume(handler.clone(), &shutdown).await?;
    base.serve(common, routes::router(state), handler, listener, shutdown)
        .await
}
