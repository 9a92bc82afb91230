//! Delivery: one loop per subscriber, each with its own persistent cursor.
//!
//! A loop posts events one at a time in log order and moves its cursor only past an event
//! the subscriber acknowledged with 2xx, set aside, or parked, so order and at-least-once
//! hold whatever fails. An event of a type the subscriber does not take is skipped.
//! Connection errors, 503, 404/405 (a subscriber not ready or misrouted), 408 and 429 are
//! retried with capped, jittered backoff: a subscriber that cannot be reached, or whose
//! database is away, is waited for however long it takes. One that answers another 5xx to
//! the same event `max_deliver` times has that event set aside. Other 4xx answers mean the
//! subscriber judged the event malformed: retrying cannot help. An event set aside is
//! recorded in `dead_letters` (visible there, through the ops listener's `/dead-letters`
//! and `switchyard dead-letters`, in the `events_dead_lettered` metric and in the log) and
//! the loop moves on; a replayed dead letter is delivered again.
//!
//! 425 Too Early means "not yet" (a versioned update whose predecessor the subscriber has
//! not applied). Such an event is parked: recorded in `parked`, and delivered again after
//! a short delay (10 ms doubling to 1 s) between the events that follow it, which are not
//! held up by it. A parked event is not counted as a failure, and is set aside once
//! `DEFER_LIMIT_MS` has passed since it was first deferred.
//!
//! Cursors are flushed to the database every few milliseconds and at shutdown; after a
//! crash a subscriber may receive the last few events again, which its inbox ignores.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::Row;
use switchyard_events::TRACEPARENT;
use switchyard_kit::clock::unix_millis;
use switchyard_kit::spans::{Kind, Span, TraceContext};
use switchyard_kit::{Backoff, BusSecret, Metrics, Shutdown};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Settings, Subscriber};
use crate::log::{EventLog, Stored};

const PAGE: usize = 256;
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// First and longest pause before a parked event is delivered again.
const MIN_DEFER: Duration = Duration::from_millis(10);
const MAX_DEFER: Duration = Duration::from_secs(1);
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// A subscriber's position, shared between its loop and the flusher.
struct Cursor {
    name: String,
    position: AtomicI64,
    flushed: AtomicI64,
}

/// Dead letters handed back for delivery (`POST /dead-letters/.../replay`), per subscriber:
/// the replay records them in `parked`, then tells the subscriber's loop here.
#[derive(Clone, Default)]
pub struct Replays {
    inner: Arc<HashMap<String, Arc<ReplayQueue>>>,
    /// Every subscriber's cursor, in the order of the settings.
    cursors: Arc<Vec<Arc<Cursor>>>,
}

#[derive(Default)]
struct ReplayQueue {
    seqs: Mutex<Vec<i64>>,
    wake: Notify,
}

impl Replays {
    fn for_subscribers(subscribers: &[Subscriber], cursors: Vec<Arc<Cursor>>) -> Replays {
        Replays {
            inner: Arc::new(
                subscribers
                    .iter()
                    .map(|s| (s.name.clone(), Arc::new(ReplayQueue::default())))
                    .collect(),
            ),
            cursors: Arc::new(cursors),
        }
    }

    /// Each subscriber's name and position: the last event it is past.
    pub fn positions(&self) -> Vec<(String, i64)> {
        self.cursors
            .iter()
            .map(|c| (c.name.clone(), c.position.load(Ordering::Acquire)))
            .collect()
    }

    /// Whether `subscriber` is one of the bus's.
    pub fn knows(&self, subscriber: &str) -> bool {
        self.inner.contains_key(subscriber)
    }

    /// Tells `subscriber`'s loop that `seqs` were parked for it.
    pub fn hand_back(&self, subscriber: &str, seqs: &[i64]) {
        if let Some(queue) = self.inner.get(subscriber) {
            queue
                .seqs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(seqs);
            queue.wake.notify_one();
        }
    }

