//! The bus a service talks to, chosen by configuration (`EVENT_BUS_URL`): every backend
//! sits behind [`Bus`], so services have one code path whatever the backend.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use switchyard_events::Envelope;
use switchyard_kit::config::{check_url, check_url_list};
use switchyard_kit::{BusSecret, ConfigError, Env, Metrics, ReadinessCheck, Shutdown};

use crate::consumer::EventHandler;
use crate::consumer_settings::ConsumerSettings;
use crate::http_bus::HttpBus;
use crate::nats_bus::{
    DEFAULT_STREAM, DEFAULT_SUBJECT_PREFIX, NatsBus, check_stream_name, check_subject_prefix,
};

/// Default bus address for the embedded setup.
pub const DEFAULT_BUS_URL: &str = "http://127.0.0.1:4005";

/// Where the bus is: `EVENT_BUS_URL` (`http(s)://` the HTTP event bus, `nats://` NATS
/// JetStream), and for NATS the stream (`BUS_STREAM`, default `BLOG`) and the subject prefix
/// (`BUS_SUBJECT_PREFIX`, default `blog`). How the service proves it is one of the app's:
/// the HTTP bus's shared secret (`EVENT_BUS_SECRET`), or its NATS user (`NATS_USER`,
/// `NATS_PASSWORD`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    pub url: String,
    pub stream: String,
    pub subject_prefix: String,
    /// The HTTP bus's shared secret, if the app has one.
    pub secret: Option<BusSecret>,
    /// The service's NATS user, if the server has users.
    pub credentials: Option<NatsCredentials>,
    /// How long the NATS stream keeps an event (`EVENTS_MAX_AGE_SECONDS`; `None`: for
    /// ever). The HTTP bus applies its own setting of the same name.
    pub max_age: Option<std::time::Duration>,
    /// How many servers of a NATS cluster keep each stream (`BUS_STREAM_REPLICAS`, 1 to 5,
    /// default 1).
    pub stream_replicas: usize,
    /// Whether this client only reads the bus (the console): it then never creates or
    /// changes the NATS streams, which its user may not.
    pub watch_only: bool,
}

/// A NATS user and its password (`NATS_USER`, `NATS_PASSWORD`; `Debug` hides the password).
#[derive(Clone, PartialEq, Eq)]
pub struct NatsCredentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for NatsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCredentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl NatsCredentials {
    /// `NATS_USER` and `NATS_PASSWORD`: both or neither.
    pub fn from_env(env: &Env) -> Result<Option<NatsCredentials>, ConfigError> {
        match (env.raw("NATS_USER"), env.raw("NATS_PASSWORD")) {
            (None, None) => Ok(None),
            (Some(user), Some(password)) => Ok(Some(NatsCredentials {
                user: user.trim().to_string(),
                password,
            })),
            (Some(_), None) => Err(ConfigError::Missing {
                name: "NATS_PASSWORD".to_string(),
                hint: " (NATS_USER is set)".to_string(),
            }),
            (None, Some(_)) => Err(ConfigError::Missing {
                name: "NATS_USER".to_string(),
                hint: " (NATS_PASSWORD is set)".to_string(),
            }),
        }
    }
}

