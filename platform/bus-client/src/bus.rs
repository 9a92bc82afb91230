//! The bus a service talks to, chosen by configuration (`EVENT_BUS_URL`): every backend
//! sits behind [`Bus`], so services have one code path whatever the backend.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use switchyard_events::Envelope;
use switchyard_kit::config::check_url;
use switchyard_kit::{ConfigError, Env, Metrics, ReadinessCheck, Shutdown};

use crate::consumer::EventHandler;
use crate::http_bus::HttpBus;

/// Default bus address for the embedded setup.
pub const DEFAULT_BUS_URL: &str = "http://127.0.0.1:4005";

/// Where the bus is (`EVENT_BUS_URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    pub url: String,
}

impl BusConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url: String = env.parse_or("EVENT_BUS_URL", DEFAULT_BUS_URL.to_string())?;
        check_url("EVENT_BUS_URL", &url, &["http", "https"])?;
        Ok(BusConfig {
            url: url.trim_end_matches('/').to_string(),
        })
    }

    pub fn http(url: impl Into<String>) -> Self {
        BusConfig { url: url.into() }
    }

    /// Connects the configured backend.
    pub async fn connect(&self) -> anyhow::Result<Bus> {
        Ok(Bus::Http(Arc::new(HttpBus::new(&self.url)?)))
    }
}

/// Why a publish failed; every failure is retried by the outbox relay.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("bus unreachable: {0}")]
    Unreachable(String),
    #[error("bus answered {status}: {body}")]
    Rejected { status: u16, body: String },
}

/// Hands events to the bus. An `Ok` means the bus has stored the event durably.
pub trait Publisher: Send + Sync {
    fn publish<'a>(
        &'a self,
        event_type: &'a str,
        event_id: &'a str,
        body: Bytes,
    ) -> BoxFuture<'a, Result<(), PublishError>>;
}

/// A connected bus backend.
#[derive(Clone)]
pub enum Bus {
    /// The HTTP event bus: it pushes events to each service's `POST /events`.
    Http(Arc<HttpBus>),
}

impl Bus {
    /// Where the outbox relay publishes.
    pub fn publisher(&self) -> Arc<dyn Publisher> {
        match self {
            Bus::Http(b) => b.clone(),
        }
    }

    /// What `/readyz` checks for the bus.
    pub fn readiness(&self) -> Arc<dyn ReadinessCheck> {
        match self {
            Bus::Http(b) => b.clone(),
        }
    }

    /// Starts feeding `handler` with the events of the consumer group `consumer` (one
    /// group per service, shared by its replicas). With the HTTP bus there is nothing to
    /// start: the bus posts to the service's `POST /events`, which every service mounts.
    pub async fn start_consuming(
        &self,
        consumer: &str,
        handler: Arc<dyn EventHandler>,
        metrics: Metrics,
        shutdown: &Shutdown,
    ) -> anyhow::Result<()> {
        match self {
            Bus::Http(_) => {
                let _ = (consumer, handler, metrics, shutdown);
                Ok(())
            }
        }
    }

    /// One page of the log: events with `seq > after`, oldest first, at most `limit`
    /// (catch-up and rebuilds).
    pub async fn page(&self, after: i64, limit: u32) -> anyhow::Result<Vec<Envelope>> {
        match self {
            Bus::Http(b) => b.page(after, limit).await,
        }
    }
}
