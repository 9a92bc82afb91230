//! What every event-driven service is built on: its own database (migrated), its metrics,
//! the bus connection, the outbox relay, and serving with readiness on database and bus.

use std::sync::Arc;

use axum::Router;
use switchyard_kit::{
    CommonConfig, ConfigError, Db, Env, HttpStack, Metrics, Migrations, Shutdown,
};
use tokio::net::TcpListener;

use crate::bus::{Bus, BusConfig};
use crate::consumer::{EventHandler, events_route};
use crate::outbox::Outbox;

/// The settings of a service that talks to the bus: the common ones and the bus's.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub common: CommonConfig,
    pub bus: BusConfig,
}

impl ServiceSettings {
    /// Reads them for `service`, whose contract port is `default_port`.
    pub fn from_env(env: &Env, service: &str, default_port: u16) -> Result<Self, ConfigError> {
        Ok(ServiceSettings {
            common: CommonConfig::from_env(env, service, default_port)?,
            bus: BusConfig::from_env(env)?,
        })
    }
}

/// A started service's shared parts.
pub struct Foundation {
    pub service: &'static str,
    pub db: Db,
    pub metrics: Metrics,
    pub bus: Bus,
    pub outbox: Outbox,
}

impl Foundation {
    /// Opens the database, connects the bus and, for a service that publishes events,
    /// starts the outbox relay.
    pub async fn start(
        service: &'static str,
        common: &CommonConfig,
        bus: &BusConfig,
        migrations: &Migrations,
        publishes: bool,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Self> {
        let db = Db::open(common, migrations).await?;
        let metrics = Metrics::new(service);
        let bus = bus.connect().await?;
        let outbox = Outbox::new(db.clone());
        if publishes {
            outbox.spawn_relay(bus.publisher(), metrics.clone(), shutdown);
        }
        Ok(Foundation {
            service,
            db,
            metrics,
            bus,
            outbox,
        })
    }

    /// Feeds `handler` from the bus: `POST /events` (mounted by [`Foundation::serve`]) and,
    /// with a bus that is consumed rather than pushing, the service's consumer group.
    pub async fn consume(
        &self,
        handler: Arc<dyn EventHandler>,
        shutdown: &Shutdown,
    ) -> anyhow::Result<()> {
        self.bus
            .start_consuming(self.service, handler, self.metrics.clone(), shutdown)
            .await
    }

    /// Serves `app` and `POST /events` (for `handler`) on `listener` until `shutdown`, ready
    /// while the database and the bus are reachable; then closes the database.
    pub async fn serve(
        self,
        common: &CommonConfig,
        app: Router,
        handler: Arc<dyn EventHandler>,
        listener: TcpListener,
        shutdown: Shutdown,
    ) -> anyhow::Result<()> {
        let app = app.merge(events_route(handler, self.metrics.clone()));
        let router = HttpStack::new(common, self.metrics)
            .ready_when(Arc::new(self.db.clone()))
            .ready_when(self.bus.readiness())
            .wrap(app);
        let result = switchyard_kit::serve(listener, router, shutdown, common.shutdown_grace).await;
        self.db.close().await;
        result
    }
}
