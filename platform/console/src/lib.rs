//! The console of a running app: what `switchyard up` starts beside its services and
//! `switchyard console <app>` starts against one already running.
//!
//! * **Map**: the app's services from the registry, the events each sends and receives,
//!   with live counts (events seen on the bus, events each service applied).
//! * **Event log**: every event the bus takes, live (server-sent events), filtered by
//!   type, entity id and correlation id; one event's **journey**: committed, published,
//!   appended, delivered and applied by each consumer, with times.
//! * **Waterfall**: a request's trace across services, from the spans the services export
//!   to the console (it is an OTLP/HTTP receiver: `OTEL_EXPORTER_OTLP_ENDPOINT` names it).
//! * **Consumers**: each one's position and lag, its deferred events and dead letters,
//!   with replay (the `switchyard dead-letters` operations); on NATS also JetStream's
//!   advisories.
//!
//! What it keeps is bounded (`CONSOLE_KEEP_EVENTS`, `CONSOLE_KEEP_SPANS`); it owns no
//! database and reads the bus as the services' peer, never on their public routes.

mod assets;
mod consumers;
mod journey;
mod map;
mod routes;
mod settings;
mod tap;

pub use map::{AppMap, MapService};
pub use settings::Settings;
pub use tap::{Observed, Tap};

use std::sync::Arc;

use switchyard_kit::server::Listeners;
use switchyard_kit::{HttpStack, Metrics, Shutdown};
use switchyard_otlp_receiver::SpanStore;

/// Runs the console on `listeners` until `shutdown`.
pub async fn launch(
    settings: Settings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let common = settings.common.clone();
    let bus = settings.bus.connect().await?;
    let spans = Arc::new(SpanStore::new(settings.keep_spans));
    let tap = Tap::start(bus.clone(), settings.keep_events, &shutdown);
    let advisories = consumers::Advisories::start(&bus, &shutdown);
    let state = routes::Console {
        map: Arc::new(settings.map.clone()),
        bus,
        bus_ops: settings.bus_ops.clone(),
        replay: settings.replay,
        tap,
        spans,
        advisories,
        live_streams: Arc::new(tokio::sync::Semaphore::new(routes::MAX_LIVE_STREAMS)),
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()?,
    };
    let stack = HttpStack::new(&common, Metrics::new(&common.service));
    let router = switchyard_kit::page::with_security_headers(
        stack.wrap(routes::router(state)),
        axum::http::HeaderValue::from_static(switchyard_kit::page::STRICT_POLICY),
    );
    tracing::info!(app = %settings.map.app, "console ready");
    switchyard_kit::serve(
        listeners,
        router,
        stack.ops_router_with(
            &shutdown,
            switchyard_kit::openapi::route(&assets::openapi(&common.service)),
        ),
        shutdown,
        common.shutdown_grace,
    )
    .await
}
