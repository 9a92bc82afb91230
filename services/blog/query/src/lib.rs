//! The query service (port 4002): the read model.
//!
//! * `GET /posts` → 200 `{ "<id>": {"id", "title", "comments": [{"id", "content", "status"}]} }`
//!   in creation order, served from memory (rebuilt from the database after each change);
//! * `GET /posts/stream` → server-sent events: `event: snapshot` with the same JSON, at
//!   connection and after every change;
//! * `POST /events` ← the bus: applies `PostCreated`, `CommentCreated`, `CommentUpdated` once
//!   each (inbox), in any order: a comment whose post is unknown yet is kept and shows once
//!   the post arrives; a `CommentUpdated` that overtakes its `CommentCreated` wins over it.
//!
//! The read model and the position in the bus's log are stored in the service's own
//! database; at start it catches up from that position, and [`rebuild`] replays the whole log.
//!
//! Replicas can share one PostgreSQL database: every change bumps a version row in its
//! transaction, and each replica checks it before serving its cached JSON (and polls it to
//! notify its `/posts/stream` clients of changes applied by the other replicas).

mod apply;
mod catch_up;
mod read_model;
mod routes;

use std::sync::Arc;

use switchyard_bus_client::outbox::{MESSAGING_POSTGRES, MESSAGING_SQLITE};
use switchyard_bus_client::{Foundation, ServiceSettings};
use switchyard_kit::{ConfigError, Db, Env, Migrations, Shutdown};
use tokio::net::TcpListener;

pub use catch_up::rebuild;

pub const SERVICE: &str = "query";
pub const DEFAULT_PORT: u16 = 4002;

pub static MIGRATIONS: Migrations = Migrations {
    sqlite: &[
        ("messaging", MESSAGING_SQLITE),
        ("read model", include_str!("../migrations/sqlite.sql")),
        (
            "replicas and log order",
            include_str!("../migrations/replicas.sql"),
        ),
    ],
    postgres: &[
        ("messaging", MESSAGING_POSTGRES),
        ("read model", include_str!("../migrations/postgres.sql")),
        (
            "replicas and log order",
            include_str!("../migrations/replicas.sql"),
        ),
    ],
};

/// The service's settings: the common ones and the bus's.
pub type Settings = ServiceSettings;

/// Reads the settings from the environment.
pub fn settings_from_env(env: &Env) -> Result<Settings, ConfigError> {
    ServiceSettings::from_env(env, SERVICE, DEFAULT_PORT)
}

/// Runs the service on `listener` until `shutdown`.
pub async fn launch(
    settings: Settings,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let common = &settings.common;
    // Query publishes nothing: no outbox relay.
    let base = Foundation::start(
        SERVICE,
        common,
        &settings.bus,
        &MIGRATIONS,
        false,
        &shutdown,
    )
    .await?;
    let model = read_model::ReadModel::new(base.db.clone());
    model.spawn_watch(&shutdown);
    let applier = Arc::new(apply::Applier::new(model.clone()));
    catch_up::spawn(base.bus.clone(), applier.clone(), &shutdown);
    base.consume(applier.clone(), &shutdown).await?;
    base.serve(
        common,
        routes::router(model, shutdown.stop_token()),
        applier,
        listener,
        shutdown,
    )
    .await
}

/// Opens the database of `settings` and runs its migrations.
pub(crate) async fn open_db(common: &switchyard_kit::CommonConfig) -> anyhow::Result<Db> {
    let db = Db::connect(&common.database_url).await?;
    db.migrate(&MIGRATIONS).await?;
    Ok(db)
}
