//! The ticketing app's expiration service (`expiration-depl`, no Service: it has no API).
//!
//! * `POST /events` ← the bus (group `expiration-service`): on `order:created`, stores a
//!   timer for the order, due at its `expiresAt`, once per event (inbox); a second
//!   `order:created` for the same order keeps the first timer;
//! * a background loop fires each timer when it comes due: in one transaction it marks the
//!   timer fired and commits `expiration:complete {orderId}` to the outbox.
//!
//! The original kept its timers in Redis (Bull): they vanished with Redis, and NATS 2.9 has
//! no scheduled messages to replace them. Here the service's database is the timer: a timer
//! that came due while the service was down fires at the next start, and replicas sharing
//! one PostgreSQL database claim timers with `FOR UPDATE SKIP LOCKED`, so each fires once.
//! A duplicate `expiration:complete` (a crash between commit and acknowledgement of the
//! outbox relay) is harmless: orders ignores an expiration of an order already cancelled.
//!
//! Besides `POST /events`, the service builder serves `/healthz`, `/readyz` and `/metrics`
//! on the ops listener.

mod handler;
pub use handler::CONSUMES;
mod timers;

use std::sync::Arc;

use switchyard_bus_client::retention::Expiring;
use switchyard_bus_client::{Service, ServiceSettings};
use switchyard_kit::server::Listeners;
use switchyard_kit::{Migration, Migrations, Shutdown};
use utoipa_axum::router::OpenApiRouter;

/// The service's own tables (the platform adds its messaging tables).
pub static MIGRATIONS: Migrations = Migrations(&[Migration {
    version: 2,
    description: "expiration timers",
    sqlite: include_str!("../migrations/sqlite.sql"),
    postgres: include_str!("../migrations/postgres.sql"),
}]);

/// Runs the service on `listeners` until `shutdown`.
pub async fn launch(
    settings: ServiceSettings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    // A fired timer is kept while its order:created may be delivered again (it must not
    // set the timer a second time): no longer than the bus keeps events.
    let service = Service::start(settings, &MIGRATIONS, &shutdown)
        .await?
        .expire(Expiring {
            table: "expiration_timers",
            key: "order_id",
            written_at: "fired_at",
            only_if: "fired = 1",
        });
    let state = service.state();
    let timers = timers::Timers::new(state.clone());
    // Started before the routes: timers that came due while the service was down fire now.
    timers.spawn(&shutdown);
    let handler = Arc::new(handler::OrderCreated { state, timers });
    service
        .run(OpenApiRouter::new(), Some(handler), listeners)
        .await
}

/// The service as the binary runs it (`serve`, `migrate`, `up`), registered in the registry.
pub static ENTRY: switchyard_bus_client::ServiceEntry = switchyard_bus_client::ServiceEntry {
    name: "expiration",
    migrations: &[&switchyard_bus_client::outbox::MESSAGING, &MIGRATIONS],
    run: |start| start.run(launch),
};
