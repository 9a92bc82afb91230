//! The durable event log.
//!
//! Appends go through one writer task that commits whatever has queued up in one
//! transaction (group commit): under load many events share a commit, alone an event
//! commits at once. The writer assigns `seq` (it is the only writer), stores each event's
//! JSON with its `seq`, keeps the most recent events in memory for delivery, and publishes
//! the head position to the delivery loops.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;
use sqlx::Row;
use switchyard_events::Envelope;
use switchyard_kit::clock::unix_millis;
use switchyard_kit::{Db, Shutdown};
use tokio::sync::{mpsc, oneshot, watch};

/// Events kept in memory for delivery (older ones are read back from the database): about a
/// second at 1,000 events/s, about 0.4 MiB.
const TAIL_CAPACITY: usize = 1024;
/// Most appends committed in one transaction.
const MAX_GROUP: usize = 512;

/// A stored event.
#[derive(Debug)]
pub struct Stored {
    pub seq: i64,
    /// The event's type (subscribers that take some types only skip the others).
    pub event_type: String,
    /// The event's JSON, `seq` included: exactly what subscribers receive.
    pub body: Bytes,
    pub correlation_id: Option<String>,
    /// When it was appended, if this process appended it (for delivery latency).
    pub appended_at: Option<Instant>,
}

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    New(i64),
    /// The id was already in the log.
    Duplicate,
}

struct AppendRequest {
    event: Envelope,
    reply: oneshot::Sender<Result<Appended, String>>,
}

/// Handle on the log; cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    db: Db,
    appender: mpsc::Sender<AppendRequest>,
    head: watch::Receiver<i64>,
    tail: Arc<RwLock<VecDeque<Arc<Stored>>>>,
}

impl EventLog {
    /// Opens the log and starts its writer.
    pub async fn open(db: Db, shutdown: &Shutdown) -> anyhow::Result<Self> {
        let head_seq = max_seq(&db).await?;
        let (head_tx, head) = watch::channel(head_seq);
        let (appender, requests) = mpsc::channel(4096);
        let tail = Arc::new(RwLock::new(VecDeque::with_capacity(TAIL_CAPACITY)));
        let writer = Writer {
            db: db.clone(),
            next_seq: head_seq + 1,
            head: head_tx,
            tail: tail.clone(),
        };
        let stop = shutdown.background_token();
        shutdown.spawn("event-log-writer", writer.run(requests, stop));
        Ok(EventLog {
            db,
            appender,
            head,
            tail,
        })
    }

