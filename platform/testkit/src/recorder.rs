//! A subscriber that records every event the bus delivers to it.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;

/// An event the recorder received, and when (wall-clock milliseconds, [`now_ms`]).
#[derive(Debug, Clone)]
pub struct Received {
    pub event: Value,
    pub at_ms: i64,
}

/// A subscriber that records every event delivered to its `POST /events`, answering 200.
#[derive(Clone)]
pub struct Recorder {
    /// Its URL, for a [`switchyard_event_bus::Subscriber`].
    pub url: String,
    events: Arc<Mutex<Vec<Received>>>,
}

impl Recorder {
    /// Serves on a port of its own for as long as the test's runtime runs.
    pub async fn start() -> Recorder {
        let listener = crate::listener(0).await;
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

    /// Everything received, in the order it arrived.
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

/// Wall-clock milliseconds since the Unix epoch (the clock [`Received::at_ms`] is read on).
pub fn now_ms() -> i64 {
    switchyard_kit::clock::unix_millis()
}
