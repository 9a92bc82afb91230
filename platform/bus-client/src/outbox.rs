//! The transactional outbox.
//!
//! A service writes its state change and the event it causes in one transaction: it opens a
//! [`Change`] ([`Outbox::begin`], or [`Outbox::begin_once`] for an event it consumes), writes
//! through it, adds events with [`Change::publish`] and calls [`Change::commit`], which
//! commits and wakes the relay in the same call, so no event waits for a poll because a
//! wake-up was forgotten. The relay publishes pending rows in order, deleting each once the
//! bus has stored it. If the bus is down the relay retries with capped, jittered backoff;
//! if the process dies, the rows are still there at the next start. A row published but not
//! yet deleted is published again, and the bus drops it by its event id.
//!
//! An event the bus refuses (a 4xx) is this service's own: the service built it and the
//! bus would not take it, so the two disagree (a publisher key, a size, a contract). The
//! relay retries it, holding the events behind it in order, and raises the alarm: an error
//! line per attempt, `switchyard_outbox_refused_total`, and the attempt recorded on the
//! row, where `switchyard dead-letters <service> list` shows it. An event is never set
//! aside by the relay: that would lose it, and every event after it while the
//! disagreement lasted. (`outbox_dead_letters` holds what earlier versions set aside; the
//! dead-letter tooling replays it.) An event too large for any bus is refused earlier,
//! by the change that would commit it ([`MAX_EVENT_BYTES`]). The backlog is exported as
//! the gauge `switchyard_outbox_pending`.
//!
//! Several replicas of a service can share one PostgreSQL database: each batch is claimed
//! with a transaction-scoped advisory lock (`pg_try_advisory_xact_lock`) held while the batch
//! is published and deleted, so one relay at a time publishes, in `seq` order, and no row is
//! published twice concurrently. A relay that finds the lock taken tries again shortly. Rows
//! are deleted by their exact `seq` (not `seq <= last`): on PostgreSQL a transaction that
//! committed late can hold a smaller `seq` than rows already published. SQLite has one
//! process per file and serialized writers, so it needs no lock; there a committed change
//! also hands its rows to the relay in memory ([`crate::handoff`]), so that the relay
//! publishes them without reading them back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use sqlx::{Any, AnyConnection, Row, Transaction};
use switchyard_events::envelope::MAX_EVENT_BYTES;
use switchyard_events::{Envelope, TraceContext};
use switchyard_kit::clock::unix_millis;
use switchyard_kit::spans::{Kind, Span};
use switchyard_kit::{Backoff, Db, Dialect, Metrics, Migration, Migrations, Shutdown};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::bus::{PublishError, Publisher};
use crate::handoff::{Handoff, Pending, Take};

/// The platform's messaging tables: the outbox, the inbox (`processed_events`) and the
/// outbox's dead letters. Every service that talks to the bus runs them beside its own
/// migrations (the service builder adds them).
pub static MESSAGING: Migrations = Migrations(&[
    Migration {
        version: 1,
        description: "messaging",
        sqlite: MESSAGING_SQLITE,
        postgres: MESSAGING_POSTGRES,
    },
    Migration {
        version: 1_000_000,
        description: "outbox dead letters",
        sqlite: "
CREATE TABLE outbox_dead_letters (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    body TEXT NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at BIGINT NOT NULL
);
",
        postgres: "
CREATE TABLE outbox_dead_letters (
    seq BIGINT PRIMARY KEY,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    body TEXT NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at BIGINT NOT NULL
);
",
    },
    Migration {
        version: 1_000_001,
        description: "outbox refusals recorded on their rows",
        sqlite: OUTBOX_ATTEMPTS,
        postgres: OUTBOX_ATTEMPTS,
    },
]);

/// The bus's refusals of a row: how many, the last one's reason and time.
const OUTBOX_ATTEMPTS: &str = "
ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN last_error TEXT;
ALTER TABLE outbox ADD COLUMN last_attempt_at BIGINT;
";

const MESSAGING_SQLITE: &str = "
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

