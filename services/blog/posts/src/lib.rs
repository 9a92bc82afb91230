//! The posts service (port 4000 in the blog's contract).
//!
//! * `GET /posts` → 200 `{ "<id>": {"id", "title"} }` in creation order;
//! * `POST /posts/create` `{"title"}` → 201 `{"id", "title"}`; the post and its
//!   `PostCreated` event are committed together (outbox), so the answer is 201 even while
//!   the bus is down, and the event reaches the bus when it is back;
//! * `POST /events` ← the bus; posts consumes no event type and answers 200 `{}`.

mod routes;

use switchyard_bus_client::{Service, ServiceSettings};
use switchyard_kit::server::Listeners;
use switchyard_kit::{Migration, Migrations, Shutdown};

/// The service's own tables (the platform adds its messaging tables).
pub static MIGRATIONS: Migrations = Migrations(&[Migration {
    version: 2,
    description: "posts",
    sqlite: include_str!("../migrations/sqlite.sql"),
    postgres: include_str!("../migrations/postgres.sql"),
}]);

/// Runs the service on `listeners` until `shutdown`. Posts consumes no event: its
/// `POST /events` acknowledges every well-formed one.
pub async fn launch(
    settings: ServiceSettings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let service = Service::start(settings, &MIGRATIONS, &shutdown).await?;
    let state = service.state();
    service.run(routes::router(state), None, listeners).await
}

/// The service as the binary runs it (`serve`, `migrate`, `up`), registered in the registry.
pub static ENTRY: switchyard_bus_client::ServiceEntry = switchyard_bus_client::ServiceEntry {
    name: "posts",
    migrations: &[&switchyard_bus_client::outbox::MESSAGING, &MIGRATIONS],
    run: |start| start.run(launch),
};
