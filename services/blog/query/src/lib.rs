//! The query service (port 4002 in the blog's contract): the read model.
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
//! database (the position saved every second: a start that catches up from a little
//! behind only reads events the inbox already knows); at start it catches up from that
//! position, and [`rebuild`] replays the whole log.
//!
//! Replicas can share one PostgreSQL database: every change bumps a version row in its
//! transaction, and each replica checks it before serving its cached JSON (and polls it to
//! notify its `/posts/stream` clients of changes applied by the other replicas).

mod apply;
pub use apply::CONSUMES;
mod catch_up;
mod position;
mod read_model;
mod routes;

use std::sync::Arc;

use switchyard_bus_client::{Service, ServiceSettings};
use switchyard_kit::server::Listeners;
use switchyard_kit::{Migration, Migrations, Shutdown};

pub use catch_up::rebuild;

/// The read model's tables (the platform adds its messaging tables).
pub static MIGRATIONS: Migrations = Migrations(&[
    Migration {
        version: 2,
        description: "read model",
        sqlite: include_str!("../migrations/sqlite.sql"),
        postgres: include_str!("../migrations/postgres.sql"),
    },
    Migration::both(
        3,
        "replicas and log order",
        include_str!("../migrations/replicas.sql"),
    ),
]);

/// Runs the service on `listeners` until `shutdown`.
pub async fn launch(
    settings: ServiceSettings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let service = Service::start(settings, &MIGRATIONS, &shutdown).await?;
    let model = read_model::ReadModel::new(service.state().db);
    model.spawn_watch(&shutdown);
    let applier = Arc::new(apply::Applier::new(model.clone()));
    applier
        .position()
        .clone()
        .spawn_saver(model.db.clone(), &shutdown);
    catch_up::spawn(service.bus().clone(), applier.clone(), &shutdown);
    service
        .run(
            routes::router(model, shutdown.stop_token()),
            Some(applier),
            listeners,
        )
        .await
}

/// The service as the binary runs it (`serve`, `migrate`, `up`), registered in the registry.
pub static ENTRY: switchyard_bus_client::ServiceEntry = switchyard_bus_client::ServiceEntry {
    name: "query",
    migrations: &[&switchyard_bus_client::outbox::MESSAGING, &MIGRATIONS],
    run: |start| start.run(launch),
};