const MESSAGING_POSTGRES: &str = "
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
/// Retries of an event the bus refused: soon at first (a bus restarted with another key
/// by mistake, then fixed), then every half minute, each with an error line.
const REFUSED_MIN_BACKOFF: Duration = Duration::from_millis(500);
const REFUSED_MAX_BACKOFF: Duration = Duration::from_secs(30);
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
    /// Committed rows on their way to the relay: present on SQLite only, where the relay
    /// takes them ([`Relay::publish_sqlite`]); without it the relay reads its table under
    /// PostgreSQL's advisory lock.
    handoff: Option<Arc<Handoff>>,
    /// Changes committed by this process (see [`Outbox::commits`]).
    commits: Arc<AtomicU64>,
}

impl Outbox {
    pub fn new(db: Db) -> Self {
        let handoff = (db.dialect() == Dialect::Sqlite).then(|| Arc::new(Handoff::default()));
        Outbox {
            db,
            wake: Arc::new(Notify::new()),
            handoff,
            commits: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many [`Change`]s this process has committed: it moves after every commit, so a
    /// value kept with something read from the database says whether this process may
    /// have changed it since (a cache of a read is valid while the count stays the same,
    /// if every write goes through a `Change` and no other process writes the database).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Acquire)
    }

    /// Opens a change: a transaction on the service's database whose events are published
    /// once it commits.
    pub async fn begin(&self) -> Result<Change, sqlx::Error> {
        Ok(Change {
            tx: self.db.pool().begin().await?,
            outbox: self.clone(),
            staged: Vec::new(),
            events: 0,
        })
    }

    /// Opens the change that applies the consumed event `event_id`, or `None` if it was
    /// processed before (see [`crate::inbox`]): the inbox record, the effect and the events
    /// it causes commit together or not at all.
    pub async fn begin_once(&self, event_id: &str) -> Result<Option<Change>, sqlx::Error> {
        Ok(crate::inbox::begin_once(&self.db, event_id)
            .await?
            .map(|tx| Change {
                tx,
                outbox: self.clone(),
                staged: Vec::new(),
                events: 0,
            }))
    }

    /// Adds an event inside a transaction the caller manages (tests, tools); prefer
    /// [`Change::publish`], whose commit wakes the relay.
    pub async fn enqueue(conn: &mut AnyConnection, event: &Envelope) -> Result<(), sqlx::Error> {
        insert(conn, event).await.map(|_| ())
    }

    /// Tells the relay that rows were committed outside a [`Change`] (a `Change` hands its
    /// rows over itself): its next round reads the table.
    pub fn wake(&self) {
        self.read_table_next();
        self.wake.notify_one();
    }

    /// Sends the relay's next round to the table (where rows are handed over at all).
    fn read_table_next(&self) {
        if let Some(handoff) = &self.handoff {
            handoff.read_table_next();
        }
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

/// A transaction on the service's database that can publish events: the state change and
/// its events commit together. Reads and writes go through it as through a transaction
/// (`&mut *change` is the connection).
pub struct Change {
    tx: Transaction<'static, Any>,
    outbox: Outbox,
    /// This change's rows, handed to the relay once committed (SQLite).
    staged: Vec<Pending>,
    events: usize,
}

impl Change {
    /// Adds `event` to the outbox in this transaction.
    pub async fn publish(&mut self, event: &Envelope) -> Result<(), sqlx::Error> {
        // The event carries the trace of the work that publishes it (the request's span,
        // or the span applying an event), stored with it at commit, so its consumers' spans
        // hang under that one; an event that names its own keeps it.
        let traced;
        let event = match switchyard_kit::trace_context::current() {
            Some(current) if event.trace_context().is_none() => {
                traced = event.clone().with_trace_context(current);
                &traced
            }
            _ => event,
        };
        let (seq, body) = insert(&mut self.tx, event).await?;
        if self.outbox.handoff.is_some() {
            self.staged.push(Pending {
                seq,
                event_id: event.id.clone(),
                event_type: event.event_type.clone(),
                body: Bytes::from(body),
            });
        }
        self.events += 1;
        // The per-hop timeline (`switchyard-bench hops`) reads these at trace level.
        tracing::trace!(event_id = %event.id, event_type = %event.event_type, correlation_id = event.correlation_id.as_deref().unwrap_or(""), "event staged");
        Ok(())
    }

    /// Commits, then counts the commit ([`Outbox::commits`]) and wakes the relay if events
    /// were added.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let Change {
            tx,
            outbox,
            staged,
            events,
        } = self;
        // A span of the work in progress (a request, an event being applied); background
        // work outside any trace (sweeps, timers) would only add a trace per commit.
        let mut span = switchyard_kit::trace_context::current()
            .filter(|_| switchyard_kit::otel::exporting())
            .map(|parent| Span::start(|| "commit", Kind::Internal, Some(parent)));
        if let Some(span) = span.as_mut() {
            span.set(
                "switchyard.events",
                i64::try_from(events).unwrap_or(i64::MAX),
            );
        }
        let committed = tx.commit().await;
        if let (Some(span), Err(e)) = (span.as_mut(), &committed) {
            span.fail(e.to_string());
        }
        drop(span);
        // Counted even when the commit reports an error: it may have happened.
        outbox.commits.fetch_add(1, Ordering::AcqRel);
        // Rows whose commit reported an error are not handed over: if the commit happened
        // after all, the relay finds them in the table (a gap, or its safety poll).
        committed?;
        if events > 0 {
            tracing::trace!(events, "change committed");
            if let Some(handoff) = &outbox.handoff {
                handoff.hand_over(staged);
            }
            outbox.wake.notify_one();
        }
        Ok(())
    }

    /// Abandons the change.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl std::ops::Deref for Change {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for Change {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

struct Relay {
    outbox: Outbox,
    publisher: Arc<dyn Publisher>,
    metrics: Metrics,
    stop: CancellationToken,
}

/// What one relay round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// This many rows, read from the table, were published (and deleted).
    Published(usize),
    /// This many rows, handed over in memory, were published (and deleted).
    Handed(usize),
    /// Another replica holds the relay lock.
    Busy,
}

/// Why a round stopped before its last row.
struct Stopped {
    /// The row that failed.
    seq: i64,
    error: PublishError,
}

impl Relay {
    async fn run(self) {
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        let mut refused = Backoff::new(REFUSED_MIN_BACKOFF, REFUSED_MAX_BACKOFF);
        loop {
            let stopping = self.stop.is_cancelled();
            let round = match &self.outbox.handoff {
                Some(handoff) => self.publish_sqlite(handoff, stopping).await,
                None => self.publish_postgres(stopping).await,
            };
            // A round from memory has set the gauge itself.
            if !matches!(
                round,
                Ok(Round::Published(0) | Round::Busy | Round::Handed(_))
            ) {
                self.export_pending().await;
            }
            if round.is_err() {
                // The rows not published are in the table.
                self.outbox.read_table_next();
            }
            match round {
                Ok(Round::Published(0)) => {
                    backoff.reset();
                    refused.reset();
                    if stopping {
                        return;
                    }
                    tokio::select! {
                        _ = self.outbox.wake.notified() => {}
                        _ = tokio::time::sleep(SAFETY_POLL) => self.outbox.read_table_next(),
                        _ = self.stop.cancelled() => {}
                    }
                }
                Ok(Round::Published(_) | Round::Handed(_)) => {
                    backoff.reset();
                    refused.reset();
                }
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
                    // A refusal waits longer: it needs an operator (a bus that refuses
                    // this service's key, or its events' size), not a moment.
                    let wait = if is_refusal(&e) {
                        &mut refused
                    } else {
                        tracing::warn!(error = %e, retry_in = ?backoff.current(), "outbox relay: publish failed");
                        &mut backoff
                    };
                    wait.wait(&self.stop).await;
                }
            }
        }
    }

