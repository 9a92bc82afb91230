//! Serving with graceful shutdown.
//!
//! On SIGTERM or Ctrl-C: stop accepting, let in-flight requests finish, then stop the
//! background loops (outbox relays, deliveries) and wait for them, all within the grace
//! period; then return so the process exits 0.

use std::future::Future;
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

/// Serves `router` on `listener` until shutdown, drains requests and background tasks
/// within `grace`, and returns.
pub async fn serve(
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
    let started_drain = tokio::time::Instant::now();
    let drained = async {
        shutdown.stopping().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => result?,
        _ = drained => tracing::warn!(?grace, "in-flight requests did not finish within the grace period"),
    }
    let left = grace
        .saturating_sub(started_drain.elapsed())
        .max(Duration::from_millis(500));
    shutdown.drain_background(left).await;
    tracing::info!("stopped");
    Ok(())
}
