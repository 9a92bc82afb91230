//! The service builder: what every event-driven service is built on.
//!
//! [`Service::start`] opens the service's own database and runs its migrations together
//! with the platform's messaging tables (outbox, inbox, dead letters), connects the bus and
//! starts the outbox relay. [`Service::run`] is given the service's routes and its event
//! handler once: with the HTTP bus it mounts `POST /events` (where that bus pushes, taking
//! only deliveries that carry the app's `EVENT_BUS_SECRET` when it has one); with NATS it
//! starts the consumer group instead and mounts no such route. It serves the routes on the
//! public listener and `/healthz`, `/readyz` (the service's own database; the bus is
//! reported, not decisive), `/metrics` and `/openapi.json` (the routes' OpenAPI document,
//! built from the same `OpenApiRouter` that serves them) on the ops listener, and closes
//! the database when the service stops.
//!
//! ```ignore
//! let service = Service::start(settings, &MIGRATIONS, &shutdown).await?;
//! let state = service.state();
//! service.run(routes::router(state.clone()), Some(Arc::new(Handler(state))), listeners).await
//! ```

use std::sync::Arc;

use futures_util::future::BoxFuture;
use switchyard_events::Envelope;
use switchyard_kit::server::Listeners;
use switchyard_kit::spans::{Kind, Span};
use switchyard_kit::trace_context;
use switchyard_kit::{
    CommonConfig, ConfigError, Db, Env, HttpStack, Metrics, Migrations, ReadinessCheck, Shutdown,
    openapi,
};
use utoipa_axum::router::OpenApiRouter;

use crate::bus::{Bus, BusConfig};
use crate::consumer::{EventHandler, HandleError, Handled, events_route};
use crate::consumer_settings::ConsumerSettings;
use crate::outbox::{MESSAGING, Outbox};
use crate::retention::{Expiring, INBOX, Retention};

/// The settings of a service that talks to the bus: the common ones, the bus's, and its
/// consumer's when it consumes events.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub common: CommonConfig,
    pub bus: BusConfig,
    pub consumer: Option<ConsumerSettings>,
    /// How long records of finished work are kept (`RETENTION_DAYS`).
    pub retention: Retention,
}

impl ServiceSettings {
    /// Reads the bus settings and the consumer's overrides from `env`, beside `common`;
    /// `consumer` carries the registry's defaults.
    pub fn from_env(
        env: &Env,
        common: CommonConfig,
        consumer: Option<ConsumerSettings>,
    ) -> Result<Self, ConfigError> {
        Ok(ServiceSettings {
            common,
            bus: BusConfig::from_env(env)?,
            consumer: consumer.map(|c| c.with_env(env)).transpose()?,
            retention: Retention::from_env(env)?,
        })
    }
}

/// What a service's handlers and routes share: its database, its outbox and its metrics.
#[derive(Clone)]
pub struct ServiceState {
    pub db: Db,
    pub outbox: Outbox,
    pub metrics: Metrics,
}

/// A started service.
pub struct Service {
    settings: ServiceSettings,
    state: ServiceState,
    bus: Bus,
    shutdown: Shutdown,
    /// Tables whose old rows are deleted (the inbox, and the service's own).
    expiring: Vec<Expiring>,
}

