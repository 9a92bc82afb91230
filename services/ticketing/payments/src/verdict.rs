//! Paid or expired: decided here, once per order, in one transaction.
//!
//! Orders used to decide by whichever event reached it first, `payment:created` or
//! `expiration:complete`, so a payment made between the order's expiry and the expiry's
//! arrival could be answered 201, then refunded, its order cancelled. Now payments holds
//! the verdict (`orders.verdict`):
//!
//! * a charge that succeeds sets `paid` in the transaction that stores the payment and
//!   commits `payment:created`, unless the verdict is already `expired` (then the charge is
//!   refunded and the request answered that the order cannot be paid: no 201);
//! * `expiration:complete` (or, for an order whose expiration never came, the sweeper
//!   [`EXPIRY_SWEEP_EVERY`] after `EXPIRY_SWEEP_GRACE_SECONDS`) sets `expired` and commits
//!   `payment:expired`, unless the order is paid, or a charge is in flight: then it waits
//!   (deferred) for that charge's outcome, which decides.
//!
//! The row is locked for the decision (PostgreSQL; SQLite has one writer), and both
//! verdicts leave through one outbox in the order they were made, so orders, which
//! completes an order on `payment:created` and cancels it on `payment:expired`, never has
//! to choose: a payment answered 201 is final.

use std::time::Duration;

use sqlx::{AnyConnection, Row};
use switchyard_bus_client::{Change, ServiceState};
use switchyard_kit::clock::unix_millis;
use switchyard_kit::{Dialect, Shutdown};
use switchyard_ticketing_contract::{OrderId, OrderStatus, PaymentExpired, TicketingEvent};

pub(crate) const PAID: &str = "paid";
pub(crate) const EXPIRED: &str = "expired";

/// How often the sweeper looks for orders whose expiration never came.
pub const EXPIRY_SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Orders decided per look at most.
const SWEEP_BATCH: i64 = 200;

/// What deciding an order's expiry found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Closed unpaid now: `payment:expired` is in the change.
    Expired,
    /// Paid before: the payment stands.
    Paid,
    /// Closed before (expired, or cancelled by its user).
    Closed,
    /// A charge is being made: its outcome decides; ask again shortly.
    ChargeInFlight,
    /// Not known here yet.
    Unknown,
}

/// The order's status and verdict, the row locked for the change (PostgreSQL).
pub(crate) async fn lock_order(
    conn: &mut AnyConnection,
    dialect: Dialect,
    order_id: &str,
) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
    let sql = match dialect {
        Dialect::Postgres => "SELECT status, verdict FROM orders WHERE id = $1 FOR UPDATE",
        // One writer: the change holds it.
        Dialect::Sqlite => "SELECT status, verdict FROM orders WHERE id = $1",
    };
    sqlx::query(sql)
        .bind(order_id)
        .fetch_optional(conn)
        .await?
        .map(|row| Ok((row.try_get("status")?, row.try_get("verdict")?)))
        .transpose()
}

/// Decides that `order_id` expired unpaid, in `change`, if nothing else decided it first.
pub(crate) async fn decide_expired(
    change: &mut Change,
    dialect: Dialect,
    order_id: &str,
    correlation: Option<String>,
) -> Result<Decision, sqlx::Error> {
    let Some((status, verdict)) = lock_order(change, dialect, order_id).await? else {
        return Ok(Decision::Unknown);
    };
    match verdict.as_deref() {
        Some(PAID) => return Ok(Decision::Paid),
        Some(_) => return Ok(Decision::Closed),
        None => {}
    }
    let paid = sqlx::query("SELECT 1 FROM payments WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(&mut **change)
        .await?
        .is_some();
    if paid {
        return Ok(Decision::Paid);
    }
    if status == OrderStatus::Cancelled.as_str() {
        // Its user cancelled it: orders knows; nothing to publish.
        sqlx::query("UPDATE orders SET verdict = $1 WHERE id = $2 AND verdict IS NULL")
            .bind(EXPIRED)
            .bind(order_id)
            .execute(&mut **change)
            .await?;
        return Ok(Decision::Closed);
    }
    let in_flight =
        sqlx::query("SELECT 1 FROM charge_attempts WHERE order_id = $1 AND status = 'pending'")
            .bind(order_id)
            .fetch_optional(&mut **change)
            .await?
            .is_some();
    if in_flight {
        return Ok(Decision::ChargeInFlight);
    }
    sqlx::query("UPDATE orders SET verdict = $1 WHERE id = $2 AND verdict IS NULL")
        .bind(EXPIRED)
        .bind(order_id)
        .execute(&mut **change)
        .await?;
    let event = TicketingEvent::from(PaymentExpired {
        order_id: OrderId::from(order_id),
    })
    .into_envelope(correlation);
    change.publish(&event).await?;
    Ok(Decision::Expired)
}

/// Starts the sweeper: every [`EXPIRY_SWEEP_EVERY`], the orders still undecided `grace`
/// after their expiry are decided as their expiration would have.
pub(crate) fn spawn_sweeper(state: ServiceState, grace: Duration, shutdown: &Shutdown) {
    let stop = shutdown.background_token();
    shutdown.spawn("expiry-sweeper", async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(EXPIRY_SWEEP_EVERY) => {}
                _ = stop.cancelled() => return,
            }
            match sweep(&state, grace).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(expired = n, ?grace, "orders closed unpaid by the sweeper (their expiration did not arrive)"),
                Err(e) => tracing::debug!(error = %e, "sweeping undecided orders failed; trying again later"),
            }
        }
    });
}

/// Decides the orders still undecided `grace` after their expiry; returns how many expired.
pub(crate) async fn sweep(state: &ServiceState, grace: Duration) -> anyhow::Result<usize> {
    let cutoff = unix_millis() - i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    let overdue: Vec<String> = sqlx::query(
        "SELECT id FROM orders WHERE verdict IS NULL AND expires_at IS NOT NULL AND expires_at < $1 ORDER BY expires_at LIMIT $2",
    )
    .bind(cutoff)
    .bind(SWEEP_BATCH)
    .fetch_all(state.db.reader())
    .await?
    .iter()
    .map(|row| row.try_get(0))
    .collect::<Result<_, _>>()?;
    let mut expired = 0;
    for order_id in overdue {
        let mut change = state.outbox.begin().await?;
        let decision = decide_expired(
            &mut change,
            state.db.dialect(),
            &order_id,
            Some(format!("sweeper-{order_id}")),
        )
        .await?;
        change.commit().await?;
        if decision == Decision::Expired {
            tracing::info!(%order_id, "undecided order closed unpaid by the sweeper");
            expired += 1;
        }
    }
    Ok(expired)
}