    /// Sets `switchyard_outbox_pending` to the rows left.
    async fn export_pending(&self) {
        match self.outbox.pending().await {
            Ok(n) => self.metrics.set_outbox_pending(n),
            Err(e) => tracing::debug!(error = %e, "could not count the outbox"),
        }
    }

    /// SQLite: publishes up to one batch in order, from the handoff or from the table, and
    /// deletes what was published. The writer connection is not held while publishing.
    async fn publish_sqlite(&self, handoff: &Handoff, stopping: bool) -> anyhow::Result<Round> {
        let db = &self.outbox.db;
        let (pending, handed) = match handoff.take(BATCH as usize) {
            Take::Rows(rows) => (rows, true),
            Take::Nothing => return Ok(Round::Published(0)),
            Take::ReadTable => (
                select_batch(&mut *db.reader().acquire().await?).await?,
                false,
            ),
        };
        trace_read(&pending, handed);
        let (done, stopped) = self.publish_in_order(&pending, stopping).await;
        if done.len() < pending.len() || (!handed && pending.len() == BATCH as usize) {
            // Stopped or failed part way, or a full batch read from the table (a backlog,
            // after a restart): the rest are in the table, and the next round reads it at
            // once rather than at the safety poll.
            handoff.read_table_next();
        }
        if !done.is_empty() {
            // One autocommitted statement: the writer is held for one round trip.
            delete_published(&mut *db.pool().acquire().await?, done).await?;
        }
        if let Some(last) = done.last() {
            handoff.settled(last.seq);
        }
        if let Some(stopped) = &stopped {
            record_refusal(&mut *db.pool().acquire().await?, stopped).await;
        }
        match finish(done.len(), stopped)? {
            // Counting the table after every event would cost a read per hop: the backlog is
            // what was handed over and not yet taken (the table's stragglers are counted at
            // its next read).
            Round::Published(n) if handed => {
                let waiting = i64::try_from(handoff.waiting()).unwrap_or(i64::MAX);
                self.metrics.set_outbox_pending(waiting);
                Ok(Round::Handed(n))
            }
            round => Ok(round),
        }
    }

