//! Test support: the in-process event bus, a recorder subscriber, services started on
//! port 0 in this process and talked to over real HTTP.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;
use switchyard_event_bus::{Settings, Subscriber};
use switchyard_kit::Shutdown;
use switchyard_kit::server::Listeners;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Default deadline for conditions.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A service running in this process.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: Shutdown,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful stop (as SIGTERM does); returns the service's result.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        self.task.await?
    }
}

/// Binds 127.0.0.1:`port` (0 for any), retrying briefly while a just-closed port is released.
pub async fn listener(port: u16) -> TcpListener {
    let mut last = None;
    for _ in 0..200 {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => return l,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot bind port {port}: {last:?}");
}

/// A service's listeners: its API on `port` (0 for any), its ops endpoints on any port.
pub async fn listeners(port: u16) -> Listeners {
    Listeners {
        public: listener(port).await,
        ops: listener(0).await,
    }
}

/// Starts a service's `launch` on `listeners`.
pub fn start<F, Fut>(listeners: Listeners, launch: F) -> Running
where
    F: FnOnce(Listeners, Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    switchyard_kit::telemetry::init_for_tests();
    let addr = listeners.public.local_addr().expect("local addr");
    let shutdown = Shutdown::new();
    let task = tokio::spawn(launch(listeners, shutdown.clone()));
    Running {
        addr,
        shutdown,
        task,
    }
}

/// The event bus in this process, delivering to `subscribers`, checking ticketing payloads.
pub async fn bus(dir: &std::path::Path, subscribers: Vec<Subscriber>) -> Running {
    let mut settings = Settings::for_test(dir, subscribers);
    settings.payload_check = Some(switchyard_ticketing_contract::check_payload);
    start(listeners(0).await, move |l, s| {
        switchyard_event_bus::launch(settings, l, s)
    })
}

/// A subscriber for `url` taking only `types`.
pub fn subscriber(name: &str, url: &str, types: &[&str]) -> Subscriber {
    let mut s = Subscriber::new(name, url);
    s.types = Some(types.iter().map(|t| t.to_string()).collect());
    s
}

/// An event the recorder received, and when (wall-clock milliseconds).
#[derive(Debug, Clone)]
pub struct Received {
    pub event: Value,
    pub at_ms: i64,
}

/// A subscriber that records every event delivered to it.
#[derive(Clone)]
pub struct Recorder {
    pub url: String,
    events: Arc<Mutex<Vec<Received>>>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let listener = listener(0).await;
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let events: Arc<Mutex<Vec<Received>>> = Arc::default();
        let app = axum::Router::new()
            .route("/events", post(record))
            .with_state(events.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Recorder { url, events }
    }

    pub fn all(&self) -> Vec<Received> {
        self.events.lock().expect("lock").clone()
    }

    /// The events of `event_type` whose `data[field] == value`.
    pub fn matching(&self, event_type: &str, field: &str, value: &str) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|r| r.event["type"] == event_type && r.event["data"][field] == value)
            .collect()
    }
}

async fn record(
    State(events): State<Arc<Mutex<Vec<Received>>>>,
    body: axum::body::Bytes,
) -> StatusCode {
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    events.lock().expect("lock").push(Received {
        event,
        at_ms: now_ms(),
    });
    StatusCode::OK
}

/// Publishes `event` through the bus at `bus_url`.
pub async fn publish(client: &reqwest::Client, bus_url: &str, event: &Value) {
    let answer = client
        .post(format!("{bus_url}/events"))
        .json(event)
        .send()
        .await
        .expect("publish");
    assert_eq!(answer.status(), 200, "the bus took {event}");
}

/// Waits until `check` gives `Some`, failing the test after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match switchyard_kit::wait::until(what, DEADLINE, check).await {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).expect("ms"))
        .expect("clock")
}

/// RFC 3339 with milliseconds, as `Date.toISOString()` writes it.
pub fn iso(ms: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).expect("time");
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}