    fn queue(&self, subscriber: &str) -> Arc<ReplayQueue> {
        self.inner.get(subscriber).cloned().unwrap_or_default()
    }
}

/// Starts a delivery loop per subscriber and the cursor flusher; returns the handle the
/// dead-letter routes hand replayed events back through.
pub async fn start(
    settings: &Settings,
    log: EventLog,
    metrics: Metrics,
    shutdown: &Shutdown,
) -> anyhow::Result<Replays> {
    // Each delivery's timeout is its subscriber's ack wait.
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(4)
        .tcp_nodelay(true)
        .build()?;
    let mut cursors = Vec::new();
    for subscriber in &settings.subscribers {
        let position = load_cursor(&log, &subscriber.name).await?;
        cursors.push(Arc::new(Cursor {
            name: subscriber.name.clone(),
            position: AtomicI64::new(position),
            flushed: AtomicI64::new(position),
        }));
    }
    let replays = Replays::for_subscribers(&settings.subscribers, cursors.clone());
    let deliveries = TaskTracker::new();
    for (subscriber, cursor) in settings.subscribers.iter().zip(&cursors) {
        let cursor = cursor.clone();
        let position = cursor.position.load(Ordering::Acquire);
        let delivery = Delivery {
            subscriber: subscriber.clone(),
            cursor,
            log: log.clone(),
            client: client.clone(),
            metrics: metrics.clone(),
            max_backoff: settings.max_backoff,
            defer_limit: settings.defer_limit,
            secret: settings.secret.clone(),
            replays: replays.queue(&subscriber.name),
            parked: BTreeMap::new(),
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
        max_age: settings.log_max_age,
        last_prune: Instant::now(),
        stop: shutdown.background_token(),
    };
    shutdown.spawn("cursor-flusher", flusher.run());
    Ok(replays)
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
    secret: Option<BusSecret>,
    replays: Arc<ReplayQueue>,
    /// Parked events by `seq`: deferred, or replayed from the dead letters.
    parked: BTreeMap<i64, ParkedEvent>,
    stop: CancellationToken,
}

/// An event waiting to be delivered again.
struct ParkedEvent {
    /// Wall-clock milliseconds of its first deferral (or of its replay).
    since_ms: i64,
    next_at: Instant,
    defer: Backoff,
    /// 5xx answers to it since it was parked.
    failures: u32,
}

impl ParkedEvent {
    fn new(since_ms: i64) -> Self {
        let mut defer = Backoff::new(MIN_DEFER, MAX_DEFER);
        ParkedEvent {
            since_ms,
            next_at: Instant::now() + defer.next_delay(),
            defer,
            failures: 0,
        }
    }
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

/// What became of an event on the main path.
enum Taken {
    /// Acknowledged, parked or set aside: the cursor moves past it.
    Done,
    /// Shutting down.
    Stopped,
}

impl Delivery {
    async fn run(mut self) {
        if let Err(e) = self.load_parked().await {
            tracing::warn!(subscriber = %self.subscriber.name, error = %e, "could not read the parked events; they are read at the next start");
        }
        let mut head = self.log.watch_head();
        let mut backoff = Backoff::new(MIN_BACKOFF, self.max_backoff.max(MIN_BACKOFF));
        while !self.stop.is_cancelled() {
            self.take_replays();
            self.retry_parked(&mut backoff).await;
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
                let next_parked = self.parked.values().map(|p| p.next_at).min();
                tokio::select! {
                    _ = head.changed() => {}
                    _ = self.replays.wake.notified() => {}
                    _ = sleep_until(next_parked) => {}
                    _ = self.stop.cancelled() => return,
                }
                continue;
            }
            for event in batch {
                if self.subscriber.accepts(&event.event_type)
                    && matches!(self.deliver_one(&event, &mut backoff).await, Taken::Stopped)
                {
                    return;
                }
                self.cursor.position.store(event.seq, Ordering::Release);
                if self.parked_due() {
                    self.retry_parked(&mut backoff).await;
                }
            }
        }
    }

    /// Delivers `event` until it is acknowledged, parked or set aside.
    async fn deliver_one(&mut self, event: &Stored, backoff: &mut Backoff) -> Taken {
        let mut failures = 0u32;
        loop {
            if self.stop.is_cancelled() {
                return Taken::Stopped;
            }
            let set_aside = match self.deliver(event).await {
                Outcome::Delivered => {
                    self.delivered(event);
                    backoff.reset();
                    return Taken::Done;
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
                    tracing::debug!(subscriber = %self.subscriber.name, seq = event.seq, %reason, "event parked; the events after it go on");
                    while let Err(e) = self.park(event.seq).await {
                        tracing::warn!(error = %e, "could not park an event, retrying");
                        if !backoff.wait(&self.stop).await {
                            return Taken::Stopped;
                        }
                    }
                    return Taken::Done;
                }
            };
            if let Some((status, reason)) = set_aside {
                while let Err(e) = self.set_aside(event.seq, status, &reason).await {
                    tracing::warn!(error = %e, "could not record the dead letter, retrying");
                    if !backoff.wait(&self.stop).await {
                        return Taken::Stopped;
                    }
                }
                return Taken::Done;
            }
        }
    }

    fn delivered(&self, event: &Stored) {
        tracing::trace!(subscriber = %self.subscriber.name, seq = event.seq, event_type = %event.event_type, correlation_id = event.correlation_id.as_deref().unwrap_or(""), "event delivered");
        let latency = event.appended_at.map(|t| t.elapsed().as_secs_f64());
        self.metrics.event_delivered(&self.subscriber.name, latency);
    }

    /// Whether a parked event is due.
    fn parked_due(&self) -> bool {
        let now = Instant::now();
        self.parked.values().any(|p| p.next_at <= now)
    }

    /// Delivers each parked event that is due once, oldest first.
    async fn retry_parked(&mut self, backoff: &mut Backoff) {
        let now = Instant::now();
        let due: Vec<i64> = self
            .parked
            .iter()
            .filter(|(_, p)| p.next_at <= now)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in due {
            if self.stop.is_cancelled() {
                return;
            }
            let event = match self.log.read_one(seq).await {
                Ok(Some(event)) => event,
                Ok(None) => {
                    // Not in the log (a replay of an event the log no longer has).
                    self.unpark(seq).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, seq, "reading a parked event failed");
                    return;
                }
            };
            let outcome = self.deliver(&event).await;
            let Some(parked) = self.parked.get_mut(&seq) else {
                continue;
            };
            let set_aside = match outcome {
                Outcome::Delivered => {
                    self.delivered(&event);
                    backoff.reset();
                    self.unpark(seq).await;
                    None
                }
                Outcome::DeadLetter(status, reason) => Some((status, reason)),
                Outcome::Deferred(reason) => {
                    let deferred_for = unix_millis().saturating_sub(parked.since_ms);
                    if u128::try_from(deferred_for).unwrap_or(0) >= self.defer_limit.as_millis() {
                        Some((
                            425,
                            format!("deferred for longer than {:?}: {reason}", self.defer_limit),
                        ))
                    } else {
                        parked.next_at = Instant::now() + parked.defer.next_delay();
                        None
                    }
                }
                Outcome::Failed(status, reason) => {
                    parked.failures += 1;
                    self.metrics.event_retried(&self.subscriber.name);
                    if parked.failures >= self.subscriber.max_deliver {
                        Some((
                            status,
                            format!("{} failed deliveries, last: {reason}", parked.failures),
                        ))
                    } else {
                        parked.next_at = Instant::now() + backoff.next_delay();
                        None
                    }
                }
                Outcome::Retry(reason) => {
                    // The subscriber is away: the main path waits for it.
                    tracing::debug!(subscriber = %self.subscriber.name, seq, %reason, "parked delivery failed");
                    parked.next_at = Instant::now() + backoff.next_delay();
                    return;
                }
            };
            if let Some((status, reason)) = set_aside
                && let Err(e) = self.set_aside(seq, status, &reason).await
            {
                tracing::warn!(error = %e, "could not record the dead letter, retrying");
                if let Some(parked) = self.parked.get_mut(&seq) {
                    parked.next_at = Instant::now() + backoff.next_delay();
                }
            }
        }
    }

    /// Records `seq` as parked (before the cursor moves past it) and keeps it here.
    async fn park(&mut self, seq: i64) -> Result<(), sqlx::Error> {
        let since = unix_millis();
        sqlx::query(
            "INSERT INTO parked (subscriber, seq, since) VALUES ($1, $2, $3) ON CONFLICT (subscriber, seq) DO NOTHING",
        )
        .bind(&self.subscriber.name)
        .bind(seq)
        .bind(since)
        .execute(self.log.db().pool())
        .await?;
        self.parked
            .entry(seq)
            .or_insert_with(|| ParkedEvent::new(since));
        self.metrics
            .set_parked(&self.subscriber.name, self.parked.len());
        Ok(())
    }

    /// Forgets a parked event that was delivered.
    async fn unpark(&mut self, seq: i64) {
        self.parked.remove(&seq);
        self.metrics
            .set_parked(&self.subscriber.name, self.parked.len());
        if let Err(e) = sqlx::query("DELETE FROM parked WHERE subscriber = $1 AND seq = $2")
            .bind(&self.subscriber.name)
            .bind(seq)
            .execute(self.log.db().pool())
            .await
        {
            // Left in the table, it is delivered once more after a restart (a duplicate
            // the subscriber's inbox ignores).
            tracing::debug!(error = %e, seq, "could not delete a parked row");
        }
    }

    /// Reads the events parked for this subscriber before a restart.
    async fn load_parked(&mut self) -> Result<(), sqlx::Error> {
        let rows = sqlx::query("SELECT seq, since FROM parked WHERE subscriber = $1 ORDER BY seq")
            .bind(&self.subscriber.name)
            .fetch_all(self.log.db().pool())
            .await?;
        for row in rows {
            let seq: i64 = row.try_get("seq")?;
            let since: i64 = row.try_get("since")?;
            self.parked.insert(seq, ParkedEvent::new(since));
        }
        self.metrics
            .set_parked(&self.subscriber.name, self.parked.len());
        Ok(())
    }

    /// Takes the dead letters replayed for this subscriber (already in `parked`).
    fn take_replays(&mut self) {
        let seqs = std::mem::take(
            &mut *self
                .replays
                .seqs
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let now = unix_millis();
        for seq in seqs {
            self.parked.insert(seq, ParkedEvent::new(now));
        }
        self.metrics
            .set_parked(&self.subscriber.name, self.parked.len());
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
        if let Some(secret) = &self.secret {
            request = request.header(reqwest::header::AUTHORIZATION, secret.authorization());
        }
        // Exported, the delivery is a span under the one that published the event, and the
        // subscriber's work hangs under it (its `traceparent`).
        let mut span = switchyard_kit::otel::exporting().then(|| {
            // The event's id and the span that published it, in one read of its body.
            #[derive(serde::Deserialize)]
            struct Published<'a> {
                #[serde(borrow, default)]
                id: Option<&'a str>,
                #[serde(borrow, default)]
                traceparent: Option<&'a str>,
            }
            let published = serde_json::from_slice::<Published>(&event.body).ok();
            let mut span = Span::start(
                || format!("deliver {} to {}", event.event_type, self.subscriber.name),
                Kind::Client,
                published
                    .as_ref()
                    .and_then(|p| p.traceparent)
                    .and_then(TraceContext::parse),
            );
            span.set("messaging.destination.name", event.event_type.clone());
            span.set("switchyard.subscriber", self.subscriber.name.clone());
            if let Some(id) = published.and_then(|p| p.id) {
                span.set("messaging.message.id", id.to_string());
            }
            span
        });
        if let Some(span) = &span {
            request = request.header(TRACEPARENT, span.context().header());
        }
        let sent = request.send().await;
        if let (Some(span), Ok(response)) = (span.as_mut(), &sent) {
            span.set(
                "http.response.status_code",
                i64::from(response.status().as_u16()),
            );
            if !response.status().is_success() {
                span.fail(response.status().to_string());
            }
        }
        drop(span);
        match sent {
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
                    && !matches!(status.as_u16(), 401 | 403 | 404 | 405 | 408 | 429)
                {
                    Outcome::DeadLetter(status.as_u16(), text())
                } else if status.is_server_error() && status.as_u16() != 503 {
                    Outcome::Failed(status.as_u16(), text())
                } else {
                    // 503 is "not ready" (starting, its database away); 401/403 a subscriber
                    // that does not share this bus's secret (a configuration to fix, not an
                    // event to drop): waited for, with a warning.
                    if matches!(status.as_u16(), 401 | 403) {
                        tracing::warn!(subscriber = %self.subscriber.name, %status, "the subscriber refuses this bus's deliveries (EVENT_BUS_SECRET differs?); retrying");
                    }
                    Outcome::Retry(format!("answered {status}"))
                }
            }
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    /// Records `seq` in `dead_letters` and forgets it if it was parked.
    async fn set_aside(&mut self, seq: i64, status: u16, reason: &str) -> Result<(), sqlx::Error> {
        let mut tx = self.log.db().pool().begin().await?;
        sqlx::query(
            "INSERT INTO dead_letters (subscriber, seq, status, reason, at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (subscriber, seq) DO NOTHING",
        )
        .bind(&self.subscriber.name)
        .bind(seq)
        .bind(i32::from(status))
        .bind(reason)
        .bind(unix_millis())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM parked WHERE subscriber = $1 AND seq = $2")
            .bind(&self.subscriber.name)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::warn!(subscriber = %self.subscriber.name, seq, status, %reason, "event set aside in dead_letters");
        self.metrics.event_dead_lettered(&self.subscriber.name);
        self.parked.remove(&seq);
        self.metrics
            .set_parked(&self.subscriber.name, self.parked.len());
        Ok(())
    }

    async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.stop.cancelled() => {}
        }
    }
}

