//! Client of the HTTP event bus (`POST /events`, `GET /events?after=&limit=`, `/healthz`).

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use switchyard_events::Envelope;
use switchyard_kit::{BusSecret, ReadinessCheck};

use crate::bus::{PublishError, Publisher};

/// The HTTP event bus at a base URL.
#[derive(Debug, Clone)]
pub struct HttpBus {
    base: String,
    client: reqwest::Client,
    /// Sent with every request when the app has one.
    secret: Option<BusSecret>,
}

impl HttpBus {
    /// The bus at `base`, reached without a secret.
    pub fn new(base: &str) -> anyhow::Result<Self> {
        HttpBus::with_secret(base, None)
    }

    /// The bus at `base`, reached with the app's shared secret.
    pub fn with_secret(base: &str, secret: Option<BusSecret>) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()?;
        Ok(HttpBus {
            base: base.trim_end_matches('/').to_string(),
            client,
            secret,
        })
    }

    /// A request to the bus, carrying the secret.
    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, url);
        match &self.secret {
            Some(secret) => request.header(reqwest::header::AUTHORIZATION, secret.authorization()),
            None => request,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// One page of the log: events with `seq > after`, oldest first, at most `limit`.
    pub async fn page(&self, after: i64, limit: u32) -> anyhow::Result<Vec<Envelope>> {
        let url = format!("{}/events?after={after}&limit={limit}", self.base);
        let mut request = self.request(reqwest::Method::GET, &url);
        // A reader's trace (the console reads under an unsampled one: no span per poll).
        if let Some(reading) = switchyard_kit::trace_context::current() {
            request = request.header(switchyard_events::TRACEPARENT, reading.header());
        }
        let response = request.send().await?;
        let status = response.status();
        if !status.is_success() {
            anyhow::bail!("GET {url} answered {status}");
        }
        let values: Vec<serde_json::Value> = response.json().await?;
        values
            .into_iter()
            .map(|v| Envelope::from_value(v).map_err(|e| anyhow::anyhow!("bad event in log: {e}")))
            .collect()
    }
}

impl ReadinessCheck for HttpBus {
    fn name(&self) -> &'static str {
        "bus"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            // The bus's operational endpoints are on a port of their own; the cheapest
            // request of its public API that touches its log says it can take events.
            let url = format!("{}/events?after={}&limit=1", self.base, i64::MAX);
            // A probe every few seconds from every service: never a trace of its own.
            let unsampled = switchyard_events::TraceContext::unsampled().header();
            match self
                .request(reqwest::Method::GET, &url)
                .header(switchyard_events::TRACEPARENT, unsampled)
                .timeout(Duration::from_secs(1))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("bus answered {}", r.status())),
                Err(e) => Err(format!("bus unreachable: {e}")),
            }
        })
    }
}

impl Publisher for HttpBus {
    fn publish<'a>(
        &'a self,
        _event_type: &'a str,
        _event_id: &'a str,
        body: Bytes,
    ) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(async move {
            let mut request = self
                .request(reqwest::Method::POST, &format!("{}/events", self.base))
                .header("content-type", "application/json");
            // The relay's publish span, when exported: the bus's append hangs under it.
            if let Some(publishing) = switchyard_kit::trace_context::current() {
                request = request.header(switchyard_events::TRACEPARENT, publishing.header());
            }
            let response = request
                .body(body)
                .send()
                .await
                .map_err(|e| PublishError::Unavailable(e.to_string()))?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else {
                let body = response.text().await.unwrap_or_default();
                Err(PublishError::from_status(
                    status.as_u16(),
                    body.chars().take(300).collect(),
                ))
            }
        })
    }
}