impl BusConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url: String = env.parse_or("EVENT_BUS_URL", DEFAULT_BUS_URL.to_string())?;
        // One HTTP bus, or one NATS server or several of one cluster (comma-separated).
        if url.contains(',') {
            check_url_list("EVENT_BUS_URL", &url, &["nats"])?;
        } else {
            check_url("EVENT_BUS_URL", &url, &["http", "https", "nats"])?;
        }
        let stream_replicas: usize = env.parse_or("BUS_STREAM_REPLICAS", 1)?;
        if !(1..=5).contains(&stream_replicas) {
            return Err(ConfigError::Malformed {
                name: "BUS_STREAM_REPLICAS".to_string(),
                value: stream_replicas.to_string(),
                reason: "JetStream keeps a stream on 1 to 5 servers".to_string(),
            });
        }
        let stream: String = env.parse_or("BUS_STREAM", DEFAULT_STREAM.to_string())?;
        check_stream_name(&stream).map_err(|reason| ConfigError::Malformed {
            name: "BUS_STREAM".to_string(),
            value: stream.clone(),
            reason,
        })?;
        let subject_prefix: String =
            env.parse_or("BUS_SUBJECT_PREFIX", DEFAULT_SUBJECT_PREFIX.to_string())?;
        check_subject_prefix(&subject_prefix).map_err(|reason| ConfigError::Malformed {
            name: "BUS_SUBJECT_PREFIX".to_string(),
            value: subject_prefix.clone(),
            reason,
        })?;
        Ok(BusConfig {
            url: url.trim_end_matches('/').to_string(),
            stream,
            subject_prefix,
            secret: BusSecret::from_env(env)?,
            credentials: NatsCredentials::from_env(env)?,
            max_age: switchyard_kit::config::retention(env, "EVENTS_MAX_AGE_SECONDS")?,
            stream_replicas,
            watch_only: false,
        })
    }

    /// The same bus, reached with `secret` (the HTTP bus's).
    pub fn with_secret(mut self, secret: Option<BusSecret>) -> Self {
        self.secret = secret;
        self
    }

    /// The same bus, only read: its streams are taken as they are, never created or
    /// changed (the console, whose NATS user may only read).
    pub fn watching(mut self) -> Self {
        self.watch_only = true;
        self
    }

    /// The same bus, reached as the NATS user `credentials`.
    pub fn with_credentials(mut self, credentials: Option<NatsCredentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// The HTTP event bus at `url`.
    pub fn http(url: impl Into<String>) -> Self {
        BusConfig {
            url: url.into(),
            stream: DEFAULT_STREAM.to_string(),
            subject_prefix: DEFAULT_SUBJECT_PREFIX.to_string(),
            secret: None,
            credentials: None,
            max_age: None,
            stream_replicas: 1,
            watch_only: false,
        }
    }

    /// NATS JetStream at `url` (`nats://host:port`), with the stream `stream` and subjects
    /// under `subject_prefix`.
    pub fn nats(
        url: impl Into<String>,
        stream: impl Into<String>,
        subject_prefix: impl Into<String>,
    ) -> Self {
        BusConfig {
            url: url.into(),
            stream: stream.into(),
            subject_prefix: subject_prefix.into(),
            secret: None,
            credentials: None,
            max_age: None,
            stream_replicas: 1,
            watch_only: false,
        }
    }

    /// True when the URL names a NATS server.
    pub fn is_nats(&self) -> bool {
        self.url.starts_with("nats://")
    }

    /// Connects the configured backend.
    pub async fn connect(&self) -> anyhow::Result<Bus> {
        if self.is_nats() {
            let bus = NatsBus::connect_as(
                &self.url,
                &self.stream,
                &self.subject_prefix,
                self.credentials.as_ref(),
            )
            .await?
            .with_max_age(self.max_age)
            .with_stream_replicas(self.stream_replicas)
            .watching(self.watch_only);
            Ok(Bus::Nats(Arc::new(bus)))
        } else {
            Ok(Bus::Http(Arc::new(HttpBus::with_secret(
                &self.url,
                self.secret.clone(),
            )?)))
        }
    }
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The bus is down, overloaded or misrouted: the outbox relay retries, in order.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The bus judged the event malformed (a 4xx): retrying cannot help, so the relay sets
    /// the event aside in the service's `outbox_dead_letters` and goes on.
    #[error("bus refused the event ({status}): {body}")]
    Refused { status: u16, body: String },
}

impl PublishError {
    /// Classifies an HTTP answer that is not a success: 4xx is a refusal, except the
    /// statuses that mean "not now" (404/405 misrouted or starting, 408, 409, 425, 429).
    pub fn from_status(status: u16, body: String) -> Self {
        if (400..500).contains(&status) && !matches!(status, 404 | 405 | 408 | 409 | 425 | 429) {
            PublishError::Refused { status, body }
        } else {
            PublishError::Unavailable(format!("answered {status}: {body}"))
        }
    }
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
    /// NATS JetStream: each service pulls from its durable consumer.
    Nats(Arc<NatsBus>),
}

