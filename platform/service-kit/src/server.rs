//! Serving with graceful shutdown.
//!
//! On SIGTERM or Ctrl-C: stop accepting, let in-flight requests finish, then stop the
//! background loops (outbox relays, deliveries) and wait for them, all within the grace
//! period; then return so the process exits 0.

use std::future::{Future, IntoFuture};
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The shutdown signal of one service instance and its background tasks.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    /// Cancelled when the service must stop accepting requests.
    stop: CancellationToken,
    /// Cancelled once requests are drained: background loops finish and return.
    background: CancellationToken,
    tasks: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// A shutdown triggered by SIGTERM or Ctrl-C.
    pub fn on_signals() -> Self {
        let shutdown = Shutdown::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received, draining");
            trigger.trigger();
        });
        shutdown
    }

    /// A shutdown that also fires when `parent` fires (one per service in a shared process).
    pub fn child_of(parent: &Shutdown) -> Self {
        Shutdown {
            stop: parent.stop.child_token(),
            background: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    pub fn trigger(&self) {
        self.stop.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Resolves when the service must stop accepting work.
    pub async fn stopping(&self) {
        self.stop.cancelled().await
    }

    /// The token background loops watch: cancelled after requests are drained.
    pub fn background_token(&self) -> CancellationToken {
        self.background.clone()
    }

    /// The token that fires when shutdown starts (for long-lived responses such as streams).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Spawns a background loop that is waited for on shutdown.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(async move {
            task.await;
            tracing::debug!(task = name, "background task finished");
        });
    }

    /// Stops background loops and waits for them, up to `grace`.
    pub async fn drain_background(&self, grace: Duration) {
        self.background.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                "background tasks did not finish within the grace period"
            );
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// A service's two listeners: its API, and its operational endpoints (`/healthz`,
/// `/readyz`, `/metrics`), which no Ingress routes to.
#[derive(Debug)]
pub struct Listeners {
    pub public: TcpListener,
    pub ops: TcpListener,
}

impl Listeners {
    /// Binds `HOST:PORT` and `HOST:OPS_PORT`, naming the service and the port in use.
    pub async fn bind(common: &crate::CommonConfig) -> anyhow::Result<Listeners> {
        Ok(Listeners {
            public: bind_one(&common.service, &common.bind_addr(), "PORT").await?,
            ops: bind_one(&common.service, &common.ops_bind_addr(), "OPS_PORT").await?,
        })
    }

    /// Both on 127.0.0.1, any free port (tests, benchmarks).
    pub async fn local() -> anyhow::Result<Listeners> {
        Ok(Listeners {
            public: TcpListener::bind("127.0.0.1:0").await?,
            ops: TcpListener::bind("127.0.0.1:0").await?,
        })
    }
}

async fn bind_one(service: &str, addr: &str, variable: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "{service}: address {addr} is already in use (another process has it; set {variable} to choose another port)"
            )
        } else {
            anyhow::anyhow!("{service}: cannot listen on {addr}: {e}")
        }
    })
}

/// Serves `public` and `ops` on `listeners` until shutdown, drains requests and background
/// tasks within `grace` (counted from the shutdown signal), and returns. The ops listener
/// stays up while the service drains (its `/readyz` then answers 503), and closes last.
pub async fn serve(
    listeners: Listeners,
    public: Router,
    ops: Router,
    shutdown: Shutdown,
    grace: Duration,
) -> anyhow::Result<()> {
    let ops_addr = listeners.ops.local_addr()?;
    let ops_stop = CancellationToken::new();
    let ops_server = {
        let stop = ops_stop.clone();
        tokio::spawn(
            axum::serve(listeners.ops, ops.into_make_service())
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .into_future(),
        )
    };
    tracing::info!(%ops_addr, "operational endpoints listening");
    let result = serve_one(listeners.public, public, shutdown, grace).await;
    ops_stop.cancel();
    match tokio::time::timeout(Duration::from_secs(1), ops_server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the ops listener failed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "the ops listener panicked"),
        Err(_) => tracing::debug!("the ops listener did not close within 1 s"),
    }
    result
}

/// Serves `router` on `listener` until shutdown, drains requests and background tasks
/// within `grace`, and returns.
async fn serve_one(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    grace: Duration,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    let stop = shutdown.clone();
    // Small request/response exchanges must not wait on Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stop.stopping().await });
    let mut server = std::pin::pin!(server.into_future());
    // Serve until the server fails or shutdown is triggered.
    let ended = tokio::select! {
        result = &mut server => Some(result),
        () = shutdown.stopping() => None,
    };
    // The grace period is counted from the shutdown signal, not from start-up: a service
    // that has been up for longer than `grace` still gets all of it to drain.
    let started_drain = tokio::time::Instant::now();
    match ended {
        Some(result) => result?,
        None => match tokio::time::timeout(grace, server).await {
            Ok(result) => result?,
            Err(_) => tracing::warn!(
                ?grace,
                "in-flight requests did not finish within the grace period"
            ),
        },
    }
    let left = grace
        .saturating_sub(started_drain.elapsed())
        .max(Duration::from_millis(500));
    shutdown.drain_background(left).await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A service that has been up longer than its grace period must still give its
    /// background tasks the grace period (counted from the shutdown signal), not the floor.
    #[tokio::test(start_paused = true)]
    async fn background_tasks_get_the_grace_counted_from_the_shutdown_signal() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let shutdown = Shutdown::new();
        let finished = Arc::new(AtomicBool::new(false));
        let token = shutdown.background_token();
        let flag = finished.clone();
        shutdown.spawn("slow drain", async move {
            token.cancelled().await;
            // Shorter than the grace, longer than the 500 ms floor.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            flag.store(true, Ordering::SeqCst);
        });
        let server = tokio::spawn(serve_one(
            listener,
            Router::new(),
            shutdown.clone(),
            Duration::from_secs(2),
        ));
        // Up for longer than the grace before the signal arrives.
        tokio::time::sleep(Duration::from_secs(5)).await;
        shutdown.trigger();
        server.await.expect("serve task").expect("serve");
        assert!(
            finished.load(Ordering::SeqCst),
            "the background task was cut off before the grace period ended"
        );
    }
}
