//! The transactional outbox.
//!
//! A service writes its state change and the event it causes in one transaction
//! ([`Outbox::enqueue`]); after the commit it calls [`Outbox::wake`], and the relay publishes
//! pending rows in order, deleting each once the bus has stored it. If the bus is down the
//! relay retries with capped exponential backoff; if the process dies, the rows are still
//! there at the next start. A row published but not yet deleted is published again, and the
//! bus drops it by its event id.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::{AnyConnection, Row};
use switchyard_events::Envelope;
use switchyard_kit::{Db, Metrics, Shutdown};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::bus::Publisher;

/// Outbox and inbox tables, SQLite dialect (include in a service's first migration).
pub const MESSAGING_SQLITE: &str = "
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE processed_events (
    event_id TEXT PRIMARY KEY,
    processed_at BIGINT NOT NULL
);
";

/// Outbox and inbox tables, PostgreSQL dialect.
pub const MESSAGING_POSTGRES: &str = "
CREATE TABLE outbox (
    seq BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE processed_events (
    event_id TEXT PRIMARY KEY,
    processed_at BIGINT NOT NULL
);
";

const BATCH: i64 = 256;
const MIN_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const SAFETY_POLL: Duration = Duration::from_secs(1);

/// A service's outbox.
#[derive(Clone)]
pub struct Outbox {
    db: Db,
    wake: Arc<Notify>,
}

impl Outbox {
    pub fn new(db: Db) -> Self {
        Outbox {
            db,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Adds an event inside the caller's transaction.
    pub async fn enqueue(conn: &mut AnyConnection, event: &Envelope) -> Result<(), sqlx::Error> {
        let body = String::from_utf8(event.to_bytes()).unwrap_or_default();
        sqlx::query(
            "INSERT INTO outbox (event_id, event_type, body, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&event.id)
        .bind(&event.event_type)
        .bind(body)
        .bind(now_millis())
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Tells the relay that rows were committed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Number of events waiting to be published.
    pub async fn pending(&self) -> Result<i64, sqlx::Error> {
        sqlx::query("SELECT COUNT(*) FROM outbox")
            .fetch_one(self.db.pool())
            .await?
            .try_get(0)
    }

    /// Starts the relay as a background task of `shutdown`.
    pub fn spawn_relay(
        &self,
        publisher: Arc<dyn Publisher>,
        metrics: Metrics,
        shutdown: &Shutdown,
    ) {
        let relay = Relay {
            outbox: self.clone(),
            publisher,
            metrics,
            stop: shutdown.background_token(),
        };
        shutdown.spawn("outbox-relay", relay.run());
    }
}

struct Relay {
    outbox: Outbox,
    publisher: Arc<dyn Publisher>,
    metrics: Metrics,
    stop: CancellationToken,
}

struct Pending {
    seq: i64,
    event_id: String,
    event_type: String,
    body: Bytes,
}

impl Relay {
    async fn run(self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let stopping = self.stop.is_cancelled();
            match self.publish_batch(stopping).await {
                Ok(0) => {
                    backoff = MIN_BACKOFF;
                    if stopping {
                        return;
                    }
                    tokio::select! {
                        _ = self.outbox.wake.notified() => {}
                        _ = tokio::time::sleep(SAFETY_POLL) => {}
                        _ = self.stop.cancelled() => {}
                    }
                }
                Ok(_) => backoff = MIN_BACKOFF,
                Err(e) => {
                    if stopping {
                        tracing::warn!(error = %e, "outbox not empty at shutdown; it is published at the next start");
                        return;
                    }
                    tracing::warn!(error = %e, retry_in = ?backoff, "outbox relay: publish failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.stop.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Publishes up to one batch in order; returns how many were published.
    async fn publish_batch(&self, stopping: bool) -> anyhow::Result<usize> {
        let rows =
            sqlx::query("SELECT seq, event_id, event_type, body FROM outbox ORDER BY seq LIMIT $1")
                .bind(BATCH)
                .fetch_all(self.outbox.db.pool())
                .await?;
        let pending: Vec<Pending> = rows
            .iter()
            .map(|row| {
                Ok(Pending {
                    seq: row.try_get(0)?,
                    event_id: row.try_get(1)?,
                    event_type: row.try_get(2)?,
                    body: Bytes::from(row.try_get::<String, _>(3)?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()?;
        let mut published = 0;
        let mut last_seq = None;
        let mut failure = None;
        for event in &pending {
            if self.stop.is_cancelled() && !stopping && published > 0 {
                break;
            }
            match self
                .publisher
                .publish(&event.event_type, &event.event_id, event.body.clone())
                .await
            {
                Ok(()) => {
                    self.metrics.event_published(&event.event_type);
                    published += 1;
                    last_seq = Some(event.seq);
                }
                Err(e) => {
                    self.metrics.event_retried("bus");
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(seq) = last_seq {
            sqlx::query("DELETE FROM outbox WHERE seq <= $1")
                .bind(seq)
                .execute(self.outbox.db.pool())
                .await?;
        }
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(published),
        }
    }
}

pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
