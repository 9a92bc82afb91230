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
//! An event the bus refuses (a 4xx: malformed for it) cannot succeed by retrying, and must
//! not stall the events behind it: it is moved to the `outbox_dead_letters` table (counted
//! in `switchyard_outbox_dead_lettered_total` and logged), and the relay goes on in order.
//! The backlog is exported as the gauge `switchyard_outbox_pending`.
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
use switchyard_events::Envelope;
use switchyard_kit::clock::unix_millis;
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
]);

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
        let committed = tx.commit().await;
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

impl Relay {
    async fn run(self) {
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
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
                    if stopping {
                        return;
                    }
                    tokio::select! {
                        _ = self.outbox.wake.notified() => {}
                        _ = tokio::time::sleep(SAFETY_POLL) => self.outbox.read_table_next(),
                        _ = self.stop.cancelled() => {}
                    }
                }
                Ok(Round::Published(_) | Round::Handed(_)) => backoff.reset(),
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
                    tracing::warn!(error = %e, retry_in = ?backoff.current(), "outbox relay: publish failed");
                    backoff.wait(&self.stop).await;
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
        let (done, failure) = self.publish_in_order(&pending, stopping).await;
        if done.len() < pending.len() {
            // Stopped or failed part way: the rest are in the table.
            handoff.read_table_next();
        }
        if done.iter().any(|d| matches!(d, Done::Refused(..))) {
            let mut tx = db.pool().begin().await?;
            settle(&mut tx, &done).await?;
            tx.commit().await?;
        } else if !done.is_empty() {
            // One autocommitted statement: the writer is held for one round trip.
            let rows: Vec<&Pending> = done.iter().map(Done::row).collect();
            delete_published(&mut *db.pool().acquire().await?, &rows).await?;
        }
        if let Some(last) = done.last() {
            handoff.settled(last.row().seq);
        }
        self.count_refused(&done);
        match finish(done.len(), failure)? {
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
        let (done, failure) = self.publish_in_order(&pending, stopping).await;
        settle(&mut tx, &done).await?;
        // Committing releases the lock. If the commit fails the rows stay and are
        // published again: the bus drops duplicates by event id, consumers by inbox.
        tx.commit().await?;
        self.count_refused(&done);
        finish(done.len(), failure)
    }

    /// Publishes `pending` one after the other, stopping at the first failure that retrying
    /// can cure; returns what became of each row handled (published, or refused by the bus)
    /// and that failure, if any.
    async fn publish_in_order<'p>(
        &self,
        pending: &'p [Pending],
        stopping: bool,
    ) -> (Vec<Done<'p>>, Option<PublishError>) {
        let mut done = Vec::with_capacity(pending.len());
        for event in pending {
            if self.stop.is_cancelled() && !stopping && !done.is_empty() {
                break;
            }
            match self
                .publisher
                .publish(&event.event_type, &event.event_id, event.body.clone())
                .await
            {
                Ok(()) => {
                    tracing::trace!(event_id = %event.event_id, "event published");
                    self.metrics.event_published(&event.event_type);
                    done.push(Done::Published(event));
                }
                Err(PublishError::Refused { status, body }) => {
                    tracing::error!(
                        event_id = %event.event_id,
                        event_type = %event.event_type,
                        status,
                        reason = %body,
                        "the bus refused an event; set aside in outbox_dead_letters, the relay goes on"
                    );
                    done.push(Done::Refused(event, status, body));
                }
                Err(e) => {
                    self.metrics.event_retried("bus");
                    return (done, Some(e));
                }
            }
        }
        (done, None)
    }

    fn count_refused(&self, done: &[Done<'_>]) {
        for d in done {
            if let Done::Refused(event, ..) = d {
                self.metrics.outbox_dead_lettered(&event.event_type);
            }
        }
    }
}

