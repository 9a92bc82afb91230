//! Delivery: one loop per subscriber, each with its own persistent cursor.
//!
//! A loop posts events one at a time in log order and moves its cursor only past an event
//! the subscriber acknowledged with 2xx, so order and at-least-once hold whatever fails.
//! Connection errors, 5xx, 404/405 (a subscriber not ready or misrouted), 408 and 429 are
//! retried with capped exponential backoff. Other 4xx answers mean the subscriber judged
//! the event malformed: retrying cannot help, so the event is recorded in `dead_letters`
//! (visible there and in the `events_dead_lettered` metric) and the loop moves on.
//! Cursors are flushed to the database every few milliseconds and at shutdown; after a
//! crash a subscriber may receive the last few events again, which its inbox ignores.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::Row;
use switchyard_kit::{Metrics, Shutdown};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Settings, Subscriber};
use crate::log::{EventLog, Stored};

const PAGE: usize = 256;
const MIN_BACKOFF: Duration = Duration::from_millis(10);
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
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
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
    stop: CancellationToken,
}

enum Outcome {
    Delivered,
    DeadLetter(u16, String),
    Retry(String),
}

impl Delivery {
    async fn run(self) {
        let mut head = self.log.watch_head();
        let mut backoff = MIN_BACKOFF;
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
                loop {
                    if self.stop.is_cancelled() {
                        return;
                    }
                    match self.deliver(&event).await {
                        Outcome::Delivered => {
                            backoff = MIN_BACKOFF;
                            let latency = event.appended_at.map(|t| t.elapsed().as_secs_f64());
                            self.metrics.event_delivered(&self.subscriber.name, latency);
                            break;
                        }
                        Outcome::DeadLetter(status, reason) => {
                            tracing::warn!(subscriber = %self.subscriber.name, seq = event.seq, status, %reason, "subscriber rejected the event; set aside in dead_letters");
                            self.metrics.event_dead_lettered(&self.subscriber.name);
                            if let Err(e) =
                                self.record_dead_letter(event.seq, status, &reason).await
                            {
                                tracing::warn!(error = %e, "could not record the dead letter, retrying");
                                self.pause(backoff).await;
                                continue;
                            }
                            break;
                        }
                        Outcome::Retry(reason) => {
                            tracing::debug!(subscriber = %self.subscriber.name, seq = event.seq, %reason, retry_in = ?backoff, "delivery failed");
                            self.metrics.event_retried(&self.subscriber.name);
                            self.pause(backoff).await;
                            backoff = (backoff * 2).min(self.max_backoff);
                        }
                    }
                }
                self.cursor.position.store(event.seq, Ordering::Release);
            }
        }
    }

    async fn deliver(&self, event: &Stored) -> Outcome {
        let mut request = self
            .client
            .post(&self.subscriber.url)
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
                if status.is_success() {
                    Outcome::Delivered
                } else if status.is_client_error()
                    && !matches!(status.as_u16(), 404 | 405 | 408 | 425 | 429)
                {
                    Outcome::DeadLetter(
                        status.as_u16(),
                        String::from_utf8_lossy(&body).chars().take(500).collect(),
                    )
                } else {
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
        .bind(crate::routes::unix_millis())
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
