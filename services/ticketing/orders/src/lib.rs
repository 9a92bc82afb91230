//! The ticketing app's orders service (port 3000 in the cluster).
//!
//! * `POST /api/orders` (signed in) `{ticketId}` → 201 the order
//!   `{id, userId, status: "created", expiresAt, ticket: {id, title, price, version}, version}`;
//!   publishes `order:created`. 404 for an unknown ticket, 400 "Ticket is already reserved";
//! * `GET /api/orders` (signed in) → 200, the user's orders, tickets embedded, oldest first;
//! * `GET /api/orders/:orderId` (signed in) → 200, 404, or 401 for another user's order;
//! * `DELETE /api/orders/:orderId` (signed in) → 204, the order cancelled; publishes
//!   `order:cancelled` (not again for an order already cancelled); 400 for a paid order.
//! * `POST /events` ← the bus (group `orders-service`): `ticket:created` and
//!   `ticket:updated` keep the replica of tickets, in version order; payments' verdict
//!   completes an order (`payment:created`) or cancels it (`payment:expired`).
//!
//! One ticket has at most one live order (created, awaiting payment or complete): a partial
//! unique index says so, so two buyers racing for a ticket get one order between them even
//! with several replicas of the service on one PostgreSQL database.

mod handler;
pub use handler::CONSUMES;
mod order;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use switchyard_bus_client::{Service, ServiceSettings};
use switchyard_kit::server::Listeners;
use switchyard_kit::{ConfigError, Env, Migration, Migrations, Shutdown};
use switchyard_session::{SessionConfig, Sessions};

/// The service's own tables (the platform adds its messaging tables).
pub static MIGRATIONS: Migrations = Migrations(&[
    Migration {
        version: 2,
        description: "orders and the replica of tickets",
        sqlite: include_str!("../migrations/sqlite.sql"),
        postgres: include_str!("../migrations/postgres.sql"),
    },
    Migration {
        version: 3,
        description: "live orders by expiry",
        sqlite: LIVE_BY_EXPIRY,
        postgres: LIVE_BY_EXPIRY,
    },
    Migration {
        version: 4,
        description: "the title and price an order was placed at",
        sqlite: "ALTER TABLE orders ADD COLUMN ticket_title TEXT; ALTER TABLE orders ADD COLUMN ticket_price REAL;",
        postgres: "ALTER TABLE orders ADD COLUMN ticket_title TEXT; ALTER TABLE orders ADD COLUMN ticket_price DOUBLE PRECISION;",
    },
    // A user's orders are kept between changes (ReadCache); on PostgreSQL every replica's
    // cache hears of the others' changes.
    Migration::postgres_only(
        5,
        "orders and tickets notify their changes",
        switchyard_bus_client::change_notices!("orders", "tickets"),
    ),
]);

const LIVE_BY_EXPIRY: &str = "CREATE INDEX orders_live_by_expiry ON orders (expires_at) WHERE status IN ('created', 'awaiting:payment');";

/// How long an order reserves its ticket before it expires, unless configured: the
/// original's 15 minutes.
pub const DEFAULT_EXPIRATION_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The longest window accepted: an order that holds a ticket for more than a year is a
/// misconfiguration, and the bound keeps the expiry time far from any overflow.
pub const MAX_EXPIRATION_WINDOW: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The service's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub service: ServiceSettings,
    pub session: SessionConfig,
    /// `EXPIRATION_WINDOW_SECONDS` (default 900): an order's `expiresAt` is its creation
    /// time plus this.
    pub expiration_window: Duration,
}