    /// PostgreSQL: claims the relay lock, publishes up to one batch in order and deletes
    /// what was published, in one transaction.
    async fn publish_postgres(&self, stopping: bool) -> anyhow::Result<Round> {
        let db = &self.outbox.db;
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
        trace_read(&pending, false);
        let (done, stopped) = self.publish_in_order(&pending, stopping).await;
        delete_published(&mut tx, done).await?;
        if let Some(stopped) = &stopped {
            record_refusal(&mut tx, stopped).await;
        }
        // Committing releases the lock. If the commit fails the rows stay and are
        // published again: the bus drops duplicates by event id, consumers by inbox.
        tx.commit().await?;
        finish(done.len(), stopped)
    }

    /// Publishes `pending` one after the other, stopping at the first failure; returns the
    /// rows published (a prefix of `pending`) and that failure, if any.
    ///
    /// A refusal (4xx) stops the relay like an outage: the event is this service's own, so
    /// a refusal means the bus and the service disagree (a publisher key, a size limit,
    /// a contract), which an operator must see and settle. Setting the event aside instead
    /// would lose it, and every event after it while the disagreement lasts. The refusal
    /// is logged as an error, counted in `switchyard_outbox_refused_total` and recorded on
    /// the row (`switchyard dead-letters <service> list` shows it).
    async fn publish_in_order<'p>(
        &self,
        pending: &'p [Pending],
        stopping: bool,
    ) -> (&'p [Pending], Option<Stopped>) {
        for (i, event) in pending.iter().enumerate() {
            if self.stop.is_cancelled() && !stopping && i > 0 {
                return (&pending[..i], None);
            }
            let mut span = publish_span(event);
            let publishing = || {
                self.publisher
                    .publish(&event.event_type, &event.event_id, event.body.clone())
            };
            let published = match &span {
                // Created inside the scope: the publisher's request carries its context.
                Some(span) => {
                    switchyard_kit::trace_context::scope(span.context(), async {
                        publishing().await
                    })
                    .await
                }
                None => publishing().await,
            };
            match published {
                Ok(()) => {
                    drop(span);
                    tracing::trace!(event_id = %event.event_id, "event published");
                    self.metrics.event_published(&event.event_type);
                }
                Err(error) => {
                    if let Some(span) = span.as_mut() {
                        span.fail(error.to_string());
                    }
                    match &error {
                        PublishError::Refused { status, body } => {
                            self.metrics.outbox_refused(&event.event_type, *status);
                            tracing::error!(
                                event_id = %event.event_id,
                                event_type = %event.event_type,
                                status,
                                reason = %body,
                                "the bus refused one of this service's events; the relay retries it (and holds the events after it) until the bus takes it"
                            );
                        }
                        PublishError::Unavailable(_) => self.metrics.event_retried("bus"),
                    }
                    return (
                        &pending[..i],
                        Some(Stopped {
                            seq: event.seq,
                            error,
                        }),
                    );
                }
            }
        }
        (pending, None)
    }
}

