//! Delivery: one loop per subscriber, each with its own persistent cursor.
//!
//! A loop posts events one at a time in log order and moves its cursor only past an event
//! the subscriber acknowledged with 2xx, so order and at-least-once hold whatever fails.
//! An event of a type the subscriber does not take is skipped. Connection errors, 5xx,
//! 404/405 (a subscriber not ready or misrouted), 408 and 429 are retried with capped,
//! jittered backoff; a subscriber that cannot be reached is waited for however long it
//! takes, but one that answers 5xx to the same event `max_deliver` times has that event
//! set aside. 425 Too Early means "not yet" (a versioned update whose predecessor the
//! subscriber has not applied): it is delivered again after a short delay, not counted as
//! a failure and not logged as one, until `DEFER_LIMIT_MS` has passed. Other 4xx answers
//! mean the subscriber judged the event malformed: retrying cannot help. An event set
//! aside is recorded in `dead_letters` (visible there, in the `events_dead_lettered`
//! metric and in the log) and the loop moves on.
//! Cursors are flushed to the database every few milliseconds and at shutdown; after a
//! crash a subscriber may receive the last few events again, which its inbox ignores.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::Row;
use switchyard_kit::clock::unix_millis;
use switchyard_kit::{Backoff, Metrics, Shutdown};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Settings, Subscriber};
use crate::log::{EventLog, Stored};

const PAGE: usize = 256;
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// First and longest pause before a deferred event is delivered again.
const MIN_DEFER: Duration = Duration::from_millis(10);
const MAX_DEFER: Duration = Duration::from_secs(1);
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// A subscriber's position, shared between its loop and the flusher.
struct Cursor {
    name: String,
    position: AtomicI64,
    flushed: AtomicI64,
}

/// Starts a delivery loop per subscriber and the cursor flusher.
pub async fn start(
    settings: &Settings,
    log: EventLog,
    metrics: Metrics,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    // Each delivery's timeout is its subscriber's ack wait.
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(4)
        .tcp_nodelay(true)
        .build()?;
    let mut cursors = Vec::new();
    let deliveries = TaskTracker::new();
    for subscriber in &settings.subscribers {
        let position = load_cursor(&log, &subscriber.name).await?;
        let cursor = Arc::new(Cursor {
            name: subscriber.name.clone(),
            position: AtomicI64::new(position),
            flushed: AtomicI64::new(position),
        });
        cursors.push(cursor.clone());
        let delivery = Delivery {
            subscriber: subscriber.clone(),
            cursor,
            log: log.clone(),
            client: client.clone(),
            metrics: metrics.clone(),
            max_backoff: settings.max_backoff,
            defer_limit: settings.defer_limit,
            stop: shutdown.background_token(),
        };
        tracing::info!(subscriber = %subscriber.name, url = %subscriber.url, from = position, "delivering");
        deliveries.spawn(delivery.run());
    }
    deliveries.close();
    let flusher = Flusher {
        log,
        cursors,
        deliveries,
        stop: shutdown.background_token(),
    };
    shutdown.spawn("cursor-flusher", flusher.run());
    Ok(())
}

async fn load_cursor(log: &EventLog, name: &str) -> anyhow::Result<i64> {
    let row = sqlx::query("SELECT position FROM subscriber_cursors WHERE subscriber = $1")
        .bind(name)
        .fetch_optional(log.db().pool())
        .await?;
    Ok(match row {
        Some(row) => row.try_get(0)?,
        None => 0,
    })
}

struct Delivery {
    subscriber: Subscriber,
    cursor: Arc<Cursor>,
    log: EventLog,
    client: reqwest::Client,
    metrics: Metrics,
    max_backoff: Duration,
    defer_limit: Duration,
    stop: CancellationToken,
}

enum Outcome {
    Delivered,
    DeadLetter(u16, String),
    /// The subscriber answered 5xx: counted toward `max_deliver`.
    Failed(u16, String),
    /// The subscriber could not be reached, or is not ready: waited for.
    Retry(String),
    /// The subscriber said "not yet" (425).
    Deferred(String),
}

