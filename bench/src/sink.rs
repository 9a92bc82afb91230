//! Subscribers that record what the bus delivers: four axum servers on their own runtime
//! (a dedicated thread), so their receive timestamps do not wait behind the publishers.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use serde::Deserialize;

use crate::procs::lock;

/// One delivery a sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub seq: i64,
    pub at: Instant,
}

#[derive(Default)]
pub struct SinkState {
    pub received: Mutex<Vec<Received>>,
}

impl SinkState {
    /// Takes everything received so far.
    pub fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *lock(&self.received))
    }
}

#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    id: String,
    #[serde(default)]
    seq: Option<i64>,
}

async fn events(State(state): State<Arc<SinkState>>, body: Bytes) -> impl IntoResponse {
    let at = Instant::now();
    if let Ok(head) = serde_json::from_slice::<Head>(&body) {
        lock(&state.received).push(Received {
            id: head.id,
            seq: head.seq.unwrap_or(-1),
            at,
        });
    }
    ([(header::CONTENT_TYPE, "application/json")], "{}")
}

/// Four (or `n`) sinks; stopped when dropped.
pub struct Sinks {
    pub states: Vec<Arc<SinkState>>,
    pub ports: Vec<u16>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sinks {
    pub fn start(n: usize) -> anyhow::Result<Sinks> {
        let mut listeners = Vec::new();
        for _ in 0..n {
            let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a sink")?;
            l.set_nonblocking(true)?;
            listeners.push(l);
        }
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<Vec<_>, _>>()?;
        let states: Vec<Arc<SinkState>> = (0..n).map(|_| Arc::new(SinkState::default())).collect();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sink")
            .enable_all()
            .build()
            .context("sink runtime")?;
        let thread_states = states.clone();
        let thread = std::thread::Builder::new()
            .name("sinks".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut servers = Vec::new();
                    for (l, state) in listeners.into_iter().zip(thread_states) {
                        let Ok(l) = tokio::net::TcpListener::from_std(l) else {
                            continue;
                        };
                        let app = Router::new()
                            .route("/events", post(events))
                            .with_state(state);
                        servers.push(tokio::spawn(async move {
                            let _ = axum::serve(l, app).await;
                        }));
                    }
                    let _ = stopped.await;
                    for s in servers {
                        s.abort();
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .context("sink thread")?;
        Ok(Sinks {
            states,
            ports,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `SUBSCRIBERS` for the bus: `s0=http://127.0.0.1:p0,...`.
    pub fn subscribers_env(&self) -> String {
        self.ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("s{i}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Clears every sink's records.
    pub fn clear(&self) {
        for s in &self.states {
            s.take();
        }
    }
}

impl Drop for Sinks {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
