//! The ticketing app's tickets service (port 3000 in the cluster).
//!
//! * `POST /api/tickets` (signed in) `{title, price}` → 201 the ticket
//!   `{id, title, price, userId, version}`; publishes `ticket:created`;
//! * `GET /api/tickets` → 200, the tickets no order reserves, oldest first;
//! * `GET /api/tickets/:id` → 200 the ticket (with `orderId` while reserved), or 404;
//! * `PUT /api/tickets/:id` (signed in) `{title, price}` → 200 the ticket at the next
//!   version; publishes `ticket:updated`. Checks, in this order: 401 signed out, 400
//!   validation, 404 unknown, 400 "Cannot edit a reserved ticket", 401 not the owner.
//! * `POST /events` ← the bus (group `tickets-service`): `order:created` reserves the
//!   ticket (sets its `orderId`), `order:cancelled` frees it if that order still holds
//!   it; either change bumps the version and publishes `ticket:updated`, once per event.
//!
//! Every change bumps the ticket's `version` by one and is applied only to the version it
//! was computed from (optimistic concurrency), so the orders service's replica, which
//! applies `ticket:updated` strictly in version order, never misses or reorders a change.

mod handler;
pub use handler::CONSUMES;
mod routes;
mod ticket;

use std::sync::Arc;

use switchyard_bus_client::retention::Expiring;
use switchyard_bus_client::{ReadCache, Service, ServiceSettings};
use switchyard_kit::server::Listeners;
use switchyard_kit::{ConfigError, Env, Migration, Migrations, Shutdown};
use switchyard_session::{SessionConfig, Sessions};

/// The service's own tables (the platform adds its messaging tables).
pub static MIGRATIONS: Migrations = Migrations(&[
    Migration {
        version: 2,
        description: "tickets",
        sqlite: include_str!("../migrations/sqlite.sql"),
        postgres: include_str!("../migrations/postgres.sql"),
    },
    Migration::both(
        3,
        "cancelled orders",
        include_str!("../migrations/cancelled_orders.sql"),
    ),
    // The list of tickets is kept between changes (ReadCache); on PostgreSQL every
    // replica's cache hears of the others' changes.
    Migration::postgres_only(
        4,
        "tickets notify their changes",
        switchyard_bus_client::change_notices!("tickets"),
    ),
]);

/// The service's settings: the bus and consumer settings, and the session keys.
#[derive(Debug, Clone)]
pub struct Settings {
    pub service: ServiceSettings,
    pub session: SessionConfig,
}

impl Settings {
    /// Reads the session settings beside `service` (`JWT_KEY` is required: the service
    /// refuses to start without it rather than treat every request as signed out).
    pub fn from_env(env: &Env, service: ServiceSettings) -> Result<Self, ConfigError> {
        Ok(Settings {
            service,
            session: SessionConfig::from_env(env)?,
        })
    }
}

/// Republishes the whole state of every ticket (or of `only`) as `ticket:updated` at its
/// current version, marked as a snapshot: a replica that lost an update (a dead letter
/// nobody replayed) accepts it when it is newer than what it holds. The events go through
/// the service's own outbox, after whatever it has pending, so the running service (or
/// its next start) publishes them in order. Returns how many were written.
pub async fn republish(db: &switchyard_kit::Db, only: Option<&str>) -> anyhow::Result<usize> {
    let outbox = switchyard_bus_client::Outbox::new(db.clone());
    let ids: Vec<String> = match only {
        Some(id) => vec![id.to_string()],
        None => {
            sqlx::query_scalar("SELECT id FROM tickets ORDER BY ord")
                .fetch_all(db.reader())
                .await?
        }
    };
    let mut written = 0;
    for chunk in ids.chunks(100) {
        // Read first, then write: the change's first statement takes the write lock (a
        // read snapshot upgraded to a write fails on SQLite when another process wrote).
        // A ticket changed in between is published again by its own change, newer.
        let mut snapshots = Vec::with_capacity(chunk.len());
        for id in chunk {
            let mut reader = db.reader().acquire().await?;
            let Some(ticket) = ticket::Ticket::find(&mut reader, id).await? else {
                anyhow::bail!("no ticket {id}");
            };
            snapshots.push(switchyard_ticketing_contract::as_snapshot(
                ticket.updated(Some(format!("republish-{id}"))),
            ));
        }
        let mut change = outbox.begin().await?;
        for event in &snapshots {
            change.publish(event).await?;
            written += 1;
        }
        change.commit().await?;
    }
    Ok(written)
}

/// Runs the service on `listeners` until `shutdown`.
pub async fn launch(
    settings: Settings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    // Checked before the database is opened: a bad key stops the start with nothing done.
    let sessions = Sessions::new(settings.session)?;
    // A tombstone is needed while the order's creation may still arrive: no longer than
    // the bus keeps events, well within the retention.
    let service = Service::start(settings.service, &MIGRATIONS, &shutdown)
        .await?
        .expire(Expiring {
            table: "cancelled_orders",
            key: "order_id",
            written_at: "at",
            only_if: "",
        });
    let state = service.state();
    let handler = Arc::new(handler::Orders(state.clone()));
    // The list reads the tickets table only.
    let cache = ReadCache::for_database(&state.db, &["tickets"], &shutdown).await?;
    service
        .run(
            routes::router(state, Arc::new(cache), sessions),
            Some(handler),
            listeners,
        )
        .await
}

/// The service as the binary runs it (`serve`, `migrate`, `up`), registered in the registry.
pub static ENTRY: switchyard_bus_client::ServiceEntry = switchyard_bus_client::ServiceEntry {
    name: "tickets",
    migrations: &[&switchyard_bus_client::outbox::MESSAGING, &MIGRATIONS],
    run: |start| start.run(launch),
};

impl switchyard_bus_client::StartSettings for Settings {
    fn from_start(start: &switchyard_bus_client::Start) -> Result<Self, ConfigError> {
        Settings::from_env(&start.env, start.service_settings()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_bus_client::BusConfig;
    use switchyard_kit::CommonConfig;

    fn service() -> ServiceSettings {
        ServiceSettings {
            common: CommonConfig::for_data_dir("tickets", "/tmp/unused"),
            bus: BusConfig::http("http://127.0.0.1:1"),
            consumer: None,
            retention: Default::default(),
        }
    }

    #[test]
    fn jwt_key_is_required() {
        let err =
            Settings::from_env(&Env::from_pairs([("X", "y")]), service()).expect_err("no JWT_KEY");
        assert!(err.to_string().contains("JWT_KEY"), "{err}");
        let s = Settings::from_env(
            &Env::from_pairs([("JWT_KEY", "test-key-123-test-key-123-test-key-123")]),
            service(),
        )
        .expect("settings");
        assert_eq!(s.session.key, b"test-key-123-test-key-123-test-key-123");
    }
}
