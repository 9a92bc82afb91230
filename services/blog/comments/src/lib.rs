//! The comments service (port 4001 in the blog's contract).
//!
//! * `GET /posts/:id/comments` → 200 `[{"id", "content", "status"}]` (`[]` for an unknown post);
//! * `POST /posts/:id/comments` `{"content"}` → 201 with the post's whole comment list, the new
//!   one last with `status: "pending"`; `CommentCreated` is committed with it (outbox);
//! * `POST /events` ← the bus: on `CommentModerated`, sets the comment's status and publishes
//!   `CommentUpdated`, once per event (inbox); a moderation of an unknown comment is ignored.

mod handler;
pub use handler::CONSUMES;
mod routes;

use std::sync::Arc;

use switchyard_bus_client::{Service, ServiceSettings};
use switchyard_kit::server::Listeners;
use switchyard_kit::{Migration, Migrations, Shutdown};

/// The service's own tables (the platform adds its messaging tables).
pub static MIGRATIONS: Migrations = Migrations(&[Migration {
    version: 2,
    description: "comments",
    sqlite: include_str!("../migrations/sqlite.sql"),
    postgres: include_str!("../migrations/postgres.sql"),
}]);

/// Runs the service on `listeners` until `shutdown`.
pub async fn launch(
    settings: ServiceSettings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let service = Service::start(settings, &MIGRATIONS, &shutdown).await?;
    let state = service.state();
    let handler = Arc::new(handler::Moderations(state.clone()));
    service
        .run(routes::router(state), Some(handler), listeners)
        .await
}

/// The service as the binary runs it (`serve`, `migrate`, `up`), registered in the registry.
pub static ENTRY: switchyard_bus_client::ServiceEntry = switchyard_bus_client::ServiceEntry {
    name: "comments",
    migrations: &[&switchyard_bus_client::outbox::MESSAGING, &MIGRATIONS],
    run: |start| start.run(launch),
};