impl Service {
    /// Opens the database (migrated with the messaging tables), connects the bus and
    /// starts the outbox relay (it sleeps until a change with events commits).
    pub async fn start(
        settings: ServiceSettings,
        migrations: &Migrations,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Service> {
        let db = Db::open(&settings.common, &[&MESSAGING, migrations]).await?;
        let metrics = Metrics::new(&settings.common.service);
        let bus = settings.bus.connect().await?;
        let outbox = Outbox::new(db.clone());
        outbox.spawn_relay(bus.publisher(), metrics.clone(), shutdown);
        Ok(Service {
            settings,
            state: ServiceState {
                db,
                outbox,
                metrics,
            },
            bus,
            shutdown: shutdown.clone(),
            expiring: vec![INBOX],
        })
    }

    /// Deletes `table`'s rows once they are older than the retention, like the inbox's.
    pub fn expire(mut self, table: Expiring) -> Self {
        self.expiring.push(table);
        self
    }

    /// The state to give handlers and routes.
    pub fn state(&self) -> ServiceState {
        self.state.clone()
    }

    /// The connected bus (catch-up reads its log).
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    pub fn settings(&self) -> &ServiceSettings {
        &self.settings
    }

    /// Serves `routes` and feeds `handler` (a service that consumes nothing gives `None`:
    /// `POST /events` then acknowledges every well-formed event unhandled) until shutdown;
    /// then closes the database.
    pub async fn run(
        self,
        routes: OpenApiRouter,
        handler: Option<Arc<dyn EventHandler>>,
        listeners: Listeners,
    ) -> anyhow::Result<()> {
        let Service {
            settings,
            state,
            bus,
            shutdown,
            expiring,
        } = self;
        crate::retention::spawn(state.db.clone(), expiring, settings.retention, &shutdown);
        let filter = settings.consumer.clone();
        let endpoint: Arc<dyn EventHandler> = match &handler {
            Some(h) => Arc::new(Filtered {
                inner: h.clone(),
                consumer: filter.clone(),
            }),
            None => Arc::new(IgnoresEvents),
        };
        if let (Some(_), Some(consumer)) = (handler, &settings.consumer) {
            bus.start_consuming(consumer, endpoint.clone(), state.metrics.clone(), &shutdown)
                .await?;
        }
        // The HTTP bus delivers to `POST /events`; with NATS nothing is delivered over HTTP,
        // so there is no such route to forge events through.
        let routes = match &bus {
            Bus::Http(_) => {
                if settings.bus.secret.is_none() {
                    tracing::warn!(
                        "EVENT_BUS_SECRET is not set: POST /events takes events from anyone who reaches this port"
                    );
                }
                routes.merge(events_route(
                    endpoint,
                    state.metrics.clone(),
                    settings.bus.secret.clone(),
                ))
            }
            Bus::Nats(_) => routes,
        };
        let (app, doc) = routes.split_for_parts();
        let doc = openapi::document(&settings.common.service, doc);
        // Ready means the service can take requests: its own database answers. The bus is
        // reported beside it and watched for a gauge, never decisive: while it is away the
        // outbox keeps every write's events, which is what it is for.
        let health = bus.health();
        watch_bus(health.clone(), state.metrics.clone(), &shutdown);
        let stack = HttpStack::new(&settings.common, state.metrics.clone())
            .ready_when(Arc::new(state.db.clone()))
            .report(health);
        let result = switchyard_kit::serve(
            listeners,
            stack.wrap(app),
            stack.ops_router_with(&shutdown, openapi::route(&doc)),
            shutdown,
            settings.common.shutdown_grace,
        )
        .await;
        state.db.close().await;
        result
    }
}

/// How often the bus's state is checked for `switchyard_bus_up`.
const BUS_WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Checks the bus every few seconds: sets `switchyard_bus_up` and logs each change.
fn watch_bus(health: Arc<dyn ReadinessCheck>, metrics: Metrics, shutdown: &Shutdown) {
    let stop = shutdown.background_token();
    shutdown.spawn("bus-watch", async move {
        let mut was_up: Option<bool> = None;
        loop {
            let outcome =
                match tokio::time::timeout(std::time::Duration::from_secs(2), health.check()).await
                {
                    Ok(outcome) => outcome,
                    Err(_) => Err("no answer within 2 s".to_string()),
                };
            let up = outcome.is_ok();
            metrics.set_bus_up(up);
            match (was_up, outcome) {
                (Some(true) | None, Err(why)) => {
                    tracing::warn!(%why, "the bus is unreachable; writes go on, their events wait in the outbox")
                }
                (Some(false), Ok(())) => tracing::info!("the bus is reachable again"),
                _ => {}
            }
            was_up = Some(up);
            tokio::select! {
                _ = tokio::time::sleep(BUS_WATCH_EVERY) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
}

/// A handler that sees only the event types its service consumes (the HTTP bus filters
/// too; this keeps a misconfigured subscriber harmless).
struct Filtered {
    inner: Arc<dyn EventHandler>,
    consumer: Option<ConsumerSettings>,
}

impl EventHandler for Filtered {
    fn handle(&self, event: Envelope) -> BoxFuture<'_, Result<Handled, HandleError>> {
        if self
            .consumer
            .as_ref()
            .is_some_and(|c| !c.accepts(&event.event_type))
        {
            return Box::pin(async { Ok(Handled::Ignored) });
        }
        // The work is a span of the event's trace (a new one for an event that carries
        // none, as the course's services send them): what it publishes carries it on. Its
        // parent is the delivery when that is of the same trace (the HTTP bus's delivery
        // request, NATS's delivery), else the span that published the event.
        let published_by = event.trace_context();
        let parent = match (trace_context::current(), published_by) {
            (Some(delivery), Some(event)) if delivery.trace_id() == event.trace_id() => {
                Some(delivery)
            }
            (_, Some(event)) => Some(event),
            (delivery, None) => delivery,
        };
        let mut span = Span::start(
            || format!("apply {}", event.event_type),
            Kind::Consumer,
            parent,
        );
        if span.is_exported() {
            span.set("messaging.destination.name", event.event_type.clone());
            span.set("messaging.message.id", event.id.clone());
        }
        let context = span.context();
        let id = event.id.clone();
        let event_type = event.event_type.clone();
        let correlation = event.correlation_id.clone().unwrap_or_default();
        // The per-hop timeline (`switchyard-bench hops`) reads these at trace level.
        tracing::trace!(event_id = %id, event_type = %event_type, correlation_id = %correlation, "event received");
        Box::pin(trace_context::scope(context, async move {
            // Created inside the scope: whatever the handler does at once is in the trace.
            let outcome = self.inner.handle(event).await;
            if let Ok(Handled::Applied) = outcome {
                tracing::info!(
                    event_type = %event_type,
                    event_id = %id,
                    correlation_id = %correlation,
                    trace_id = %context.trace_id(),
                    "event applied"
                );
            }
            let how = match &outcome {
                Ok(h) => h.as_str(),
                Err(_) => "error",
            };
            span.set("switchyard.outcome", how);
            if let Err(e) = &outcome {
                span.fail(e.to_string());
            }
            drop(span);
            tracing::trace!(event_id = %id, correlation_id = %correlation, outcome = how, "event handled");
            outcome
        }))
    }
}

/// The handler of a service that consumes nothing.
struct IgnoresEvents;

impl EventHandler for IgnoresEvents {
    fn handle(&self, _event: Envelope) -> BoxFuture<'_, Result<Handled, HandleError>> {
        Box::pin(async { Ok(Handled::Ignored) })
    }
}
