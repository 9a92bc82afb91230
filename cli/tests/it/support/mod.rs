//! Test support: services started in-process on port 0, each with its own data directory,
//! talking over real HTTP; and the real binary for process-level tests.
#![allow(dead_code)]

pub mod backend;
pub mod blog;
pub mod faults;
pub mod http;
pub mod load;
pub mod nats_server;
pub mod nemesis;
pub mod process;
pub mod recorder;
pub mod ticketing;
pub mod ticketing_load;
pub mod up;
pub mod webdriver;

pub use switchyard_testkit::fake_stripe;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use switchyard_kit::Shutdown;
use switchyard_kit::server::Listeners;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Default deadline for conditions in tests.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A service running in this process.
pub struct Running {
    pub addr: SocketAddr,
    /// Where its `/healthz`, `/readyz` and `/metrics` answer.
    pub ops_addr: SocketAddr,
    shutdown: Shutdown,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ops_url(&self) -> String {
        format!("http://{}", self.ops_addr)
    }

    /// Graceful stop (as SIGTERM does); returns the service's result.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        self.task.await?
    }

    /// Abrupt stop: the task is dropped wherever it is (in-flight work is lost, as in a crash),
    /// and its background loops (relay, consumers) are told to stop at once.
    pub async fn kill(self) {
        self.task.abort();
        self.shutdown.background_token().cancel();
        let _ = self.task.await;
    }
}

/// Binds 127.0.0.1:`port` (0 for any), retrying briefly while a just-closed port is released.
pub async fn listener(port: u16) -> TcpListener {
    let mut last = None;
    for _ in 0..100 {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => return l,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot bind port {port}: {last:?}");
}

/// A service's listeners: its API on 127.0.0.1:`port` (0 for any), its ops endpoints on
/// any free port.
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
    let ops_addr = listeners.ops.local_addr().expect("local addr");
    let shutdown = Shutdown::new();
    let task = tokio::spawn(launch(listeners, shutdown.clone()));
    Running {
        addr,
        ops_addr,
        shutdown,
        task,
    }
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