    /// Appends an event durably; returns once it is committed.
    pub async fn append(&self, event: Envelope) -> anyhow::Result<Appended> {
        let (reply, answer) = oneshot::channel();
        self.appender
            .send(AppendRequest { event, reply })
            .await
            .map_err(|_| anyhow::anyhow!("event log is shutting down"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("event log writer stopped"))?
            .map_err(|e| anyhow::anyhow!(e))
    }

    /// The newest `seq` in the log.
    pub fn head(&self) -> i64 {
        *self.head.borrow()
    }

    /// A receiver that changes whenever the head moves.
    pub fn watch_head(&self) -> watch::Receiver<i64> {
        self.head.clone()
    }

    /// Events with `seq > after`, oldest first, at most `limit`: from memory when they are
    /// still there, from the database otherwise.
    pub async fn read_after(&self, after: i64, limit: usize) -> anyhow::Result<Vec<Arc<Stored>>> {
        if let Some(events) = self.read_tail(after, limit) {
            return Ok(events);
        }
        let rows = sqlx::query(
            "SELECT seq, body, event_type FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.db.reader())
        .await?;
        rows.iter()
            .map(|row| {
                let body: String = row.try_get("body")?;
                let correlation_id = Envelope::from_slice(body.as_bytes())
                    .ok()
                    .and_then(|e| e.correlation_id);
                Ok(Arc::new(Stored {
                    seq: row.try_get("seq")?,
                    event_type: row.try_get("event_type")?,
                    body: Bytes::from(body),
                    correlation_id,
                    appended_at: None,
                }))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    fn read_tail(&self, after: i64, limit: usize) -> Option<Vec<Arc<Stored>>> {
        let tail = self.tail.read().ok()?;
        let first = tail.front()?.seq;
        if after + 1 < first {
            return None;
        }
        let skip = usize::try_from(after + 1 - first).ok()?;
        Some(tail.iter().skip(skip).take(limit).cloned().collect())
    }

    /// The event at `seq`, if the log has it.
    pub async fn read_one(&self, seq: i64) -> anyhow::Result<Option<Arc<Stored>>> {
        Ok(self
            .read_after(seq - 1, 1)
            .await?
            .into_iter()
            .find(|e| e.seq == seq))
    }

    /// Deletes the events at least `max_age` old (an event appended in the same
    /// millisecond as the call is zero old) up to `seq <= up_to` (where every
    /// subscriber's saved cursor is) that are neither parked nor dead-lettered (a replay
    /// needs them); the newest event stays (it keeps the next `seq`). Returns how many were
    /// deleted.
    pub async fn prune(&self, max_age: std::time::Duration, up_to: i64) -> anyhow::Result<u64> {
        let cutoff = unix_millis() - i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        let deleted = sqlx::query(
            "DELETE FROM events WHERE appended_at <= $1 \
             AND seq < (SELECT MAX(seq) FROM events) \
             AND seq <= $2 AND seq <= (SELECT MIN(seq) FROM events) + 10000 \
             AND seq NOT IN (SELECT seq FROM parked) \
             AND seq NOT IN (SELECT seq FROM dead_letters)",
        )
        .bind(cutoff)
        .bind(up_to)
        .execute(self.db.pool())
        .await?
        .rows_affected();
        Ok(deleted)
    }

    /// Raw bodies with `seq > after`, for `GET /events`.
    pub async fn bodies_after(&self, after: i64, limit: i64) -> anyhow::Result<Vec<(i64, String)>> {
        let rows = sqlx::query("SELECT seq, body FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after)
            .bind(limit)
            .fetch_all(self.db.reader())
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("seq")?, row.try_get("body")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    pub fn db(&self) -> &Db {
        &self.db
    }
}

async fn max_seq(db: &Db) -> anyhow::Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM events")
        .fetch_one(db.pool())
        .await?;
    Ok(row.try_get(0)?)
}

struct Writer {
    db: Db,
    next_seq: i64,
    head: watch::Sender<i64>,
    tail: Arc<RwLock<VecDeque<Arc<Stored>>>>,
}

impl Writer {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<AppendRequest>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        loop {
            let first = tokio::select! {
                r = requests.recv() => r,
                _ = stop.cancelled() => {
                    // Requests are drained by now; answer whatever is still queued.
                    requests.close();
                    requests.recv().await
                }
            };
            let Some(first) = first else { return };
            group.push(first);
            while group.len() < MAX_GROUP {
                match requests.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            self.commit(&mut group).await;
        }
    }

    async fn commit(&mut self, group: &mut Vec<AppendRequest>) {
        let now = Instant::now();
        let mut results = Vec::with_capacity(group.len());
        let mut stored = Vec::with_capacity(group.len());
        let outcome: Result<(), sqlx::Error> = async {
            let mut seq = self.next_seq;
            let mut appended = Vec::with_capacity(group.len());
            if let [request] = group.as_mut_slice() {
                // One event (the usual case when appends do not queue up): one statement
                // commits on its own as atomically as a transaction, in one round trip to
                // the database's thread where a transaction takes three (begin, insert,
                // commit). Every hop of every event passes here.
                appended.push(insert(self.db.pool(), &mut request.event, &mut seq).await?);
            } else {
                let mut tx = self.db.pool().begin().await?;
                for request in group.iter_mut() {
                    appended.push(insert(&mut *tx, &mut request.event, &mut seq).await?);
                }
                tx.commit().await?;
            }
            for (request, outcome) in group.iter().zip(appended) {
                match (outcome, request.event.seq) {
                    (Some(body), Some(seq)) => {
                        results.push(Appended::New(seq));
                        stored.push(Arc::new(Stored {
                            seq,
                            event_type: request.event.event_type.clone(),
                            body: Bytes::from(body),
                            correlation_id: request.event.correlation_id.clone(),
                            appended_at: Some(now),
                        }));
                    }
                    _ => results.push(Appended::Duplicate),
                }
            }
            self.next_seq = seq;
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => {
                // The per-hop timeline (`switchyard-bench hops`) reads these at trace level.
                for s in &stored {
                    tracing::trace!(seq = s.seq, event_type = %s.event_type, correlation_id = s.correlation_id.as_deref().unwrap_or(""), "event appended");
                }
                if let Some(last) = stored.last().map(|s| s.seq) {
                    if let Ok(mut tail) = self.tail.write() {
                        for s in stored {
                            if tail.len() == TAIL_CAPACITY {
                                tail.pop_front();
                            }
                            tail.push_back(s);
                        }
                    }
                    self.head.send_replace(last);
                }
                for (request, result) in group.drain(..).zip(results) {
                    let _ = request.reply.send(Ok(result));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "event log append failed");
                for request in group.drain(..) {
                    let _ = request.reply.send(Err("event log unavailable".to_string()));
                }
            }
        }
    }
}

/// Stores `event` as `*seq` unless its id is in the log already, and then moves `*seq` on;
/// returns its stored JSON (`seq` included) if it was new.
async fn insert<'e, E>(
    executor: E,
    event: &mut Envelope,
    seq: &mut i64,
) -> Result<Option<Vec<u8>>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    event.seq = Some(*seq);
    // serde_json writes UTF-8: the text is the bytes themselves, stored and then handed back.
    let text = String::from_utf8(event.to_bytes()).unwrap_or_default();
    let inserted = sqlx::query(
        "INSERT INTO events (seq, id, event_type, body, appended_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
    )
    .bind(*seq)
    .bind(&event.id)
    .bind(&event.event_type)
    .bind(text.as_str())
    .bind(unix_millis())
    .execute(executor)
    .await?
    .rows_affected();
    if inserted == 1 {
        *seq += 1;
        Ok(Some(text.into_bytes()))
    } else {
        // A duplicate keeps no number.
        event.seq = None;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A log in a temporary directory with `n` events appended.
    async fn log_with(dir: &tempfile::TempDir, n: usize) -> anyhow::Result<(EventLog, Shutdown)> {
        let db = Db::connect(&format!("sqlite://{}/bus.db", dir.path().display())).await?;
        db.migrate("event-bus", &[&crate::MIGRATIONS]).await?;
        let shutdown = Shutdown::new();
        let log = EventLog::open(db, &shutdown).await?;
        for i in 0..n {
            log.append(Envelope::new("T", serde_json::json!({ "i": i })))
                .await?;
        }
        Ok((log, shutdown))
    }

    async fn seqs(log: &EventLog) -> anyhow::Result<Vec<i64>> {
        Ok(sqlx::query_scalar("SELECT seq FROM events ORDER BY seq")
            .fetch_all(log.db().pool())
            .await?)
    }

    #[tokio::test]
    async fn pruning_keeps_what_a_subscriber_still_needs_and_the_newest_event() -> anyhow::Result<()>
    {
        let dir = tempfile::tempdir()?;
        let (log, shutdown) = log_with(&dir, 10).await?;
        // Parked and dead-lettered events are kept for their delivery or replay.
        sqlx::query("INSERT INTO parked (subscriber, seq, since) VALUES ('s', 3, 0)")
            .execute(log.db().pool())
            .await?;
        sqlx::query(
            "INSERT INTO dead_letters (subscriber, seq, status, reason, at) VALUES ('s', 4, 400, 'x', 0)",
        )
        .execute(log.db().pool())
        .await?;
        // Nothing is old enough yet.
        assert_eq!(log.prune(Duration::from_secs(3600), 10).await?, 0);
        // Everything is; the slowest subscriber is at 6.
        assert_eq!(log.prune(Duration::ZERO, 6).await?, 4);
        assert_eq!(seqs(&log).await?, [3, 4, 7, 8, 9, 10]);
        // Every subscriber is at the head: the newest event stays (it keeps the next seq).
        log.prune(Duration::ZERO, 10).await?;
        assert_eq!(seqs(&log).await?, [3, 4, 10]);
        let appended = log
            .append(Envelope::new("T", serde_json::json!({})))
            .await?;
        assert_eq!(appended, Appended::New(11));
        shutdown.trigger();
        shutdown.drain_background(Duration::from_secs(2)).await;
        Ok(())
    }
}