impl Delivery {
    async fn run(self) {
        let mut head = self.log.watch_head();
        let mut backoff = Backoff::new(MIN_BACKOFF, self.max_backoff.max(MIN_BACKOFF));
        while !self.stop.is_cancelled() {
            let position = self.cursor.position.load(Ordering::Acquire);
            let batch = match self.log.read_after(position, PAGE).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the log failed");
                    self.pause(self.max_backoff).await;
                    continue;
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = head.changed() => {}
                    _ = self.stop.cancelled() => return,
                }
                continue;
            }
            for event in batch {
                if self.subscriber.accepts(&event.event_type)
                    && !self.deliver_one(&event, &mut backoff).await
                {
                    return;
                }
                self.cursor.position.store(event.seq, Ordering::Release);
            }
        }
    }

    /// Delivers `event` until it is acknowledged or set aside; false if stopped first.
    async fn deliver_one(&self, event: &Stored, backoff: &mut Backoff) -> bool {
        let mut failures = 0u32;
        let mut deferred_since: Option<std::time::Instant> = None;
        let mut defer = Backoff::new(MIN_DEFER, MAX_DEFER);
        loop {
            if self.stop.is_cancelled() {
                return false;
            }
            let set_aside = match self.deliver(event).await {
                Outcome::Delivered => {
                    tracing::trace!(subscriber = %self.subscriber.name, seq = event.seq, event_type = %event.event_type, correlation_id = event.correlation_id.as_deref().unwrap_or(""), "event delivered");
                    backoff.reset();
                    let latency = event.appended_at.map(|t| t.elapsed().as_secs_f64());
                    self.metrics.event_delivered(&self.subscriber.name, latency);
                    return true;
                }
                Outcome::DeadLetter(status, reason) => Some((status, reason)),
                Outcome::Failed(status, reason) => {
                    failures += 1;
                    self.metrics.event_retried(&self.subscriber.name);
                    if failures >= self.subscriber.max_deliver {
                        Some((
                            status,
                            format!("{failures} failed deliveries, last: {reason}"),
                        ))
                    } else {
                        tracing::debug!(subscriber = %self.subscriber.name, seq = event.seq, status, failures, "delivery failed");
                        backoff.wait(&self.stop).await;
                        None
                    }
                }
                Outcome::Retry(reason) => {
                    tracing::debug!(subscriber = %self.subscriber.name, seq = event.seq, %reason, retry_in = ?backoff.current(), "delivery failed");
                    self.metrics.event_retried(&self.subscriber.name);
                    backoff.wait(&self.stop).await;
                    None
                }
                Outcome::Deferred(reason) => {
                    let since = *deferred_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() >= self.defer_limit {
                        Some((
                            425,
                            format!("deferred for longer than {:?}: {reason}", self.defer_limit),
                        ))
                    } else {
                        defer.wait(&self.stop).await;
                        None
                    }
                }
            };
            if let Some((status, reason)) = set_aside {
                tracing::warn!(subscriber = %self.subscriber.name, seq = event.seq, status, %reason, "event set aside in dead_letters");
                self.metrics.event_dead_lettered(&self.subscriber.name);
                match self.record_dead_letter(event.seq, status, &reason).await {
                    Ok(()) => return true,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not record the dead letter, retrying");
                        backoff.wait(&self.stop).await;
                    }
                }
            }
        }
    }

    async fn deliver(&self, event: &Stored) -> Outcome {
        let mut request = self
            .client
            .post(&self.subscriber.url)
            .timeout(self.subscriber.ack_wait)
            .header("content-type", "application/json")
            .body(event.body.clone());
        if let Some(id) = &event.correlation_id {
            request = request.header("x-request-id", id);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                // Read the body so the connection can be reused.
                let body = response.bytes().await.unwrap_or_default();
                let text = || String::from_utf8_lossy(&body).chars().take(500).collect();
                if status.is_success() {
                    Outcome::Delivered
                } else if status.as_u16() == 425 {
                    Outcome::Deferred(text())
                } else if status.is_client_error()
                    && !matches!(status.as_u16(), 404 | 405 | 408 | 429)
                {
                    Outcome::DeadLetter(status.as_u16(), text())
                } else if status.is_server_error() && status.as_u16() != 503 {
                    Outcome::Failed(status.as_u16(), text())
                } else {
                    // 503 is "not ready" (starting, its database briefly away): waited for.
                    Outcome::Retry(format!("answered {status}"))
                }
            }
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    async fn record_dead_letter(
        &self,
        seq: i64,
        status: u16,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO dead_letters (subscriber, seq, status, reason, at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (subscriber, seq) DO NOTHING",
        )
        .bind(&self.subscriber.name)
        .bind(seq)
        .bind(i32::from(status))
        .bind(reason)
        .bind(unix_millis())
        .execute(self.log.db().pool())
        .await
        .map(|_| ())
    }

    async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.stop.cancelled() => {}
        }
    }
}

struct Flusher {
    log: EventLog,
    cursors: Vec<Arc<Cursor>>,
    deliveries: TaskTracker,
    stop: CancellationToken,
}

impl Flusher {
    async fn run(self) {
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(FLUSH_EVERY) => false,
                _ = self.stop.cancelled() => true,
            };
            if stopping {
                // Let the delivery loops settle on their last acknowledged event first.
                let _ = tokio::time::timeout(Duration::from_secs(5), self.deliveries.wait()).await;
            }
            if let Err(e) = self.flush().await {
                tracing::warn!(error = %e, "could not save subscriber cursors");
            }
            if stopping {
                return;
            }
        }
    }

    async fn flush(&self) -> Result<(), sqlx::Error> {
        let dirty: Vec<(&Arc<Cursor>, i64)> = self
            .cursors
            .iter()
            .map(|c| (c, c.position.load(Ordering::Acquire)))
            .filter(|(c, p)| *p != c.flushed.load(Ordering::Acquire))
            .collect();
        if dirty.is_empty() {
            return Ok(());
        }
        let mut tx = self.log.db().pool().begin().await?;
        for (cursor, position) in &dirty {
            sqlx::query(
                "INSERT INTO subscriber_cursors (subscriber, position) VALUES ($1, $2) ON CONFLICT (subscriber) DO UPDATE SET position = excluded.position",
            )
            .bind(&cursor.name)
            .bind(*position)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        for (cursor, position) in dirty {
            cursor.flushed.store(position, Ordering::Release);
        }
        Ok(())
    }
}
