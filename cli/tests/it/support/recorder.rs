//! A subscriber for bus tests: a real HTTP server that records every event it receives,
//! and can be told to refuse or reject.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util_like::Stopper;

/// What the recorder answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Accept,
    /// 503 to everything.
    Unavailable,
}

#[derive(Clone, Default)]
pub struct Recorded {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    events: Vec<Value>,
    mode: Option<Mode>,
    /// Events with this data.reject field answer 400.
    reject_marker: Option<String>,
    /// Events with this data.mark answer 425 ("not yet") this many more times.
    defer: Option<(String, usize)>,
    /// Deliveries answered 425.
    deferred: usize,
    /// The `Authorization` header of each delivery recorded, in order.
    authorizations: Vec<Option<String>>,
}

impl Recorded {
    pub fn events(&self) -> Vec<Value> {
        self.inner.lock().expect("lock").events.clone()
    }
    pub fn len(&self) -> usize {
        self.inner.lock().expect("lock").events.len()
    }
    pub fn seqs(&self) -> Vec<i64> {
        self.events()
            .iter()
            .map(|e| e["seq"].as_i64().expect("seq"))
            .collect()
    }
    pub fn set_mode(&self, mode: Mode) {
        self.inner.lock().expect("lock").mode = Some(mode);
    }
    pub fn reject_marked(&self, marker: &str) {
        self.inner.lock().expect("lock").reject_marker = Some(marker.to_string());
    }
    /// Answers 425 Too Early to the events marked `marker`, `times` times (usize::MAX:
    /// always), as a versioned replica does for an update whose predecessor is missing.
    pub fn defer_marked(&self, marker: &str, times: usize) {
        self.inner.lock().expect("lock").defer = Some((marker.to_string(), times));
    }
    /// The `Authorization` header each recorded delivery came with.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.inner.lock().expect("lock").authorizations.clone()
    }
    /// How many deliveries were answered 425.
    pub fn deferred(&self) -> usize {
        self.inner.lock().expect("lock").deferred
    }
}

async fn receive(
    State(rec): State<Recorded>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return StatusCode::BAD_REQUEST,
    };
    let mut inner = rec.inner.lock().expect("lock");
    if inner.mode == Some(Mode::Unavailable) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if let Some(marker) = &inner.reject_marker
        && value["data"]["mark"].as_str() == Some(marker.as_str())
    {
        return StatusCode::BAD_REQUEST;
    }
    let marked_for_deferral = matches!(
        &inner.defer,
        Some((marker, left)) if *left > 0 && value["data"]["mark"].as_str() == Some(marker.as_str())
    );
    if marked_for_deferral {
        if let Some((_, left)) = inner.defer.as_mut()
            && *left != usize::MAX
        {
            *left -= 1;
        }
        inner.deferred += 1;
        return StatusCode::TOO_EARLY;
    }
    inner.events.push(value);
    inner.authorizations.push(
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    );
    StatusCode::OK
}

/// A recorder serving on `listener` until stopped.
pub struct Recorder {
    pub url: String,
    pub port: u16,
    pub recorded: Recorded,
    stopper: Stopper,
}

impl Recorder {
    pub async fn start(listener: TcpListener, recorded: Recorded) -> Recorder {
        let port = listener.local_addr().expect("addr").port();
        let app = Router::new()
            .route("/events", post(receive))
            .with_state(recorded.clone());
        let stopper = Stopper::spawn(listener, app);
        Recorder {
            url: format!("http://127.0.0.1:{port}"),
            port,
            recorded,
            stopper,
        }
    }

    pub async fn stop(self) {
        self.stopper.stop().await;
    }
}

mod tokio_util_like {
    use axum::Router;
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    pub struct Stopper {
        tx: oneshot::Sender<()>,
        task: JoinHandle<()>,
    }

    impl Stopper {
        pub fn spawn(listener: TcpListener, app: Router) -> Stopper {
            let (tx, rx) = oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.await;
                    })
                    .await;
            });
            Stopper { tx, task }
        }

        pub async fn stop(self) {
            let _ = self.tx.send(());
            // Idle keep-alive connections are closed by the graceful shutdown.
            let _ = self.task.await;
        }
    }
}
