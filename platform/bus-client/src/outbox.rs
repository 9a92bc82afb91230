//! The transactional outbox.
//!
//! A service writes its state change and the event it causes in one transaction
//! ([`Outbox::enqueue`]); after the commit it calls [`Outbox::wake`], and the relay publishes
//! pending rows in order, deleting each once the bus has stored it. If the bus is down the
//! relay retries with capped exponential backoff; if the process dies, the rows are still
//! there at the next start. A row published but not yet deleted is published again, and the
//! bus drops it by its event id.
//!
//! Several replicas of a service can share one PostgreSQL database: each batch is claimed
//! with a transaction-scoped advisory lock (`pg_try_advisory_xact_lock`) held while the batch
//! is published and deleted, so one relay at a time publishes, in `seq` order, and no row is
//! published twice concurrently. A relay that finds the lock taken tries again shortly. Rows
//! are deleted by their exact `seq` (not `seq <= last`): on PostgreSQL a transaction that
//! committed late can hold a smaller `seq` than rows already published. SQLite has one
//! process per file and serialized writers, so it needs no lock.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sqlx::{AnyConnection, Row};
use switchyard_events::Envelope;
use switchyard_kit::{Db, Dialect, Metrics, Shutdown};
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
/// Pause before trying again when another replica holds the relay lock.
const BUSY_PAUSE: Duration = Duration::from_millis(50);
/// The advisory-lock key of the relay (advisory locks are scoped to a database, and each
/// service has its own database, so one constant key is enough).
const RELAY_LOCK_KEY: i64 = 0x5359_4f42_5258; // "SYOBRX"

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
            .fetch_one(self.db.reader())
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

/// What one relay round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// This many rows were published (and deleted).
    Published(usize),
    /// Another replica holds the relay lock.
    Busy,
}

impl Relay {
    async fn run(self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let stopping = self.stop.is_cancelled();
            match self.publish_batch(stopping).await {
                Ok(Round::Published(0)) => {
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
                Ok(Round::Published(_)) => backoff = MIN_BACKOFF,
                Ok(Round::Busy) => {
                    // The replica holding the lock publishes our rows too.
                    if stopping {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(BUSY_PAUSE) => {}
                        _ = self.stop.cancelled() => {}
                    }
                }
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

    /// Publishes up to one batch in order and deletes what was published.
    async fn publish_batch(&self, stopping: bool) -> anyhow::Result<Round> {
        let db = &self.outbox.db;
        match db.dialect() {
            Dialect::Sqlite => {
                // The writer connection is not held while publishing.
                let pending = select_batch(&mut *db.reader().acquire().await?).await?;
                let (published, failure) = self.publish_in_order(&pending, stopping).await;
                delete_published(&mut *db.pool().acquire().await?, &pending[..published]).await?;
                finish(published, failure)
            }
            Dialect::Postgres => {
                let mut tx = db.pool().begin().await?;
                let locked: bool = sqlx::query("SELECT pg_try_advisory_xact_lock($1)")
                    .bind(RELAY_LOCK_KEY)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get(0)?;
                if !locked {
                    tx.rollback().await?;
                    return Ok(Round::Busy);
                }
                let pending = select_batch(&mut tx).await?;
                let (published, failure) = self.publish_in_order(&pending, stopping).await;
                delete_published(&mut tx, &pending[..published]).await?;
                // Committing releases the lock. If the commit fails the rows stay and are
                // published again: the bus drops duplicates by event id, consumers by inbox.
                tx.commit().await?;
                finish(published, failure)
            }
        }
    }

    /// Publishes `pending` one after the other, stopping at the first failure; returns how
    /// many were published and the failure, if any.
    async fn publish_in_order(
        &self,
        pending: &[Pending],
        stopping: bool,
    ) -> (usize, Option<crate::bus::PublishError>) {
        let mut published = 0;
        for event in pending {
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
                }
                Err(e) => {
                    self.metrics.event_retried("bus");
                    return (published, Some(e));
                }
            }
        }
        (published, None)
    }
}

fn finish(published: usize, failure: Option<crate::bus::PublishError>) -> anyhow::Result<Round> {
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(Round::Published(published)),
    }
}

async fn select_batch(conn: &mut AnyConnection) -> Result<Vec<Pending>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT seq, event_id, event_type, body FROM outbox ORDER BY seq LIMIT $1")
            .bind(BATCH)
            .fetch_all(&mut *conn)
            .await?;
    rows.iter()
        .map(|row| {
            Ok(Pending {
                seq: row.try_get(0)?,
                event_id: row.try_get(1)?,
                event_type: row.try_get(2)?,
                body: Bytes::from(row.try_get::<String, _>(3)?),
            })
        })
        .collect()
}

/// Deletes exactly the given rows.
async fn delete_published(conn: &mut AnyConnection, rows: &[Pending]) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(256) {
        let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "DELETE FROM outbox WHERE seq IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            query = query.bind(row.seq);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