/// Sleeps until `at`, or for ever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct Flusher {
    log: EventLog,
    cursors: Vec<Arc<Cursor>>,
    deliveries: TaskTracker,
    /// The log's retention (`LOG_MAX_AGE_SECONDS`), if any.
    max_age: Option<Duration>,
    last_prune: Instant,
    stop: CancellationToken,
}

/// How often the log is pruned, when it has a retention.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl Flusher {
    async fn run(mut self) {
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
            if let Some(max_age) = self.max_age
                && self.last_prune.elapsed() >= PRUNE_EVERY
            {
                self.last_prune = Instant::now();
                self.prune(max_age).await;
            }
        }
    }

    /// Deletes what the log's retention lets go, up to the slowest subscriber's saved
    /// cursor, in batches.
    async fn prune(&self, max_age: Duration) {
        let Some(up_to) = self
            .cursors
            .iter()
            .map(|c| c.flushed.load(Ordering::Acquire))
            .min()
        else {
            return;
        };
        let mut total = 0;
        loop {
            match self.log.prune(max_age, up_to).await {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => {
                    tracing::warn!(error = %e, "could not prune the log");
                    break;
                }
            }
            if self.stop.is_cancelled() {
                break;
            }
        }
        if total > 0 {
            tracing::info!(deleted = total, ?max_age, "log pruned past its retention");
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
