//! The bus a service talks to, chosen by configuration.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use switchyard_kit::config::check_url;
use switchyard_kit::{ConfigError, Env, ReadinessCheck};

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
    pub fn connect(&self) -> anyhow::Result<Arc<HttpBus>> {
        Ok(Arc::new(HttpBus::new(&self.url)?))
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
pub trait Publisher: Send + Sync + ReadinessCheck {
    fn publish<'a>(
        &'a self,
        event_type: &'a str,
        event_id: &'a str,
        body: Bytes,
    ) -> BoxFuture<'a, Result<(), PublishError>>;
}
