//! The ticketing app's payments service (port 3000 in the cluster, `payments-srv`).
//!
//! * `POST /api/payments` (signed in) `{token, orderId}` → 201 `{id}`: charges the order's
//!   price in cents, in `usd`, with the card token through the payment provider, stores
//!   `Payment {id, orderId, stripeId}` and commits `payment:created` with it (outbox).
//!   400 listing every missing field; 404 unknown order; 401 another user's order; 400
//!   "Cannot pay for an cancelled order"; 400 "Order has already been paid"; 400 with the
//!   provider's message for a declined card or an invalid token; 503 when the provider
//!   cannot be reached;
//! * `POST /events` ← the bus (group `payments-service`): a replica of orders, inserted on
//!   `order:created`, cancelled on `order:cancelled` of the next version only (an older one
//!   is ignored, a gap is deferred until the missing version arrived), each event once.
//!
//! The original let an order be paid twice (two requests, or a retry). Here an order has at
//! most one successful payment: the `pay` module's charge attempts make it so under
//! concurrent requests, retries, crashes and a cancellation during the charge.

mod handler;
pub use handler::CONSUMES;
mod pay;
pub mod provider;
mod routes;
mod verdict;

use std::sync::Arc;

use switchyard_bus_client::{Service, ServiceSettings};
use switchyard_kit::server::Listeners;
use switchyard_kit::{ConfigError, Env, Migration, Migrations, Shutdown};
use switchyard_session::{SessionConfig, Sessions};

use crate::provider::{PaymentProvider, ProviderConfig};

/// The service's own tables (the platform adds its messaging tables).
pub static MIGRATIONS: Migrations = Migrations(&[
    Migration {
        version: 2,
        description: "orders replica, charge attempts, payments",
        sqlite: include_str!("../migrations/sqlite.sql"),
        postgres: include_str!("../migrations/postgres.sql"),
    },
    Migration {
        version: 3,
        description: "paid or expired, decided here",
        sqlite: include_str!("../migrations/verdicts.sql"),
        postgres: include_str!("../migrations/verdicts.sql"),
    },
]);

/// The service's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub service: ServiceSettings,
    pub session: SessionConfig,
    pub provider: ProviderConfig,
}

impl Settings {
    /// Reads the settings beside `service` (`JWT_KEY` is required; `STRIPE_KEY` too with
    /// `PAYMENT_PROVIDER=stripe`).
    pub fn from_env(env: &Env, service: ServiceSettings) -> Result<Self, ConfigError> {
        Ok(Settings {
            service,
            session: SessionConfig::from_env(env)?,
            provider: ProviderConfig::from_env(env)?,
        })
    }
}

/// Runs the service on `listeners` until `shutdown`, with the configured provider.
pub async fn launch(
    settings: Settings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let provider = settings.provider.build()?;
    launch_with(settings, provider, listeners, shutdown).await
}

/// Runs the service with `provider` instead of the configured one (tests that watch the
/// charges, embedding).
pub async fn launch_with(
    settings: Settings,
    provider: Arc<dyn PaymentProvider>,
    listeners: Listeners,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let sessions = Sessions::new(settings.session.clone())?;
    let service = Service::start(settings.service, &MIGRATIONS, &shutdown).await?;
    let state = pay::Payments {
        service: service.state(),
        provider,
        grace: settings.provider.attempt_grace,
        expiry_margin: settings.provider.expiry_margin,
        max_attempts: settings.provider.max_attempts,
    };
    verdict::spawn_sweeper(service.state(), settings.provider.sweep_grace, &shutdown);
    // Attempts left pending by a crash are settled in the background, not only when a
    // later request for the same order happens to come.
    let settler = state.clone();
    let stop = shutdown.background_token();
    shutdown.spawn("settle stale charge attempts", async move {
        let every = settler.grace.max(std::time::Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match settler.settle_stale().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(settled = n, "charge attempts left pending settled"),
                Err(e) => tracing::warn!(error = %e, "settling charge attempts left pending"),
            }
        }
    });
    let handler = Arc::new(handler::Orders(service.state()));
    service
        .run(routes::router(state, sessions), Some(handler), listeners)
        .await
}

/// The service as the binary runs it (`serve`, `migrate`, `up`), registered in the registry.
pub static ENTRY: switchyard_bus_client::ServiceEntry = switchyard_bus_client::ServiceEntry {
    name: "payments",
    migrations: &[&switchyard_bus_client::outbox::MESSAGING, &MIGRATIONS],
    run: |start| start.run(launch),
};

impl switchyard_bus_client::StartSettings for Settings {
    fn from_start(start: &switchyard_bus_client::Start) -> Result<Self, ConfigError> {
        Settings::from_env(&start.env, start.service_settings()?)
    }
}