/// Whether a relay round failed because the bus refused an event.
fn is_refusal(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<PublishError>(),
        Some(PublishError::Refused { .. })
    )
}

/// Counts a refusal on its row (`attempts`, `last_error`), for the dead-letter tooling.
/// Best effort: the relay retries the row whether this is recorded or not.
async fn record_refusal(conn: &mut AnyConnection, stopped: &Stopped) {
    let PublishError::Refused { status, body } = &stopped.error else {
        return;
    };
    let reason: String = format!("refused by the bus ({status}): {body}")
        .chars()
        .take(500)
        .collect();
    if let Err(e) = sqlx::query(
        "UPDATE outbox SET attempts = attempts + 1, last_error = $1, last_attempt_at = $2 WHERE seq = $3",
    )
    .bind(reason)
    .bind(unix_millis())
    .bind(stopped.seq)
    .execute(conn)
    .await
    {
        tracing::debug!(error = %e, "could not record the refusal on its outbox row");
    }
}

/// The span of one event's publishing, under the span that published it, when spans are
/// exported (reading the event's trace costs a parse of its body, skipped otherwise).
fn publish_span(event: &Pending) -> Option<Span> {
    if !switchyard_kit::otel::exporting() {
        return None;
    }
    let mut span = Span::start(
        || format!("publish {}", event.event_type),
        Kind::Producer,
        TraceContext::of_json_event(&event.body),
    );
    span.set("messaging.destination.name", event.event_type.clone());
    span.set("messaging.message.id", event.event_id.clone());
    Some(span)
}

/// The per-hop timeline (`switchyard-bench hops`): when the relay has each row, read back
/// from the table or handed over by its change.
fn trace_read(pending: &[Pending], handed: bool) {
    let from = if handed { "handoff" } else { "table" };
    for event in pending {
        tracing::trace!(event_id = %event.event_id, from, "event read by the relay");
    }
}

/// Writes `event`'s outbox row; returns the `seq` it was given and the stored body. An
/// event larger than [`MAX_EVENT_BYTES`] is refused here, so the change that would publish
/// it fails and commits nothing: committed, it could never be stored by the bus.
async fn insert(conn: &mut AnyConnection, event: &Envelope) -> Result<(i64, String), sqlx::Error> {
    let body = String::from_utf8(event.to_bytes()).unwrap_or_default();
    if body.len() > MAX_EVENT_BYTES {
        return Err(sqlx::Error::Encode(
            format!(
                "event {} of type {} is {} bytes, more than the {MAX_EVENT_BYTES} an event may have",
                event.id,
                event.event_type,
                body.len()
            )
            .into(),
        ));
    }
    let seq: i64 = sqlx::query(
        "INSERT INTO outbox (event_id, event_type, body, created_at) VALUES ($1, $2, $3, $4) RETURNING seq",
    )
    .bind(&event.id)
    .bind(&event.event_type)
    .bind(body.as_str())
    .bind(unix_millis())
    .fetch_one(conn)
    .await?
    .try_get(0)?;
    Ok((seq, body))
}