impl Settings {
    /// Reads the session settings and the expiration window beside `service`
    /// (`JWT_KEY` is required).
    pub fn from_env(env: &Env, service: ServiceSettings) -> Result<Self, ConfigError> {
        let seconds: u64 = env.parse_or(
            "EXPIRATION_WINDOW_SECONDS",
            DEFAULT_EXPIRATION_WINDOW.as_secs(),
        )?;
        let malformed = |reason: String| ConfigError::Malformed {
            name: "EXPIRATION_WINDOW_SECONDS".into(),
            value: seconds.to_string(),
            reason,
        };
        if seconds == 0 {
            return Err(malformed("must be greater than 0".into()));
        }
        if seconds > MAX_EXPIRATION_WINDOW.as_secs() {
            return Err(malformed(format!(
                "must be at most {} (a year)",
                MAX_EXPIRATION_WINDOW.as_secs()
            )));
        }
        Ok(Settings {
            service,
            session: SessionConfig::from_env(env)?,
            expiration_window: Duration::from_secs(seconds),
        })
    }
}

/// Runs the service on `listeners` until `shutdown`.
pub async fn launch(
    settings: Settings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    // Checked before the database is opened: a bad key stops the start with nothing done.
    let sessions = Sessions::new(settings.session)?;
    let service = Service::start(settings.service, &MIGRATIONS, &shutdown).await?;
    let state = service.state();
    let handler = Arc::new(handler::Events(state.clone()));
    // A user's orders read the orders with their tickets.
    let lists = switchyard_bus_client::ReadCache::for_database(
        &state.db,
        &["orders", "tickets"],
        &shutdown,
    )
    .await?;
    let routes = routes::router(routes::OrdersState {
        lists: Arc::new(lists),
        service: state,
        expiration_window: settings.expiration_window,
        sessions,
    });
    service.run(routes, Some(handler), listeners).await
}

/// The service as the binary runs it (`serve`, `migrate`, `up`), registered in the registry.
pub static ENTRY: switchyard_bus_client::ServiceEntry = switchyard_bus_client::ServiceEntry {
    name: "orders",
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
            common: CommonConfig::for_data_dir("orders", "/tmp/unused"),
            bus: BusConfig::http("http://127.0.0.1:1"),
            consumer: None,
            retention: Default::default(),
        }
    }

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_env(&Env::from_pairs(pairs.iter().copied()), service())
    }

    #[test]
    fn the_window_defaults_to_fifteen_minutes_and_can_be_set() {
        let s =
            settings(&[("JWT_KEY", "test-key-123-test-key-123-test-key-123")]).expect("settings");
        assert_eq!(s.expiration_window, Duration::from_secs(900));
        let s = settings(&[
            ("JWT_KEY", "test-key-123-test-key-123-test-key-123"),
            ("EXPIRATION_WINDOW_SECONDS", "60"),
        ])
        .expect("settings");
        assert_eq!(s.expiration_window, Duration::from_secs(60));
    }

    #[test]
    fn bad_settings_name_the_variable() {
        for (pairs, name) in [
            (
                &[
                    ("JWT_KEY", "test-key-123-test-key-123-test-key-123"),
                    ("EXPIRATION_WINDOW_SECONDS", "0"),
                ][..],
                "EXPIRATION_WINDOW_SECONDS",
            ),
            (
                &[
                    ("JWT_KEY", "test-key-123-test-key-123-test-key-123"),
                    ("EXPIRATION_WINDOW_SECONDS", "soon"),
                ][..],
                "EXPIRATION_WINDOW_SECONDS",
            ),
            (
                &[
                    ("JWT_KEY", "test-key-123-test-key-123-test-key-123"),
                    ("EXPIRATION_WINDOW_SECONDS", "-5"),
                ][..],
                "EXPIRATION_WINDOW_SECONDS",
            ),
            (
                &[
                    ("JWT_KEY", "test-key-123-test-key-123-test-key-123"),
                    ("EXPIRATION_WINDOW_SECONDS", "999999999999"),
                ][..],
                "EXPIRATION_WINDOW_SECONDS",
            ),
            (&[("EXPIRATION_WINDOW_SECONDS", "60")][..], "JWT_KEY"),
        ] {
            let err = settings(pairs).expect_err(name);
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}
