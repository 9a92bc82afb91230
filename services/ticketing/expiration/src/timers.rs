//! The timer loop: fires each stored timer once it is due.
//!
//! A round fires every due, unfired timer, each in a transaction of its own (a [`Change`]:
//! the timer marked fired and `expiration:complete` in the outbox commit together, so a
//! timer never fires without its event nor the event goes out twice from one timer), then
//! sleeps until the earliest pending timer is due. The sleep is capped at [`MAX_SLEEP`]: a
//! replica sharing the database cannot wake this one, so a timer another replica stored
//! (or a clock adjustment) is seen within the cap. A timer this replica stores wakes the
//! loop at once through a [`Notify`], whose stored permit also covers a timer committed
//! while the loop was busy firing.
//!
//! On PostgreSQL the claim is `FOR UPDATE SKIP LOCKED`: replicas racing for the same due
//! timers each take a different one, and the outer `fired = 0` is checked again after any
//! row lock wait, so a timer one replica fired is never fired again by another. SQLite has
//! a single writer (one connection, one process per file) and needs no lock.
//!
//! [`Change`]: switchyard_bus_client::Change

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use switchyard_bus_client::ServiceState;
use switchyard_kit::clock::unix_millis;
use switchyard_kit::{Backoff, Dialect, Shutdown};
use switchyard_ticketing_contract::{ExpirationComplete, OrderId, TicketingEvent};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Longest sleep between rounds, whatever the next due time.
pub(crate) const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Sleep when the earliest pending timer is already due but could not be claimed (another
/// replica holds it in its transaction): a moment later it is fired or free again, and the
/// loop does not spin meanwhile.
pub(crate) const CONTENDED_PAUSE: Duration = Duration::from_millis(10);
/// Timers fired in one round before the loop checks for shutdown again.
const BATCH: usize = 256;
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Marks the earliest due timer fired and returns its order. The subquery picks it; the
/// outer `fired = 0` is what PostgreSQL re-checks after waiting for a row lock.
const FIRE_SQLITE: &str = "UPDATE expiration_timers SET fired = 1, fired_at = $1 WHERE fired = 0 AND order_id = (SELECT order_id FROM expiration_timers WHERE fired = 0 AND due_at <= $2 ORDER BY due_at LIMIT 1) RETURNING order_id, correlation_id";
const FIRE_POSTGRES: &str = "UPDATE expiration_timers SET fired = 1, fired_at = $1 WHERE fired = 0 AND order_id = (SELECT order_id FROM expiration_timers WHERE fired = 0 AND due_at <= $2 ORDER BY due_at LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING order_id, correlation_id";

/// The service's timers: the loop, and the handle that wakes it.
#[derive(Clone)]
pub(crate) struct Timers {
    state: ServiceState,
    wake: Arc<Notify>,
}

impl Timers {
    pub fn new(state: ServiceState) -> Self {
        Timers {
            state,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Tells the loop a timer was stored (it may be due before the loop's next round).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Starts the loop as a background task of `shutdown`.
    pub fn spawn(&self, shutdown: &Shutdown) {
        let timers = self.clone();
        let stop = shutdown.background_token();
        shutdown.spawn("expiration-timers", timers.run(stop));
    }

    async fn run(self, stop: CancellationToken) {
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        loop {
            if stop.is_cancelled() {
                return;
            }
            let delay = match self.round().await {
                Ok(delay) => {
                    backoff.reset();
                    delay
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff.current(), "expiration timers: round failed");
                    if !backoff.wait(&stop).await {
                        return;
                    }
                    continue;
                }
            };
            if pause(&self.wake, &stop, delay).await == Woken::Stopped {
                return;
            }
        }
    }

    /// Fires the due timers (up to a batch), and says how long to sleep before the next round.
    async fn round(&self) -> Result<Duration, sqlx::Error> {
        let mut fired = 0;
        while self.fire_one(unix_millis()).await? {
            fired += 1;
            if fired >= BATCH {
                return Ok(Duration::ZERO);
            }
        }
        let next: Option<i64> =
            sqlx::query("SELECT MIN(due_at) FROM expiration_timers WHERE fired = 0")
                .fetch_one(self.state.db.reader())
                .await?
                .try_get(0)?;
        Ok(sleep_for(unix_millis(), next, MAX_SLEEP))
    }

    /// Fires the earliest timer due at `now`, if any: true if one fired.
    async fn fire_one(&self, now: i64) -> Result<bool, sqlx::Error> {
        let sql = match self.state.db.dialect() {
            Dialect::Sqlite => FIRE_SQLITE,
            Dialect::Postgres => FIRE_POSTGRES,
        };
        let mut change = self.state.outbox.begin().await?;
        let row = sqlx::query(sql)
            .bind(unix_millis())
            .bind(now)
            .fetch_optional(&mut *change)
            .await?;
        let Some(row) = row else {
            change.rollback().await?;
            return Ok(false);
        };
        let order_id: String = row.try_get("order_id")?;
        let correlation_id: Option<String> = row.try_get("correlation_id")?;
        let event = TicketingEvent::from(ExpirationComplete {
            order_id: OrderId::from(order_id.as_str()),
        })
        .into_envelope(correlation_id);
        change.publish(&event).await?;
        change.commit().await?;
        tracing::info!(%order_id, "order expired");
        Ok(true)
    }
}

/// How long to sleep at `now_ms` when the earliest pending timer is due at `next_due`
/// (`None`: no timer pending): until it is due, at most `cap`; [`CONTENDED_PAUSE`] if it is
/// due already (it was not claimable this round).
pub(crate) fn sleep_for(now_ms: i64, next_due: Option<i64>, cap: Duration) -> Duration {
    match next_due {
        None => cap,
        Some(due) if due <= now_ms => CONTENDED_PAUSE.min(cap),
        Some(due) => {
            let wait = u64::try_from(due.saturating_sub(now_ms)).unwrap_or(u64::MAX);
            Duration::from_millis(wait).min(cap)
        }
    }
}

/// Why a pause ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woken {
    /// The delay passed.
    Due,
    /// A timer was stored.
    Notified,
    /// The service is stopping.
    Stopped,
}

/// Sleeps `delay`, or until a timer is stored or the service stops.
pub(crate) async fn pause(wake: &Notify, stop: &CancellationToken, delay: Duration) -> Woken {
    tokio::select! {
        biased;
        () = stop.cancelled() => Woken::Stopped,
        () = wake.notified() => Woken::Notified,
        () = tokio::time::sleep(delay) => Woken::Due,
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    #[test]
    fn the_loop_sleeps_until_the_next_timer_but_never_past_the_cap() {
        let cap = Duration::from_secs(1);
        // Nothing pending: look again after the cap (another replica may store one).
        assert_eq!(sleep_for(10_000, None, cap), cap);
        // Due soon: exactly until then.
        assert_eq!(
            sleep_for(10_000, Some(10_250), cap),
            Duration::from_millis(250)
        );
        // Due later than the cap: the cap.
        assert_eq!(sleep_for(10_000, Some(99_000), cap), cap);
        // Due now or past but not claimable: a short pause, not a spin.
        assert_eq!(sleep_for(10_000, Some(10_000), cap), CONTENDED_PAUSE);
        assert_eq!(sleep_for(10_000, Some(-5), cap), CONTENDED_PAUSE);
        // Extremes do not overflow.
        assert_eq!(sleep_for(i64::MIN, Some(i64::MAX), cap), cap);
        assert_eq!(sleep_for(0, Some(1), Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_lasts_its_delay() {
        let (wake, stop) = (Notify::new(), CancellationToken::new());
        let start = Instant::now();
        let delay = sleep_for(1_000, Some(1_300), MAX_SLEEP);
        assert_eq!(pause(&wake, &stop, delay).await, Woken::Due);
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        // With nothing pending it lasts the cap.
        let start = Instant::now();
        let delay = sleep_for(1_000, None, MAX_SLEEP);
        assert_eq!(pause(&wake, &stop, delay).await, Woken::Due);
        assert_eq!(start.elapsed(), MAX_SLEEP);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stored_timer_ends_the_pause_early() {
        let wake = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let notifier = wake.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            notifier.notify_one();
        });
        let start = Instant::now();
        assert_eq!(pause(&wake, &stop, MAX_SLEEP).await, Woken::Notified);
        assert_eq!(start.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_stored_while_the_loop_was_busy_is_not_missed() {
        // The handler notified before the loop began to sleep: the permit is kept.
        let (wake, stop) = (Notify::new(), CancellationToken::new());
        wake.notify_one();
        let start = Instant::now();
        assert_eq!(pause(&wake, &stop, MAX_SLEEP).await, Woken::Notified);
        assert_eq!(start.elapsed(), Duration::ZERO);
        // One permit, one early wake-up.
        assert_eq!(pause(&wake, &stop, MAX_SLEEP).await, Woken::Due);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_pause_at_once() {
        let (wake, stop) = (Notify::new(), CancellationToken::new());
        let token = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(40)).await;
            token.cancel();
        });
        let start = Instant::now();
        assert_eq!(pause(&wake, &stop, MAX_SLEEP).await, Woken::Stopped);
        assert_eq!(start.elapsed(), Duration::from_millis(40));
        // Stopping wins over a pending wake-up.
        wake.notify_one();
        assert_eq!(pause(&wake, &stop, MAX_SLEEP).await, Woken::Stopped);
    }
}
