//! The sweeper: orders cancels its own overdue orders.
//!
//! Expiration fires each order's timer and publishes `expiration:complete`, which cancels
//! the order here. If that event never comes (a timer lost with a database, a dead letter
//! nobody replayed), the order would hold its ticket for good. So every
//! [`SWEEP_EVERY`] this service also cancels, as an expiration would, each order still
//! live [`SweepSettings::grace`] after its `expiresAt`: one lost event cannot split orders
//! and tickets for good. A paid or cancelled order is never touched, and an expiration
//! that arrives afterwards finds the order cancelled and changes nothing.

use std::time::Duration;

use sqlx::Row;
use switchyard_bus_client::ServiceState;
use switchyard_kit::Shutdown;
use time::OffsetDateTime;

use crate::handler::cancel_live;
use crate::order::expires_at;

/// How often overdue orders are looked for.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Orders cancelled per look at most (the next look takes the rest).
const SWEEP_BATCH: i64 = 200;

/// How long after its expiry an order still live is cancelled here
/// (`ORDER_SWEEP_GRACE_SECONDS`, default 60): longer than expiration normally takes, so
/// the sweeper only acts when its event is lost or very late.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepSettings {
    pub grace: Duration,
}

impl Default for SweepSettings {
    fn default() -> Self {
        SweepSettings {
            grace: Duration::from_secs(60),
        }
    }
}

/// Starts the sweeper as a background task of `shutdown`.
pub fn spawn(state: ServiceState, settings: SweepSettings, shutdown: &Shutdown) {
    let stop = shutdown.background_token();
    shutdown.spawn("order-sweeper", async move {
        loop {
            match sweep(&state, settings.grace).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(cancelled = n, grace = ?settings.grace, "overdue orders cancelled by the sweeper (their expiration did not arrive)"),
                Err(e) => tracing::debug!(error = %e, "sweeping overdue orders failed; trying again later"),
            }
            tokio::select! {
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
}

/// Cancels the orders still live `grace` after their expiry; returns how many.
pub async fn sweep(state: &ServiceState, grace: Duration) -> anyhow::Result<usize> {
    let now = OffsetDateTime::now_utc();
    let cutoff = expires_at(
        now.checked_sub(time::Duration::try_from(grace)?)
            .unwrap_or(now),
        Duration::ZERO,
    )
    .ok_or_else(|| anyhow::anyhow!("the cut-off time is out of range"))?;
    let overdue: Vec<String> = sqlx::query(
        "SELECT id FROM orders WHERE status IN ('created', 'awaiting:payment') AND expires_at < $1 ORDER BY expires_at LIMIT $2",
    )
    .bind(&cutoff)
    .bind(SWEEP_BATCH)
    .fetch_all(state.db.reader())
    .await?
    .iter()
    .map(|row| row.try_get(0))
    .collect::<Result<_, _>>()?;
    let mut cancelled = 0;
    for order_id in overdue {
        let mut change = state.outbox.begin().await?;
        if let Some(event) = cancel_live(&mut change, &order_id).await? {
            change
                .publish(&event.into_envelope(Some(format!("sweeper-{order_id}"))))
                .await?;
            change.commit().await?;
            tracing::info!(%order_id, "overdue order cancelled by the sweeper");
            cancelled += 1;
        } else {
            change.rollback().await?;
        }
    }
    Ok(cancelled)
}