fn finish(published: usize, stopped: Option<Stopped>) -> anyhow::Result<Round> {
    match stopped {
        Some(stopped) => Err(stopped.error.into()),
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
                seq: row.try_get("seq")?,
                event_id: row.try_get("event_id")?,
                event_type: row.try_get("event_type")?,
                body: Bytes::from(row.try_get::<String, _>("body")?),
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures_util::future::BoxFuture;

    use super::*;

    /// Refuses events of type `Bad` with a 400 until told to take them; stores the others.
    #[derive(Default)]
    struct Picky {
        stored: Mutex<Vec<String>>,
        takes_bad: std::sync::atomic::AtomicBool,
    }

    impl Publisher for Picky {
        fn publish<'a>(
            &'a self,
            event_type: &'a str,
            event_id: &'a str,
            _body: Bytes,
        ) -> BoxFuture<'a, Result<(), PublishError>> {
            Box::pin(async move {
                if event_type == "Bad" && !self.takes_bad.load(Ordering::Acquire) {
                    return Err(PublishError::from_status(400, "malformed".into()));
                }
                self.stored
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(event_id.to_string());
                Ok(())
            })
        }
    }

    impl Picky {
        /// The ids stored so far, in order.
        fn stored(&self) -> Vec<String> {
            self.stored
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        }
    }

    async fn outbox(dir: &tempfile::TempDir) -> anyhow::Result<Outbox> {
        let db = Db::connect(&format!("sqlite://{}/o.db", dir.path().display())).await?;
        db.migrate("test", &[&MESSAGING]).await?;
        Ok(Outbox::new(db))
    }

    /// Starts `outbox`'s relay publishing to a new [`Picky`].
    fn start_relay(outbox: &Outbox) -> (Arc<Picky>, Metrics, Shutdown) {
        let publisher = Arc::new(Picky::default());
        let metrics = Metrics::new("test");
        let shutdown = Shutdown::new();
        outbox.spawn_relay(publisher.clone(), metrics.clone(), &shutdown);
        (publisher, metrics, shutdown)
    }

    async fn stop(shutdown: Shutdown) {
        shutdown.trigger();
        shutdown.drain_background(Duration::from_secs(2)).await;
    }

    /// Commits one event of `event_type` through a change; returns its id.
    async fn commit_one(outbox: &Outbox, event_type: &str) -> anyhow::Result<String> {
        let event = Envelope::new(event_type, serde_json::json!({}));
        let mut change = outbox.begin().await?;
        change.publish(&event).await?;
        change.commit().await?;
        Ok(event.id)
    }

    #[tokio::test]
    async fn a_refused_event_is_retried_and_holds_the_rest_in_order() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let outbox = outbox(&dir).await?;
        let mut ids = Vec::new();
        for t in ["Good", "Bad", "Good", "Good"] {
            ids.push(commit_one(&outbox, t).await?);
        }
        let (publisher, metrics, shutdown) = start_relay(&outbox);
        // The refusal is an alarm, recorded on the row, and the relay keeps trying.
        switchyard_kit::wait::until("two refusals", Duration::from_secs(10), || async {
            let row = sqlx::query("SELECT attempts, last_error FROM outbox WHERE event_id = $1")
                .bind(&ids[1])
                .fetch_one(outbox.db.reader())
                .await
                .ok()?;
            let attempts: i64 = row.try_get("attempts").ok()?;
            (attempts >= 2).then(|| row.try_get::<String, _>("last_error").ok())?
        })
        .await
        .map(|reason| {
            assert!(
                reason.contains("400") && reason.contains("malformed"),
                "{reason}"
            )
        })?;
        let text = metrics.render();
        assert!(
            text.contains(
                "switchyard_outbox_refused_total{service=\"test\",type=\"Bad\",status=\"400\"}"
            ),
            "{text}"
        );
        assert_eq!(
            publisher.stored(),
            [ids[0].clone()],
            "the rest wait behind it"
        );
        assert_eq!(outbox.pending().await?, 3);
        // Once the bus takes it, it and the rest follow, in order, and nothing was set aside.
        publisher.takes_bad.store(true, Ordering::Release);
        switchyard_kit::wait::until("the outbox to drain", Duration::from_secs(10), || async {
            (outbox.pending().await.ok()? == 0).then_some(())
        })
        .await?;
        assert_eq!(publisher.stored(), ids);
        let set_aside: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox_dead_letters")
            .fetch_one(outbox.db.reader())
            .await?;
        assert_eq!(set_aside, 0);
        stop(shutdown).await;
        Ok(())
    }

    /// After a restart the table holds a backlog: a full batch read from it is followed by
    /// another read at once, not after the safety poll (which made it 256 events a second).
    #[tokio::test]
    async fn a_backlog_is_read_batch_after_batch_without_waiting() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let outbox = outbox(&dir).await?;
        let mut tx = outbox.db.pool().begin().await?;
        for _ in 0..(BATCH + 10) {
            Outbox::enqueue(&mut tx, &Envelope::new("Good", serde_json::json!({}))).await?;
        }
        tx.commit().await?;
        let publisher = Arc::new(Picky::default());
        let relay = Relay {
            outbox: outbox.clone(),
            publisher: publisher.clone(),
            metrics: Metrics::new("test"),
            stop: CancellationToken::new(),
        };
        let Some(handoff) = outbox.handoff.clone() else {
            anyhow::bail!("SQLite hands rows over");
        };
        let first = relay.publish_sqlite(&handoff, false).await?;
        assert_eq!(first, Round::Published(BATCH as usize));
        // The next round reads the table at once (no wake-up, no poll in between).
        let second = relay.publish_sqlite(&handoff, false).await?;
        assert_eq!(second, Round::Published(10));
        assert_eq!(publisher.stored().len(), BATCH as usize + 10);
        Ok(())
    }

    /// The event stored at commit carries the trace of the work that published it; an
    /// event that names its own trace keeps it, and outside any trace none is added.
    #[tokio::test]
    async fn a_published_event_carries_the_current_trace() -> anyhow::Result<()> {
        use switchyard_kit::trace_context;

        let dir = tempfile::tempdir()?;
        let outbox = outbox(&dir).await?;
        let request = TraceContext::generate();
        let own = TraceContext::generate();
        trace_context::scope(request, async {
            let mut change = outbox.begin().await?;
            change
                .publish(&Envelope::new("A", serde_json::json!({})))
                .await?;
            change
                .publish(&Envelope::new("B", serde_json::json!({})).with_trace_context(own))
                .await?;
            change.commit().await?;
            anyhow::Ok(())
        })
        .await?;
        let mut change = outbox.begin().await?;
        change
            .publish(&Envelope::new("C", serde_json::json!({})))
            .await?;
        change.commit().await?;
        let stored: Vec<Envelope> = select_batch(&mut *outbox.db.pool().acquire().await?)
            .await?
            .iter()
            .map(|p| Envelope::from_slice(&p.body))
            .collect::<Result<_, _>>()?;
        // A names the request's span as its parent: its consumers' spans hang under it.
        assert_eq!(stored[0].trace_context(), Some(request));
        assert_eq!(stored[1].trace_context(), Some(own));
        assert_eq!(stored[2].trace_context(), None);
        Ok(())
    }

    #[tokio::test]
    async fn an_event_too_large_for_the_bus_is_refused_at_commit() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let outbox = outbox(&dir).await?;
        let big = Envelope::new(
            "Good",
            serde_json::json!({"text": "x".repeat(MAX_EVENT_BYTES)}),
        );
        let mut change = outbox.begin().await?;
        let refused = change.publish(&big).await;
        assert!(
            matches!(&refused, Err(sqlx::Error::Encode(e)) if e.to_string().contains("more than")),
            "{refused:?}"
        );
        change.rollback().await?;
        // Just under the limit it is taken. An envelope's own length varies by a few bytes
        // (its time's fractional digits), so the margin: 32 bytes under, checked.
        let envelope_bytes = Envelope::new("Good", serde_json::json!({"text": ""}))
            .to_bytes()
            .len();
        let fits = Envelope::new(
            "Good",
            serde_json::json!({"text": "x".repeat(MAX_EVENT_BYTES - envelope_bytes - 32)}),
        );
        let size = fits.to_bytes().len();
        assert!(
            size <= MAX_EVENT_BYTES && size + 64 > MAX_EVENT_BYTES,
            "{size}"
        );
        let mut change = outbox.begin().await?;
        change.publish(&fits).await?;
        change.commit().await?;
        assert_eq!(outbox.pending().await?, 1);
        Ok(())
    }

    #[tokio::test]
    async fn statuses_are_told_apart() {
        // 503 and unreachable are outages; a 4xx other than "not now" is a refusal (both
        // are retried; a refusal raises the alarm).
        assert!(matches!(
            PublishError::from_status(503, String::new()),
            PublishError::Unavailable(_)
        ));
        for status in [404, 405, 408, 409, 425, 429, 500] {
            assert!(matches!(
                PublishError::from_status(status, String::new()),
                PublishError::Unavailable(_)
            ));
        }
        assert!(matches!(
            PublishError::from_status(422, String::new()),
            PublishError::Refused { status: 422, .. }
        ));
    }

    /// Commits `n` changes from each of `tasks` concurrent tasks; each change also writes
    /// its event id to `commit_order`, whose own `AUTOINCREMENT` records the order in which
    /// the changes committed.
    async fn commit_concurrently(outbox: &Outbox, tasks: usize, n: usize) -> anyhow::Result<()> {
        let mut set = tokio::task::JoinSet::new();
        for t in 0..tasks {
            let outbox = outbox.clone();
            set.spawn(async move {
                for i in 0..n {
                    let event = Envelope::new("Good", serde_json::json!({"t": t, "i": i}));
                    let mut change = outbox.begin().await?;
                    sqlx::query("INSERT INTO commit_order (event_id) VALUES ($1)")
                        .bind(&event.id)
                        .execute(&mut *change)
                        .await?;
                    change.publish(&event).await?;
                    change.commit().await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = set.join_next().await {
            done??;
        }
        Ok(())
    }

    #[tokio::test]
    async fn concurrent_changes_are_published_once_each_in_commit_order() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let outbox = outbox(&dir).await?;
        sqlx::query(
            "CREATE TABLE commit_order (n INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL)",
        )
        .execute(outbox.db.pool())
        .await?;
        // Rows left from before the relay started are found in the table.
        commit_concurrently(&outbox, 2, 5).await?;
        let (publisher, _, shutdown) = start_relay(&outbox);
        // Then changes hand their rows over while the relay runs, in whatever order their
        // tasks get to it after committing.
        commit_concurrently(&outbox, 8, 40).await?;
        switchyard_kit::wait::until("the outbox to drain", Duration::from_secs(20), || async {
            (outbox.pending().await.ok()? == 0).then_some(())
        })
        .await?;
        let committed: Vec<String> =
            sqlx::query_scalar("SELECT event_id FROM commit_order ORDER BY n")
                .fetch_all(outbox.db.reader())
                .await?;
        assert_eq!(committed.len(), 330);
        assert_eq!(
            publisher.stored(),
            committed,
            "every event once, in commit order"
        );
        stop(shutdown).await;
        Ok(())
    }

    #[tokio::test]
    async fn a_row_written_outside_a_change_is_published_after_a_wake() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let outbox = outbox(&dir).await?;
        let (publisher, _, shutdown) = start_relay(&outbox);
        let first = commit_one(&outbox, "Good").await?;
        let outside = Envelope::new("Good", serde_json::json!({}));
        let mut tx = outbox.db.pool().begin().await?;
        Outbox::enqueue(&mut tx, &outside).await?;
        tx.commit().await?;
        outbox.wake();
        let last = commit_one(&outbox, "Good").await?;
        let want = [first, outside.id, last];
        switchyard_kit::wait::until("all three published", Duration::from_secs(10), || async {
            (publisher.stored() == want).then_some(())
        })
        .await?;
        stop(shutdown).await;
        Ok(())
    }

    #[tokio::test]
    async fn committing_a_change_with_events_wakes_the_relay() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let outbox = outbox(&dir).await?;
        let mut change = outbox.begin().await?;
        change
            .publish(&Envelope::new("Good", serde_json::json!({})))
            .await?;
        change.commit().await?;
        // The commit left a wake-up for the relay: waiting for it returns at once.
        tokio::time::timeout(Duration::from_millis(100), outbox.wake.notified())
            .await
            .map_err(|_| anyhow::anyhow!("the commit did not wake the relay"))?;
        // A change without events does not.
        let change = outbox.begin().await?;
        change.commit().await?;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), outbox.wake.notified())
                .await
                .is_err()
        );
        Ok(())
    }
}