/// What became of one outbox row in a round.
enum Done<'p> {
    Published(&'p Pending),
    Refused(&'p Pending, u16, String),
}

impl<'p> Done<'p> {
    fn row(&self) -> &'p Pending {
        match self {
            Done::Published(p) | Done::Refused(p, ..) => p,
        }
    }
}

/// The per-hop timeline (`switchyard-bench hops`): when the relay has each row, read back
/// from the table or handed over by its change.
fn trace_read(pending: &[Pending], handed: bool) {
    let from = if handed { "handoff" } else { "table" };
    for event in pending {
        tracing::trace!(event_id = %event.event_id, from, "event read by the relay");
    }
}

/// Writes `event`'s outbox row; returns the `seq` it was given and the stored body.
async fn insert(conn: &mut AnyConnection, event: &Envelope) -> Result<(i64, String), sqlx::Error> {
    let body = String::from_utf8(event.to_bytes()).unwrap_or_default();
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

/// Deletes the rows handled, copying the refused ones to `outbox_dead_letters` first.
async fn settle(conn: &mut AnyConnection, done: &[Done<'_>]) -> Result<(), sqlx::Error> {
    for d in done {
        if let Done::Refused(event, status, reason) = d {
            sqlx::query(
                "INSERT INTO outbox_dead_letters (seq, event_id, event_type, body, status, reason, at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (seq) DO NOTHING",
            )
            .bind(event.seq)
            .bind(&event.event_id)
            .bind(&event.event_type)
            .bind(String::from_utf8_lossy(&event.body).into_owned())
            .bind(i32::from(*status))
            .bind(reason.as_str())
            .bind(unix_millis())
            .execute(&mut *conn)
            .await?;
        }
    }
    let rows: Vec<&Pending> = done.iter().map(Done::row).collect();
    delete_published(conn, &rows).await
}

fn finish(published: usize, failure: Option<PublishError>) -> anyhow::Result<Round> {
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
async fn delete_published(conn: &mut AnyConnection, rows: &[&Pending]) -> Result<(), sqlx::Error> {
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

    /// Refuses events of type `Bad` with a 400, stores the others.
    #[derive(Default)]
    struct Picky {
        stored: Mutex<Vec<String>>,
    }

    impl Publisher for Picky {
        fn publish<'a>(
            &'a self,
            event_type: &'a str,
            event_id: &'a str,
            _body: Bytes,
        ) -> BoxFuture<'a, Result<(), PublishError>> {
            Box::pin(async move {
                if event_type == "Bad" {
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
    async fn a_refused_event_is_set_aside_and_the_rest_follow_in_order() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let outbox = outbox(&dir).await?;
        let mut ids = Vec::new();
        for t in ["Good", "Bad", "Good", "Good"] {
            ids.push(commit_one(&outbox, t).await?);
        }
        let (publisher, metrics, shutdown) = start_relay(&outbox);
        switchyard_kit::wait::until("the outbox to drain", Duration::from_secs(10), || async {
            (outbox.pending().await.ok()? == 0).then_some(())
        })
        .await?;
        assert_eq!(
            publisher.stored(),
            [ids[0].clone(), ids[2].clone(), ids[3].clone()]
        );
        let row = sqlx::query("SELECT event_id, status, reason FROM outbox_dead_letters")
            .fetch_one(outbox.db.reader())
            .await?;
        assert_eq!(row.try_get::<String, _>(0)?, ids[1]);
        assert_eq!(row.try_get::<i32, _>(1)?, 400);
        assert_eq!(row.try_get::<String, _>(2)?, "malformed");
        let text = metrics.render();
        assert!(
            text.contains("switchyard_outbox_dead_lettered_total{"),
            "{text}"
        );
        assert!(
            text.contains("switchyard_outbox_pending{service=\"test\"} 0"),
            "the backlog gauge reads 0: {text}"
        );
        stop(shutdown).await;
        Ok(())
    }

    #[tokio::test]
    async fn an_outage_keeps_the_order_instead_of_setting_events_aside() {
        // 503 and unreachable are outages: retried, never dead-lettered.
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