impl Bus {
    /// Where the outbox relay publishes.
    pub fn publisher(&self) -> Arc<dyn Publisher> {
        match self {
            Bus::Http(b) => b.clone(),
            Bus::Nats(b) => b.clone(),
        }
    }

    /// The bus's state: reported by `/readyz` (never deciding it) and watched for the
    /// `switchyard_bus_up` gauge.
    pub fn health(&self) -> Arc<dyn ReadinessCheck> {
        match self {
            Bus::Http(b) => b.clone(),
            Bus::Nats(b) => b.clone(),
        }
    }

    /// Starts feeding `handler` with the events of the consumer group `consumer.group`
    /// (one group per service, shared by its replicas). With the HTTP bus there is nothing
    /// to start: the bus posts to the service's `POST /events`, which the service builder
    /// mounts for the HTTP bus only.
    /// With NATS, a durable pull consumer of that name is consumed in the background until
    /// `shutdown` (see [`crate::nats_bus`]).
    pub async fn start_consuming(
        &self,
        consumer: &ConsumerSettings,
        handler: Arc<dyn EventHandler>,
        metrics: Metrics,
        shutdown: &Shutdown,
    ) -> anyhow::Result<()> {
        match self {
            Bus::Http(_) => {
                let _ = (consumer, handler, metrics, shutdown);
                Ok(())
            }
            Bus::Nats(b) => {
                b.start_consuming(consumer, handler, metrics, shutdown);
                Ok(())
            }
        }
    }

    /// One page of the log: events with `seq > after`, oldest first, at most `limit`
    /// (catch-up and rebuilds).
    pub async fn page(&self, after: i64, limit: u32) -> anyhow::Result<Vec<Envelope>> {
        match self {
            Bus::Http(b) => b.page(after, limit).await,
            Bus::Nats(b) => b.page(after, limit).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_urls_and_names_are_read_from_the_environment() {
        let c = BusConfig::from_env(&Env::from_pairs([
            ("EVENT_BUS_URL", "nats://127.0.0.1:4222"),
            ("BUS_STREAM", "SHOP"),
            ("BUS_SUBJECT_PREFIX", "shop.v1"),
        ]))
        .expect("config");
        assert!(c.is_nats());
        assert_eq!(
            c,
            BusConfig::nats("nats://127.0.0.1:4222", "SHOP", "shop.v1")
        );
        let d = BusConfig::from_env(&Env::from_pairs([("EVENT_BUS_URL", "nats://h:4222")]))
            .expect("config");
        assert_eq!(
            (d.stream.as_str(), d.subject_prefix.as_str()),
            ("BLOG", "blog")
        );
        let h = BusConfig::from_env(&Env::from_pairs::<[(&str, &str); 0], &str, &str>([]))
            .expect("config");
        assert!(!h.is_nats());
        assert_eq!(h.url, DEFAULT_BUS_URL);
        assert_eq!(h.stream_replicas, 1);
        let cluster = BusConfig::from_env(&Env::from_pairs([
            (
                "EVENT_BUS_URL",
                "nats://a:4222, nats://b:4222,nats://c:4222",
            ),
            ("BUS_STREAM_REPLICAS", "3"),
        ]))
        .expect("config");
        assert!(cluster.is_nats());
        assert_eq!(cluster.stream_replicas, 3);
    }

    #[test]
    fn bad_bus_settings_name_the_variable() {
        for (name, value) in [
            ("EVENT_BUS_URL", "amqp://h"),
            // Several servers are a NATS cluster's; the HTTP bus is one.
            ("EVENT_BUS_URL", "http://a:4005,http://b:4005"),
            ("EVENT_BUS_URL", "nats://a:4222,"),
            ("BUS_STREAM", "a.b"),
            ("BUS_SUBJECT_PREFIX", "a.*"),
            ("BUS_STREAM_REPLICAS", "0"),
            ("BUS_STREAM_REPLICAS", "6"),
            ("BUS_STREAM_REPLICAS", "three"),
        ] {
            let err =
                BusConfig::from_env(&Env::from_pairs([(name, value)])).expect_err("malformed");
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}
