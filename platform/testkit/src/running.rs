//! Services started in this process on local ports, talked to over real HTTP.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use switchyard_kit::server::Listeners;
use switchyard_kit::{CommonConfig, Shutdown};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How long [`listener`] keeps trying a port that is still held.
const BIND_DEADLINE: Duration = Duration::from_secs(5);

/// A service running in this process.
pub struct Running {
    /// Its API.
    pub addr: SocketAddr,
    /// Its operational endpoints (`/healthz`, `/readyz`, `/metrics`).
    pub ops_addr: SocketAddr,
    shutdown: Shutdown,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Starts a service's `launch` on `listeners` (a task of this runtime).
    pub fn start<F, Fut>(listeners: Listeners, launch: F) -> Running
    where
        F: FnOnce(Listeners, Shutdown) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        switchyard_kit::telemetry::init_for_tests();
        let addr = listeners.public.local_addr().expect("addr");
        let ops_addr = listeners.ops.local_addr().expect("addr");
        let shutdown = Shutdown::new();
        let service = launch(listeners, shutdown.clone());
        let task = tokio::spawn(async move {
            let result = service.await;
            // Shown with the test's output when it fails (a service that stopped at start
            // is otherwise only a readiness timeout).
            if let Err(e) = &result {
                eprintln!("a service stopped with an error: {e:#}");
            }
            result
        });
        Running {
            addr,
            ops_addr,
            shutdown,
            task,
        }
    }

    /// Its API's URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its operational endpoints' URL.
    pub fn ops_url(&self) -> String {
        format!("http://{}", self.ops_addr)
    }

    /// Waits until its `/readyz` answers 200 (failing the test after [`crate::DEADLINE`]).
    pub async fn wait_ready(&self, http: &reqwest::Client) {
        let url = format!("{}/readyz", self.ops_url());
        crate::eventually("the service to be ready", || async {
            let r = http.get(&url).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
    }

    /// Graceful stop (as SIGTERM does); returns the service's result.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        self.task.await?
    }

    /// Abrupt stop: the task is dropped wherever it is (in-flight work is lost, as in a
    /// crash), and its background loops (relay, consumers) are told to stop at once.
    pub async fn kill(self) {
        self.task.abort();
        self.shutdown.background_token().cancel();
        let _ = self.task.await;
    }
}

/// Binds 127.0.0.1:`port` (0 for any), trying again for a while when the port is still
/// held (a service on it just stopped).
pub async fn listener(port: u16) -> TcpListener {
    let last = Mutex::new(None);
    let last_error = &last;
    let bound =
        switchyard_kit::wait::until(&format!("port {port}"), BIND_DEADLINE, || async move {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => Some(l),
                Err(e) => {
                    *last_error.lock().expect("lock") = Some(e);
                    None
                }
            }
        })
        .await;
    match bound {
        Ok(l) => l,
        Err(e) => panic!(
            "cannot bind port {port}: {e} (last: {:?})",
            last.into_inner().ok().flatten()
        ),
    }
}

/// A service's listeners: its API on `port` (0 for any), its ops endpoints on any port.
pub async fn listeners(port: u16) -> Listeners {
    Listeners {
        public: listener(port).await,
        ops: listener(0).await,
    }
}

/// The listeners of a service's replicas, bound before anything starts so that the bus
/// (and the test) know where the first one will be.
pub struct Replicas {
    listeners: Vec<Listeners>,
}

impl Replicas {
    /// Binds `count` replicas' listeners (at least one) on 127.0.0.1, any free ports.
    pub async fn bind(count: usize) -> Replicas {
        let mut listeners = Vec::new();
        for _ in 0..count.max(1) {
            listeners.push(Listeners::local().await.expect("listeners"));
        }
        Replicas { listeners }
    }

    /// The first replica's API URL, where the bus delivers.
    pub fn first_url(&self) -> String {
        format!(
            "http://{}",
            self.listeners[0].public.local_addr().expect("addr")
        )
    }

    /// The configuration of replica `index` of `service`: its data in a directory of its
    /// own below `dir`, its database `database_url` when given (shared by the replicas;
    /// default SQLite in the data directory).
    pub fn config(
        service: &str,
        dir: &Path,
        index: usize,
        database_url: Option<&str>,
    ) -> CommonConfig {
        let mut common =
            CommonConfig::for_data_dir(service, dir.join(format!("{service}-{index}")));
        if let Some(url) = database_url {
            common.database_url = url.to_string();
        }
        common
    }

    /// Starts the replicas with `start(index, listeners)` (see [`Replicas::config`]), and returns once all are ready.
    /// The first starts alone, and the others once it is ready: it migrates the database
    /// (replicas migrating one PostgreSQL database at the same moment is the platform's
    /// concern, not what the tests are about).
    pub async fn start(
        self,
        http: &reqwest::Client,
        mut start: impl FnMut(usize, Listeners) -> Running,
    ) -> Vec<Running> {
        let mut replicas = Vec::new();
        for (i, listeners) in self.listeners.into_iter().enumerate() {
            let running = start(i, listeners);
            if i == 0 {
                running.wait_ready(http).await;
            }
            replicas.push(running);
        }
        for running in replicas.iter().skip(1) {
            running.wait_ready(http).await;
        }
        replicas
    }
}
