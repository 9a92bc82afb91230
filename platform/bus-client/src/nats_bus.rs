//! The NATS JetStream backend (`EVENT_BUS_URL=nats://...`).
//!
//! Layout, for a stream `S` (`BUS_STREAM`, default `BLOG`) and a subject prefix `p`
//! (`BUS_SUBJECT_PREFIX`, default `blog`):
//!
//! * the stream `S` (file storage, kept forever, duplicate window 2 min) holds every event on
//!   the subject `p.<EventType>`; the payload is the JSON envelope, unchanged;
//! * publishing sets `Nats-Msg-Id` to the event id and waits for the stream's PubAck, so an
//!   `Ok` means stored; a republished event (outbox retry) is acknowledged as a duplicate and
//!   not stored twice;
//! * each consuming service has one durable pull consumer named after it, shared by its
//!   replicas (each event is handled by one replica), with explicit acks: an event is acked
//!   only after the handler returned `Ok` (its transaction committed). A transient failure is
//!   NAKed with a bounded backoff; a malformed event is terminated and copied to the
//!   dead-letter subject `p.deadletter.<consumer>`, as is an event whose deliveries are
//!   exhausted (`max_deliver`). Dead letters are kept in the stream `S_DEADLETTER`;
//! * `Envelope.seq` is the JetStream stream sequence, so positions and catch-up work as with
//!   the HTTP bus; [`NatsBus::page`] reads the stream from a sequence.
//!
//! Order: handlers run a few at a time per replica (`CONSUMER_CONCURRENCY`, up to
//! `max_ack_pending` unacknowledged per consumer), so events are not applied in stream
//! order. Services converge in any order: the blog's read model accepts a comment before
//! its post; a versioned replica answers "not yet" ([`HandleError::NotYet`]) for an update
//! whose predecessor it has not applied, and the event is NAKed with a short delay and
//! comes back. Deferrals do not count toward `max_deliver`: transient failures are counted
//! per event by the replica, and the server's own limit is only a backstop above both. A
//! deferral that outlasts `defer_limit` (time since the event's first deferral, on any
//! replica) is dead-lettered.
//!
//! Filtering: a consumer that takes some types only gets a subject filter on the server
//! (one subject on NATS 2.9, several from 2.10); other events are acknowledged unhandled.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, AckKind, consumer, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use switchyard_events::Envelope;
use switchyard_kit::clock::unix_millis;
use switchyard_kit::spans::{Kind, Span};
use switchyard_kit::trace_context;
use switchyard_kit::{Backoff, Metrics, ReadinessCheck, Shutdown};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::{PublishError, Publisher};
use crate::consumer::{EventHandler, HandleError};
use crate::consumer_settings::ConsumerSettings;
use crate::nats_deferrals::{self, Deferrals};

/// Default stream name (`BUS_STREAM`).
pub const DEFAULT_STREAM: &str = "BLOG";
/// Default subject prefix (`BUS_SUBJECT_PREFIX`).
pub const DEFAULT_SUBJECT_PREFIX: &str = "blog";
/// How long the stream remembers message ids to drop republished events.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Most messages one pull asks for.
const PULL_BATCH: usize = 16;
/// How many messages a consumer holds beyond its handlers, across its pulls: they wait
/// for a handler here, kept alive with progress acks, so a free handler does not wait a
/// round trip for its next message.
const LOOKAHEAD: usize = 16;
/// How long one pull request waits for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// First and longest pause between tries of an event whose handling failed transiently.
const MIN_TRANSIENT_RETRY: Duration = Duration::from_millis(100);
const MAX_TRANSIENT_RETRY: Duration = Duration::from_secs(5);
/// Longest wait for a PubAck.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest readiness round trip.
const READINESS_TIMEOUT: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// NAK delay when a dead letter could not be stored.
const MAX_NAK_DELAY: Duration = Duration::from_secs(5);

/// The header that marks a replayed dead letter for one consumer: every other consumer
/// acknowledges it unhandled.
pub const REPLAY_FOR_HEADER: &str = "Switchyard-Replay-For";

/// A consumer's dead letter in the dead-letter stream.
#[derive(Debug, Clone)]
pub struct NatsDeadLetter {
    /// Its sequence in the dead-letter stream.
    pub id: u64,
    pub consumer: String,
    /// Where the event is in the app's stream.
    pub stream_seq: Option<u64>,
    pub reason: String,
    /// When it was set aside (RFC 3339).
    pub at: String,
    pub event_type: Option<String>,
    pub event_id: Option<String>,
    pub payload: Bytes,
}

impl NatsDeadLetter {
    fn of(consumer: &str, message: &jetstream::message::StreamMessage) -> Self {
        let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_string());
        let event = Envelope::from_slice(&message.payload).ok();
        NatsDeadLetter {
            id: message.sequence,
            consumer: consumer.to_string(),
            stream_seq: header("Switchyard-Stream-Seq").and_then(|s| s.parse().ok()),
            reason: header("Switchyard-Reason").unwrap_or_default(),
            at: message
                .time
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            event_type: event.as_ref().map(|e| e.event_type.clone()),
            event_id: event.map(|e| e.id).filter(|id| !id.is_empty()),
            payload: message.payload.clone(),
        }
    }
}

/// A connection to NATS JetStream for one app's stream.
pub struct NatsBus {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: String,
    prefix: String,
    /// Set once both streams are known to exist; cleared when the server says otherwise.
    streams_ready: AtomicBool,
    ensuring: Mutex<()>,
    /// The bucket of deferral counts shared by a consumer's replicas, opened when first
    /// needed.
    deferral_store: tokio::sync::OnceCell<kv::Store>,
    /// How many servers of a cluster keep each stream (1 to 5).
    replicas: usize,
    /// How long the stream keeps an event (`None`: for ever).
    max_age: Option<Duration>,
    /// Only reads: the streams and the deferral bucket are taken as they are, never
    /// created or brought to this client's settings (the console's user may not).
    watch_only: bool,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("stream", &self.stream)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Checks a stream name: letters, digits, `_` and `-`.
pub fn check_stream_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 200
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "stream name {name:?} must be letters, digits, '_' or '-'"
        ));
    }
    Ok(())
}

/// Checks a subject prefix: dot-separated tokens of letters, digits, `_` and `-`.
pub fn check_subject_prefix(prefix: &str) -> Result<(), String> {
    let ok = !prefix.is_empty()
        && prefix.split('.').all(|token| {
            !token.is_empty()
                && token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "subject prefix {prefix:?} must be dot-separated tokens of letters, digits, '_' or '-'"
        ))
    }
}

/// The inbox prefix of the NATS user `user` (its replies arrive under it).
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX_{}", subject_token(user))
}

/// The subject token for an event type: characters NATS gives a meaning to are replaced.
pub fn subject_token(event_type: &str) -> String {
    let token: String = event_type
        .chars()
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if token.is_empty() {
        "_".to_string()
    } else {
        token
    }
}

/// The servers of `url`: one `nats://host:port`, or several of one cluster separated by
/// commas (the client connects to any and moves to another when it goes away).
fn servers(url: &str) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
    url.split(',')
        .map(|server| {
            server
                .trim()
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| anyhow::anyhow!("{server:?} is not a NATS server address: {e}"))
        })
        .collect()
}

impl NatsBus {
    /// Connects to the NATS server at `url` for the stream `stream` with subjects under
    /// `subject_prefix`. The connection is retried in the background when the server is not
    /// reachable yet (readiness reports it); the streams are created on first use.
    pub async fn connect(url: &str, stream: &str, subject_prefix: &str) -> anyhow::Result<Self> {
        NatsBus::connect_as(url, stream, subject_prefix, None).await
    }

    /// [`NatsBus::connect`] as the NATS user `credentials` (a server with users: each
    /// service may publish its own events and consume its own durable only).
    pub async fn connect_as(
        url: &str,
        stream: &str,
        subject_prefix: &str,
        credentials: Option<&crate::bus::NatsCredentials>,
    ) -> anyhow::Result<Self> {
        check_stream_name(stream).map_err(anyhow::Error::msg)?;
        check_subject_prefix(subject_prefix).map_err(anyhow::Error::msg)?;
        let mut options = async_nats::ConnectOptions::new();
        if let Some(c) = credentials {
            // Replies come to an inbox of this user's own: its permissions let it read
            // those, never another service's.
            options = async_nats::ConnectOptions::with_user_and_password(
                c.user.clone(),
                c.password.clone(),
            )
            .custom_inbox_prefix(inbox_prefix(&c.user));
        }
        let client = options
            .name(format!("switchyard {stream}"))
            .connection_timeout(Duration::from_secs(2))
            .retry_on_initial_connect()
            .reconnect_delay_callback(|attempts| {
                // async-nats asks before the first connection too (attempts = 1): no wait then.
                let attempts = u32::try_from(attempts.saturating_sub(1))
                    .unwrap_or(u32::MAX)
                    .min(20);
                (Duration::from_millis(100) * attempts).min(MAX_BACKOFF)
            })
            .connect(servers(url)?)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to NATS at {url}: {e}"))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(PUBLISH_TIMEOUT);
        Ok(NatsBus {
            client,
            js,
            stream: stream.to_string(),
            prefix: subject_prefix.to_string(),
            streams_ready: AtomicBool::new(false),
            ensuring: Mutex::new(()),
            deferral_store: tokio::sync::OnceCell::new(),
            max_age: None,
            replicas: 1,
            watch_only: false,
        })
    }

    /// The same connection, reading only when `watch_only` ([`BusConfig::watching`]).
    ///
    /// [`BusConfig::watching`]: crate::bus::BusConfig::watching
    pub fn watching(mut self, watch_only: bool) -> Self {
        self.watch_only = watch_only;
        self
    }

    /// The same connection, keeping events in the stream for `max_age` (`None`: for ever);
    /// an existing stream is brought to it.
    pub fn with_max_age(mut self, max_age: Option<Duration>) -> Self {
        self.max_age = max_age;
        self
    }

    /// The same connection, its streams kept by `replicas` servers of the cluster (1 to 5;
    /// a JetStream limit); an existing stream is brought to it.
    pub fn with_stream_replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.clamp(1, 5);
        self
    }

    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    pub fn subject_prefix(&self) -> &str {
        &self.prefix
    }

    /// The stream that keeps dead letters.
    pub fn dead_letter_stream_name(&self) -> String {
        format!("{}_DEADLETTER", self.stream)
    }

    /// The subject an event type is published on.
    pub fn subject_for(&self, event_type: &str) -> String {
        format!("{}.{}", self.prefix, subject_token(event_type))
    }

    /// The subject a consumer's dead letters are published on.
    pub fn dead_letter_subject(&self, consumer: &str) -> String {
        format!("{}.deadletter.{}", self.prefix, subject_token(consumer))
    }

    /// The underlying NATS client (benchmarks, tools).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context (benchmarks, tools).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Creates the event stream and the dead-letter stream if they are missing.
    pub async fn ensure_streams(&self) -> anyhow::Result<()> {
        if self.streams_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let _one = self.ensuring.lock().await;
        if self.streams_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.watch_only {
            // Made by the app's services, as they want them; a watcher waits for them.
            for name in [self.stream.clone(), self.dead_letter_stream_name()] {
                self.js.get_stream(&name).await.map_err(|e| {
                    anyhow::anyhow!("stream {name} is not there yet (its services make it): {e}")
                })?;
            }
            self.streams_ready.store(true, Ordering::Release);
            return Ok(());
        }
        let max_age = self.max_age.unwrap_or_default();
        let events_config = stream::Config {
            name: self.stream.clone(),
            description: Some("Switchyard events".to_string()),
            subjects: vec![format!("{}.*", self.prefix)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            duplicate_window: DUPLICATE_WINDOW,
            max_age,
            num_replicas: self.replicas,
            ..Default::default()
        };
        let mut events = self.get_or_create(events_config).await?;
        let config = events.info().await?.config.clone();
        if config.max_age != max_age || config.num_replicas != self.replicas {
            // A stream created before, with another retention or replica count: brought to
            // this one.
            self.js
                .update_stream(stream::Config {
                    max_age,
                    num_replicas: self.replicas,
                    ..config
                })
                .await
                .map_err(|e| anyhow::anyhow!("cannot update stream {}: {e}", self.stream))?;
            tracing::info!(stream = %self.stream, ?max_age, replicas = self.replicas, "stream retention updated");
        }
        let dead = self.dead_letter_stream_name();
        self.get_or_create(stream::Config {
            name: dead.clone(),
            description: Some("Switchyard dead letters".to_string()),
            subjects: vec![format!("{}.deadletter.>", self.prefix)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            duplicate_window: DUPLICATE_WINDOW,
            num_replicas: self.replicas,
            ..Default::default()
        })
        .await?;
        self.streams_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// The stream of `config`, created if missing. Another client (a replica, a tool)
    /// creating it at the same moment with other settings makes the creation fail; the
    /// stream it made is then taken as it is (the caller brings it to these settings).
    async fn get_or_create(&self, config: stream::Config) -> anyhow::Result<stream::Stream> {
        let name = config.name.clone();
        match self.js.get_or_create_stream(config).await {
            Ok(stream) => Ok(stream),
            Err(first) => self
                .js
                .get_stream(&name)
                .await
                .map_err(|_| anyhow::anyhow!("cannot create stream {name}: {first}")),
        }
    }

    /// The bucket of deferral counts ([`nats_deferrals`]); `None` while it cannot be opened.
    async fn deferral_store(&self) -> Option<&kv::Store> {
        match self
            .deferral_store
            .get_or_try_init(|| nats_deferrals::open(&self.js, &self.stream, self.replicas))
            .await
        {
            Ok(store) => Some(store),
            Err(e) => {
                tracing::debug!(error = %e, "deferral counts: this replica's own only");
                None
            }
        }
    }

    /// Deletes both streams and the deferral counts (tests and benchmarks clean up with it).
    pub async fn delete_streams(&self) -> anyhow::Result<()> {
        self.streams_ready.store(false, Ordering::Release);
        let _ = self
            .js
            .delete_stream(format!("KV_{}", nats_deferrals::bucket_name(&self.stream)))
            .await;
        for name in [self.stream.clone(), self.dead_letter_stream_name()] {
            if let Err(e) = self.js.delete_stream(&name).await
                && !matches!(
                    e.kind(),
                    jetstream::context::DeleteStreamErrorKind::JetStream(_)
                )
            {
                return Err(anyhow::anyhow!("cannot delete stream {name}: {e}"));
            }
        }
        Ok(())
    }

    /// Publishes `body` on `subject` with the message id `id` and waits for the PubAck.
    /// Returns whether the stream already had that id (a duplicate, not stored again).
    pub async fn publish_raw(
        &self,
        subject: String,
        id: Option<&str>,
        body: Bytes,
        headers: &[(&str, String)],
    ) -> anyhow::Result<bool> {
        self.ensure_streams().await?;
        let mut message = jetstream::message::PublishMessage::build().payload(body);
        if let Some(id) = id {
            message = message.message_id(id);
        }
        for (name, value) in headers {
            message = message.header(*name, value.as_str());
        }
        let sent = async {
            let ack = self.js.send_publish(subject, message).await?.await?;
            Ok::<_, async_nats::Error>(ack.duplicate)
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, sent).await {
            Ok(Ok(duplicate)) => Ok(duplicate),
            Ok(Err(e)) => {
                let text = e.to_string();
                if text.contains("no responders") || text.contains("stream not found") {
                    // The stream is gone (deleted, or a server without storage restarted).
                    self.streams_ready.store(false, Ordering::Release);
                }
                Err(anyhow::anyhow!("publish failed: {text}"))
            }
            Err(_) => Err(anyhow::anyhow!(
                "no PubAck within {}s",
                PUBLISH_TIMEOUT.as_secs()
            )),
        }
    }

    /// One page of the log: events with `seq > after`, oldest first, at most `limit`; each
    /// event's `seq` is its stream sequence. Payloads that are not envelopes are skipped.
    ///
    /// Read one message at a time from the stream (`STREAM.MSG.GET` of the next event
    /// subject from a sequence): no consumer is made, so a service allowed to read the
    /// stream needs no right to pull from anyone's consumer.
    pub async fn page(&self, after: i64, limit: u32) -> anyhow::Result<Vec<Envelope>> {
        self.ensure_streams().await?;
        let stream = self.js.get_stream(&self.stream).await?;
        let subjects = format!("{}.*", self.prefix);
        let mut next = u64::try_from(after).unwrap_or(0) + 1;
        let mut events = Vec::new();
        let mut read = 0u32;
        while read < limit {
            let Some(message) = next_message(&stream, next, &subjects)
                .await
                .map_err(|e| anyhow::anyhow!("reading the stream: {e}"))?
            else {
                break;
            };
            read += 1;
            next = message.sequence + 1;
            match envelope_of(&message.payload, message.sequence) {
                Ok(event) => events.push(event),
                Err(e) => {
                    tracing::warn!(seq = message.sequence, error = %e, "skipping a payload that is not an event")
                }
            }
        }
        Ok(events)
    }

    /// The dead letters of `consumer`, oldest first (at most `limit`), each with its id in
    /// the dead-letter stream.
    pub async fn dead_letters(
        &self,
        consumer: &str,
        limit: usize,
    ) -> anyhow::Result<Vec<NatsDeadLetter>> {
        self.ensure_streams().await?;
        let stream = self.js.get_stream(self.dead_letter_stream_name()).await?;
        let subject = self.dead_letter_subject(consumer);
        let mut out = Vec::new();
        let mut from = 1;
        while out.len() < limit {
            let Some(message) = next_message(&stream, from, &subject)
                .await
                .map_err(|e| anyhow::anyhow!("reading the dead letters: {e}"))?
            else {
                break;
            };
            from = message.sequence + 1;
            out.push(NatsDeadLetter::of(consumer, &message));
        }
        Ok(out)
    }

    /// The dead letter `id` of `consumer`, if it is there.
    pub async fn dead_letter_by_id(
        &self,
        consumer: &str,
        id: u64,
    ) -> anyhow::Result<Option<NatsDeadLetter>> {
        self.ensure_streams().await?;
        let stream = self.js.get_stream(self.dead_letter_stream_name()).await?;
        match stream.get_raw_message(id).await {
            Ok(message) if message.subject.as_str() == self.dead_letter_subject(consumer) => {
                Ok(Some(NatsDeadLetter::of(consumer, &message)))
            }
            Ok(_) => Ok(None),
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::stream::LastRawMessageErrorKind::NoMessageFound
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(anyhow::anyhow!("reading dead letter {id}: {e}")),
        }
    }

    /// Delivers the dead letter `id` to `consumer` again: the event is published once more
    /// on its subject, marked for that consumer only (the others acknowledge it unhandled;
    /// the consumer's inbox ignores it if it was applied after all), and the dead letter is
    /// deleted. Returns false if there is no such dead letter (replayed already).
    pub async fn replay_dead_letter(&self, consumer: &str, id: u64) -> anyhow::Result<bool> {
        let Some(dead) = self.dead_letter_by_id(consumer, id).await? else {
            return Ok(false);
        };
        let event_type = dead.event_type.clone().ok_or_else(|| {
            anyhow::anyhow!("dead letter {id} is not an event; it cannot be replayed")
        })?;
        self.publish_raw(
            self.subject_for(&event_type),
            Some(&format!("replay-{consumer}-{id}")),
            dead.payload.clone(),
            &[(REPLAY_FOR_HEADER, consumer.to_string())],
        )
        .await?;
        let stream = self.js.get_stream(self.dead_letter_stream_name()).await?;
        stream.delete_message(id).await.map_err(|e| {
            anyhow::anyhow!("replayed, but dead letter {id} could not be deleted: {e}")
        })?;
        tracing::info!(%consumer, id, event_type, "dead letter replayed");
        Ok(true)
    }

    /// Number of dead letters of `consumer`.
    pub async fn dead_letter_count(&self, consumer: &str) -> anyhow::Result<u64> {
        self.ensure_streams().await?;
        let stream = self.js.get_stream(self.dead_letter_stream_name()).await?;
        let subject = self.dead_letter_subject(consumer);
        let mut info = stream.info_with_subjects(subject.clone()).await?;
        let mut count = 0;
        while let Some(entry) = info.next().await {
            let (name, n) = entry?;
            if name == subject {
                count += u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(count)
    }

    /// Where the durable consumer `durable` is and what waits for it (the console's view):
    /// `None` while the consumer does not exist yet.
    pub async fn consumer_state(&self, durable: &str) -> anyhow::Result<Option<ConsumerState>> {
        self.ensure_streams().await?;
        let stream = self.js.get_stream(&self.stream).await?;
        let info = match stream.consumer_info(durable).await {
            Ok(info) => info,
            Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let deferred = self.deferred_count(durable).await;
        Ok(Some(ConsumerState {
            durable: durable.to_string(),
            delivered: info.delivered.stream_sequence,
            acknowledged: info.ack_floor.stream_sequence,
            pending: info.num_pending,
            ack_pending: info.num_ack_pending,
            redelivered: info.num_redelivered,
            deferred,
            dead_letters: self.dead_letter_count(durable).await?,
        }))
    }

    /// How many events `durable` has deferred: its keys in the deferral bucket
    /// (`<consumer>.<seq>`) whose last entry is a count, not a deletion. Read without a
    /// consumer (the stream's subjects, then each key's last message), so a reader that may
    /// only read (the console) can; at most [`MAX_DEFERRAL_KEYS_READ`] keys, within
    /// [`DEFERRAL_COUNT_TIMEOUT`]; 0 when the bucket is not there.
    async fn deferred_count(&self, durable: &str) -> usize {
        let bucket = nats_deferrals::bucket_name(&self.stream);
        let count = async {
            let stream = self.js.get_stream(format!("KV_{bucket}")).await.ok()?;
            let mut subjects = stream
                .info_with_subjects(format!("$KV.{bucket}.{durable}.>"))
                .await
                .ok()?;
            let mut keys = Vec::new();
            while let Some(Ok((subject, _))) = subjects.next().await {
                keys.push(subject);
                if keys.len() >= MAX_DEFERRAL_KEYS_READ {
                    break;
                }
            }
            let mut deferred = 0usize;
            for key in keys {
                if let Ok(last) = stream.get_last_raw_message_by_subject(&key).await {
                    let deleted = last
                        .headers
                        .get("KV-Operation")
                        .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
                    if !deleted {
                        deferred += 1;
                    }
                }
            }
            Some(deferred)
        };
        tokio::time::timeout(DEFERRAL_COUNT_TIMEOUT, count)
            .await
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Starts the durable consumer `settings.group` feeding `handler`, and the listener
    /// that dead-letters events whose deliveries are exhausted; both stop on `shutdown`.
    pub fn start_consuming(
        self: &Arc<Self>,
        settings: &ConsumerSettings,
        handler: Arc<dyn EventHandler>,
        metrics: Metrics,
        shutdown: &Shutdown,
    ) {
        let worker = Consumer {
            bus: self.clone(),
            name: settings.group.clone(),
            settings: settings.clone(),
            handler,
            metrics: metrics.clone(),
            deferrals: Deferrals::new(&settings.group),
            stop: shutdown.background_token(),
        };
        shutdown.spawn("nats-consumer", worker.run());
        let bus = self.clone();
        let name = settings.group.clone();
        let stop = shutdown.background_token();
        shutdown.spawn("nats-max-deliveries", async move {
            bus.watch_max_deliveries(&name, &metrics, &stop).await;
        });
    }

    /// Copies the event at stream sequence `seq` to the consumer's dead-letter subject (the
    /// message id makes a second copy of the same event a duplicate).
    async fn dead_letter(
        &self,
        consumer: &str,
        seq: u64,
        payload: Bytes,
        reason: &str,
    ) -> anyhow::Result<()> {
        let id = format!("dl-{consumer}-{seq}");
        let duplicate = self
            .publish_raw(
                self.dead_letter_subject(consumer),
                Some(&id),
                payload,
                &[
                    ("Switchyard-Reason", reason.chars().take(500).collect()),
                    ("Switchyard-Stream", self.stream.clone()),
                    ("Switchyard-Stream-Seq", seq.to_string()),
                ],
            )
            .await?;
        if !duplicate {
            tracing::warn!(%consumer, seq, %reason, "event dead-lettered");
        }
        Ok(())
    }

    /// Listens to the server's max-deliveries advisories for `consumer` (one replica gets
    /// each, through a queue group) and dead-letters those events.
    async fn watch_max_deliveries(
        &self,
        consumer: &str,
        metrics: &Metrics,
        stop: &CancellationToken,
    ) {
        let subject = format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{consumer}",
            self.stream
        );
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        let mut subscription = loop {
            match self
                .client
                .queue_subscribe(subject.clone(), format!("{consumer}-dead-letters"))
                .await
            {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to max-deliveries advisories");
                    if !backoff.wait(stop).await {
                        return;
                    }
                }
            }
        };
        loop {
            let advisory = tokio::select! {
                m = subscription.next() => match m {
                    Some(m) => m,
                    None => return,
                },
                _ = stop.cancelled() => return,
            };
            let Some(seq) = serde_json::from_slice::<serde_json::Value>(&advisory.payload)
                .ok()
                .and_then(|v| v["stream_seq"].as_u64())
            else {
                continue;
            };
            let result = async {
                let stream = self.js.get_stream(&self.stream).await?;
                let message = stream.get_raw_message(seq).await?;
                self.dead_letter(consumer, seq, message.payload, "deliveries exhausted")
                    .await
            }
            .await;
            match result {
                Ok(()) => metrics.event_dead_lettered(consumer),
                Err(e) => {
                    tracing::error!(error = %e, seq, "could not dead-letter an exhausted event")
                }
            }
        }
    }
}

/// Parses a payload into an envelope with `seq` set to its stream sequence (and an id
/// derived from the content when it has none).
fn envelope_of(payload: &[u8], seq: u64) -> Result<Envelope, HandleError> {
    let value: serde_json::Value = serde_json::from_slice(payload).map_err(|e| {
        HandleError::Malformed(switchyard_kit::ApiError::bad_request(format!(
            "malformed JSON: {e}"
        )))
    })?;
    let mut event = Envelope::from_value(value.clone()).map_err(|e| {
        HandleError::Malformed(match e.field() {
            Some(field) => switchyard_kit::ApiError::field(field, e.to_string()),
            None => switchyard_kit::ApiError::bad_request(e.to_string()),
        })
    })?;
    if event.id.is_empty() {
        event.id = crate::consumer::derived_id(&value);
    }
    event.seq = Some(i64::try_from(seq).unwrap_or(i64::MAX));
    Ok(event)
}

impl ReadinessCheck for NatsBus {
    fn name(&self) -> &'static str {
        "bus"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if self.client.connection_state() != State::Connected {
                return Err("bus (NATS) not connected".to_string());
            }
            // The account info round trip (`$JS.API.INFO`), read as plain JSON so that any
            // server version's answer is understood.
            let empty = serde_json::json!({});
            let info = self.js.request::<_, _, serde_json::Value>("INFO", &empty);
            match tokio::time::timeout(READINESS_TIMEOUT, info).await {
                Ok(Ok(answer)) => match answer.get("error") {
                    None => Ok(()),
                    Some(error) => Err(format!("bus (NATS JetStream) unavailable: {error}")),
                },
                Ok(Err(e)) => Err(format!("bus (NATS JetStream) unavailable: {e}")),
                Err(_) => Err("bus (NATS JetStream) did not answer within 1 s".to_string()),
            }
        })
    }
}

impl Publisher for NatsBus {
    fn publish<'a>(
        &'a self,
        event_type: &'a str,
        event_id: &'a str,
        body: Bytes,
    ) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(async move {
            self.publish_raw(self.subject_for(event_type), Some(event_id), body, &[])
                .await
                .map(|_duplicate| ())
                .map_err(|e| PublishError::Unavailable(e.to_string()))
        })
    }
}

/// One replica's side of a durable consumer.
struct Consumer {
    bus: Arc<NatsBus>,
    name: String,
    settings: ConsumerSettings,
    handler: Arc<dyn EventHandler>,
    metrics: Metrics,
    /// Deferrals per stream sequence, here and across replicas: the server's delivery
    /// count includes them, and they are not failures.
    deferrals: Deferrals,
    stop: CancellationToken,
}

/// Extra deliveries the server allows above `max_deliver`, for deferrals: the replica
/// enforces both limits itself; this only stops an event that crashes every replica.
const DEFERRAL_DELIVERIES: i64 = 1_000;
/// First and longest delay before a deferred event comes back.
const MIN_DEFER_DELAY: Duration = Duration::from_millis(20);
const MAX_DEFER_DELAY: Duration = Duration::from_secs(1);

impl Consumer {
    /// Pulls and handles events until shutdown; after any error (server restarted,
    /// connection lost, consumer deleted) the consumer and its message stream are set up
    /// again, with backoff. In-flight handlers finish before it returns.
    async fn run(self) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(this.settings.concurrency.max(1)));
        let credits = Arc::new(Semaphore::new(this.settings.concurrency.max(1) + LOOKAHEAD));
        let in_flight = TaskTracker::new();
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        while !this.stop.is_cancelled() {
            match this
                .session(&slots, &credits, &in_flight, &mut backoff)
                .await
            {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(consumer = %this.name, error = %e, retry_in = ?backoff.current(), "NATS consumer interrupted");
                    backoff.wait(&this.stop).await;
                }
            }
        }
        in_flight.close();
        in_flight.wait().await;
    }

    /// One consumer session; `Ok` only on shutdown.
    ///
    /// A consumer holds at most its handlers' number of messages plus [`LOOKAHEAD`]: each
    /// pull asks for as many as there are credits free (a credit is held by a message from
    /// its arrival until it is handled), so a handler that becomes free finds its next
    /// message here instead of waiting a round trip for it. A message waiting here for a
    /// handler is kept alive with progress acks, so its ack wait never runs out while it
    /// waits (which would deliver it again and count that as a failure); while the
    /// database is away every handler is held by an event it retries and nothing more is
    /// pulled. A pull's messages are read by a task of their own, so the next pull goes
    /// out as soon as a credit is free, while earlier ones are still being filled.
    async fn session(
        self: &Arc<Self>,
        slots: &Arc<Semaphore>,
        credits: &Arc<Semaphore>,
        in_flight: &TaskTracker,
        backoff: &mut Backoff,
    ) -> anyhow::Result<()> {
        self.bus.ensure_streams().await?;
        let stream = self.bus.js.get_stream(&self.bus.stream).await?;
        let consumer = self.durable(&stream).await?;
        let mut pulls = tokio::task::JoinSet::new();
        loop {
            let first = tokio::select! {
                credit = credits.clone().acquire_owned() => credit?,
                Some(done) = pulls.join_next() => {
                    pull_ended(done, backoff)?;
                    continue;
                }
                _ = self.stop.cancelled() => {
                    // Each reader gives back the messages still waiting for a handler.
                    while pulls.join_next().await.is_some() {}
                    return Ok(());
                }
            };
            while let Some(done) = pulls.try_join_next() {
                pull_ended(done, backoff)?;
            }
            let mut reserved = vec![first];
            while reserved.len() < PULL_BATCH {
                match credits.clone().try_acquire_owned() {
                    Ok(credit) => reserved.push(credit),
                    Err(_) => break,
                }
            }
            let asked = Instant::now();
            let batch = consumer
                .batch()
                .max_messages(reserved.len())
                .expires(PULL_EXPIRES)
                .messages()
                .await?;
            pulls.spawn(self.clone().read_pull(
                batch,
                reserved,
                asked,
                slots.clone(),
                in_flight.clone(),
            ));
        }
    }

    /// Hands each message of one pull to a free handler, or keeps it alive until one is
    /// free; returns how many came. Credits no message came for are freed when the pull
    /// ends.
    async fn read_pull(
        self: Arc<Self>,
        mut batch: consumer::pull::Batch,
        mut reserved: Vec<OwnedSemaphorePermit>,
        asked: Instant,
        slots: Arc<Semaphore>,
        in_flight: TaskTracker,
    ) -> anyhow::Result<usize> {
        let mut waiting: VecDeque<(jetstream::Message, OwnedSemaphorePermit)> = VecDeque::new();
        let every = (self.settings.ack_wait / 3).max(Duration::from_millis(100));
        let mut keep_alive = tokio::time::interval_at(Instant::now() + every, every);
        let (mut open, mut got) = (true, 0usize);
        let hand_over = |message, slot, credit: OwnedSemaphorePermit| {
            let this = self.clone();
            in_flight.spawn(async move {
                this.process(message, slot).await;
                drop(credit);
            });
        };
        while open || !waiting.is_empty() {
            tokio::select! {
                next = batch.next(), if open => match next {
                    None => {
                        open = false;
                        reserved.clear();
                    }
                    Some(Err(e)) => anyhow::bail!("pulling messages: {e}"),
                    Some(Ok(message)) => {
                        got += 1;
                        // A pull never brings more than it asked for, each with its credit.
                        let Some(credit) = reserved.pop() else {
                            anyhow::bail!("a pull brought more messages than it asked for");
                        };
                        match slots.clone().try_acquire_owned() {
                            Ok(slot) if waiting.is_empty() => hand_over(message, slot, credit),
                            Ok(slot) => {
                                waiting.push_back((message, credit));
                                if let Some((first, credit)) = waiting.pop_front() {
                                    hand_over(first, slot, credit);
                                }
                            }
                            Err(_) => waiting.push_back((message, credit)),
                        }
                    }
                },
                slot = slots.clone().acquire_owned(), if !waiting.is_empty() => {
                    if let Some((message, credit)) = waiting.pop_front() {
                        hand_over(message, slot?, credit);
                    }
                }
                _ = keep_alive.tick(), if !waiting.is_empty() => {
                    for (message, _) in &waiting {
                        if let Err(e) = message.ack_with(AckKind::Progress).await {
                            tracing::debug!(consumer = %self.name, error = %e, "progress ack of a waiting message failed");
                        }
                    }
                }
                _ = self.stop.cancelled() => {
                    // Stopping: what no handler took goes back to the stream at once, for
                    // another replica or the next start, instead of after its ack wait,
                    // and is not counted as a failed delivery.
                    for (message, _) in waiting {
                        if let Ok(info) = message.info() {
                            self.excuse(info.stream_sequence).await;
                        }
                        if let Err(e) = message.ack_with(AckKind::Nak(None)).await {
                            tracing::debug!(consumer = %self.name, error = %e, "giving back a waiting message failed");
                        }
                    }
                    return Ok(got);
                }
            }
        }
        if got == 0 && asked.elapsed() < PULL_EXPIRES / 2 {
            // A pull that ends at once, empty, is not an idle wait: the consumer or the
            // connection is gone. Set everything up again.
            anyhow::bail!("a pull request ended early without messages");
        }
        Ok(got)
    }

    /// The consumer's configuration as this version of the service wants it.
    fn desired_config(&self) -> consumer::pull::Config {
        let settings = &self.settings;
        let mut config = consumer::pull::Config {
            durable_name: Some(self.name.clone()),
            description: Some(format!("Switchyard service {}", self.name)),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: settings.ack_wait,
            max_deliver: i64::from(settings.max_deliver) + DEFERRAL_DELIVERIES,
            max_ack_pending: settings.max_ack_pending,
            ..Default::default()
        };
        self.filter(&mut config);
        config
    }

    /// The durable consumer, created, or brought to [`Consumer::desired_config`] when it
    /// exists with another (an upgrade that consumes another type, other limits): updated
    /// in place where the server allows it, otherwise deleted and created again starting
    /// just after its acknowledged floor, so nothing it had not acknowledged is skipped
    /// (what it had delivered but not acknowledged comes again; the inbox drops repeats).
    async fn durable(&self, stream: &stream::Stream) -> anyhow::Result<consumer::PullConsumer> {
        let desired = self.desired_config();
        let existing = match stream.consumer_info(&self.name).await {
            Ok(info) => info,
            Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {
                return Ok(stream.create_consumer(desired).await?);
            }
            Err(e) => return Err(e.into()),
        };
        if !differs(&existing.config, &desired) {
            return stream
                .get_consumer(&self.name)
                .await
                .map_err(|e| anyhow::anyhow!("cannot bind the consumer: {e}"));
        }
        match stream.create_consumer(desired.clone()).await {
            Ok(updated) => {
                tracing::info!(consumer = %self.name, "consumer configuration updated in place");
                Ok(updated)
            }
            Err(e) => {
                let start = existing.ack_floor.stream_sequence + 1;
                tracing::warn!(consumer = %self.name, error = %e, from = start, "the server cannot update the consumer in place; creating it again from its acknowledged floor");
                stream.delete_consumer(&self.name).await?;
                let mut again = desired;
                again.deliver_policy = consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: start,
                };
                Ok(stream.create_consumer(again).await?)
            }
        }
    }

    /// Sets the server-side subject filter for the consumed types: one subject on any
    /// server, several from NATS 2.10 (older servers would ignore the list); without a
    /// server filter the replica acknowledges the other types unhandled.
    fn filter(&self, config: &mut consumer::pull::Config) {
        let Some(types) = &self.settings.types else {
            return;
        };
        let subjects: Vec<String> = types.iter().map(|t| self.bus.subject_for(t)).collect();
        match subjects.as_slice() {
            [] => {}
            [one] => config.filter_subject = one.clone(),
            _ if server_has_filter_subjects(&self.bus.client.server_info().version) => {
                config.filter_subjects = subjects;
            }
            _ => {}
        }
    }

    /// Handles one message and acks, NAKs or terminates it.
    async fn process(&self, message: jetstream::Message, _slot: OwnedSemaphorePermit) {
        let (seq, delivered) = match message.info() {
            Ok(info) => (info.stream_sequence, info.delivered),
            Err(e) => {
                tracing::warn!(error = %e, "message without JetStream metadata ignored");
                return;
            }
        };
        let event = envelope_of(&message.payload, seq);
        let event_type = event
            .as_ref()
            .map(|e| e.event_type.clone())
            .unwrap_or_else(|_| "unknown".to_string());
        // Deliveries that were neither deferred nor handed back at shutdown: the ones that
        // crashed or hung, and this one.
        let max_deliver = i64::from(self.settings.max_deliver);
        let attempts = self.attempts(seq, delivered, max_deliver + 1).await;
        if attempts > max_deliver {
            // Earlier deliveries never answered (a handler that hangs, or a replica that
            // died handling it): give up before trying again.
            self.forget(seq).await;
            self.metrics.event_consumed(&event_type, "failed");
            if let Err(e) = self
                .give_up(&message, seq, "deliveries exhausted without an answer")
                .await
            {
                tracing::warn!(consumer = %self.name, seq, error = %e, "could not acknowledge an event");
            }
            return;
        }
        let replay_for = message
            .headers
            .as_ref()
            .and_then(|h| h.get(REPLAY_FOR_HEADER))
            .map(|v| v.as_str().to_string());
        let event = match event {
            Ok(event)
                if !self.settings.accepts(&event.event_type)
                    || replay_for.as_deref().is_some_and(|c| c != self.name) =>
            {
                self.finish(
                    &message,
                    seq,
                    &event_type,
                    Ok(crate::consumer::Handled::Ignored),
                    delivered,
                )
                .await;
                return;
            }
            Ok(event) => event,
            Err(e) => {
                self.finish(&message, seq, &event_type, Err(e), delivered)
                    .await;
                return;
            }
        };
        // Exported, the delivery is a span under the one that published the event (until
        // the message is settled), and the consumer's work hangs under it.
        let delivery = switchyard_kit::otel::exporting().then(|| {
            let mut span = Span::start(
                || format!("deliver {} to {}", event.event_type, self.name),
                Kind::Consumer,
                event.trace_context(),
            );
            span.set("messaging.destination.name", event.event_type.clone());
            span.set("messaging.message.id", event.id.clone());
            span.set(
                "switchyard.stream_sequence",
                i64::try_from(seq).unwrap_or(i64::MAX),
            );
            span
        });
        let mut retry = Backoff::new(MIN_TRANSIENT_RETRY, MAX_TRANSIENT_RETRY);
        let mut failures = 0u64;
        loop {
            // Called inside the delivery's scope: the handler takes its parent there.
            let outcome = match &delivery {
                Some(span) => {
                    trace_context::scope(span.context(), async {
                        self.handler.handle(event.clone()).await
                    })
                    .await
                }
                None => self.handler.handle(event.clone()).await,
            };
            match outcome {
                Err(HandleError::Transient(e)) => {
                    // Not the event's fault (its database is away, a pool timed out): tried
                    // again here, keeping the message, for as long as it takes. Nothing
                    // counts toward max_deliver, and no other event is pulled meanwhile.
                    failures += 1;
                    self.metrics.event_consumed(&event_type, "failed");
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(consumer = %self.name, seq, failures, error = %e, retry_in = ?retry.current(), "event handling failed; retrying it here until it succeeds");
                    }
                    if !self.hold(&message, &mut retry).await {
                        // Shutting down: hand it back, counted as not failed.
                        self.excuse(seq).await;
                        if let Err(e) = message
                            .ack_with(AckKind::Nak(Some(MIN_TRANSIENT_RETRY)))
                            .await
                        {
                            tracing::debug!(consumer = %self.name, seq, error = %e, "could not hand an event back");
                        }
                        return;
                    }
                }
                outcome => {
                    if failures > 0 {
                        tracing::info!(consumer = %self.name, seq, failures, "event handled after transient failures");
                    }
                    self.finish(&message, seq, &event_type, outcome, delivered)
                        .await;
                    return;
                }
            }
        }
    }

    /// Waits the next retry delay while keeping `message` ours (progress acks, well within
    /// its ack wait); false when the service is stopping.
    async fn hold(&self, message: &jetstream::Message, retry: &mut Backoff) -> bool {
        let until = Instant::now() + retry.next_delay();
        let tick = (self.settings.ack_wait / 3).max(Duration::from_millis(100));
        loop {
            let now = Instant::now();
            if now >= until {
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep((until - now).min(tick)) => {}
                _ = self.stop.cancelled() => return false,
            }
            if let Err(e) = message.ack_with(AckKind::Progress).await {
                tracing::debug!(consumer = %self.name, error = %e, "could not extend an event's ack wait");
            }
        }
    }

    /// Acks, defers or sets aside the message after its handler answered (transient
    /// failures never reach here).
    async fn finish(
        &self,
        message: &jetstream::Message,
        seq: u64,
        event_type: &str,
        outcome: Result<crate::consumer::Handled, HandleError>,
        delivered: i64,
    ) {
        let result = match outcome {
            Ok(handled) => {
                self.forget(seq).await;
                self.metrics.event_consumed(event_type, handled.as_str());
                message.ack().await
            }
            Err(HandleError::Malformed(err)) => {
                self.forget(seq).await;
                self.metrics.event_consumed(event_type, "malformed");
                self.give_up(message, seq, &format!("malformed: {err}"))
                    .await
            }
            Err(HandleError::NotYet(why)) => {
                self.metrics.event_consumed(event_type, "deferred");
                // The limit runs from the event's first deferral, not from when it was
                // stored: an event that waited in a backlog has not been waiting on a gap.
                let since = self.excuse(seq).await;
                let deferred_for = u64::try_from(unix_millis() - since).unwrap_or(0);
                if Duration::from_millis(deferred_for) > self.settings.defer_limit {
                    self.forget(seq).await;
                    self.give_up(
                        message,
                        seq,
                        &format!(
                            "deferred for longer than {:?}: {why}",
                            self.settings.defer_limit
                        ),
                    )
                    .await
                } else {
                    let delay = defer_delay(delivered);
                    tracing::debug!(consumer = %self.name, seq, delivered, %why, retry_in = ?delay, "event deferred");
                    message.ack_with(AckKind::Nak(Some(delay))).await
                }
            }
            Err(HandleError::Transient(e)) => {
                // Only reached if a caller passes one: hand it back without counting it.
                self.excuse(seq).await;
                tracing::warn!(consumer = %self.name, seq, error = %e, "event handed back");
                message
                    .ack_with(AckKind::Nak(Some(MIN_TRANSIENT_RETRY)))
                    .await
            }
        };
        if let Err(e) = result {
            // Without an ack the event is redelivered after ack_wait; the inbox makes the
            // repeat a no-op.
            tracing::warn!(consumer = %self.name, seq, error = %e, "could not acknowledge an event");
        }
    }

    /// Counts a delivery of `seq` that did not fail (a deferral, or a hand-back at
    /// shutdown), here and across replicas; returns when the event was first excused.
    async fn excuse(&self, seq: u64) -> i64 {
        self.deferrals
            .add(self.bus.deferral_store().await, seq)
            .await
    }

    /// Deliveries of the event at `seq` that were not deferrals. This replica's own count
    /// of deferrals is enough below `limit`; at it, the count shared by every replica
    /// decides (another replica's deferrals are not failures either).
    async fn attempts(&self, seq: u64, delivered: i64, limit: i64) -> i64 {
        let attempts = delivered - self.deferrals.here(seq);
        if attempts < limit {
            return attempts;
        }
        let everywhere = self
            .deferrals
            .everywhere(self.bus.deferral_store().await, seq)
            .await;
        delivered - everywhere
    }

    /// Forgets the deferrals of `seq` (acknowledged or set aside).
    async fn forget(&self, seq: u64) {
        if self.deferrals.here(seq) > 0 {
            self.deferrals
                .forget(self.bus.deferral_store().await, seq)
                .await;
        }
    }

    /// Dead-letters the message and terminates it; if the dead letter cannot be stored the
    /// message is NAKed, to be dead-lettered at its next delivery.
    async fn give_up(
        &self,
        message: &jetstream::Message,
        seq: u64,
        reason: &str,
    ) -> Result<(), async_nats::Error> {
        match self
            .bus
            .dead_letter(&self.name, seq, message.payload.clone(), reason)
            .await
        {
            Ok(()) => {
                self.metrics.event_dead_lettered(&self.name);
                message.ack_with(AckKind::Term).await
            }
            Err(e) => {
                tracing::warn!(consumer = %self.name, seq, error = %e, "could not dead-letter, retrying later");
                message.ack_with(AckKind::Nak(Some(MAX_NAK_DELAY))).await
            }
        }
    }
}

/// Delay before a deferred event comes back after `delivered` deliveries: 20 ms doubling,
/// at most 1 s (the predecessor is usually milliseconds behind).
fn defer_delay(delivered: i64) -> Duration {
    let exp = u32::try_from(delivered.clamp(1, 16) - 1).unwrap_or(0);
    (MIN_DEFER_DELAY * 2u32.pow(exp)).min(MAX_DEFER_DELAY)
}

/// Whether a server of `version` (`2.9.25`, `2.10.3`) takes several filter subjects.
fn server_has_filter_subjects(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .unwrap_or(0)
    });
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= (2, 10)
}

/// Whether the consumer `existing` differs from `desired` in what the service sets
/// (filters and limits; not its start position, which a re-creation sets).
fn differs(existing: &consumer::Config, desired: &consumer::pull::Config) -> bool {
    existing.filter_subject != desired.filter_subject
        || existing.filter_subjects != desired.filter_subjects
        || existing.ack_wait != desired.ack_wait
        || existing.max_deliver != desired.max_deliver
        || existing.max_ack_pending != desired.max_ack_pending
}

/// Takes in the end of one pull's reader ([`Consumer::read_pull`]): an error ends the
/// session; messages received reset its backoff.
fn pull_ended(
    done: Result<anyhow::Result<usize>, tokio::task::JoinError>,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    match done {
        Ok(Ok(0)) => Ok(()),
        Ok(Ok(_)) => {
            backoff.reset();
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(e) => Err(anyhow::anyhow!("a pull's reader failed: {e}")),
    }
}

/// The first message of `stream` on `subject` at or after sequence `from` (None past the
/// last one), read directly from the stream: no consumer is made, so reading needs no
/// right to pull from anyone's consumer.
async fn next_message(
    stream: &stream::Stream,
    from: u64,
    subject: &str,
) -> Result<Option<jetstream::message::StreamMessage>, stream::LastRawMessageError> {
    match stream
        .raw_message_builder()
        .sequence(from)
        .next_by_subject(subject.to_string())
        .send()
        .await
    {
        Ok(message) => Ok(Some(message)),
        Err(e) if matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Most keys of the deferral counts read for [`NatsBus::consumer_state`].
const MAX_DEFERRAL_KEYS_READ: usize = 1_000;
/// How long counting a consumer's deferrals may take (the console waits on it).
const DEFERRAL_COUNT_TIMEOUT: Duration = Duration::from_secs(2);

/// A durable consumer's position and what waits for it, as JetStream reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerState {
    pub durable: String,
    /// The stream sequence last delivered to it.
    pub delivered: u64,
    /// The stream sequence below which everything is acknowledged.
    pub acknowledged: u64,
    /// Messages of its filter not yet delivered (its lag).
    pub pending: u64,
    /// Delivered and not yet acknowledged (in hand, or deferred).
    pub ack_pending: usize,
    /// Delivered more than once.
    pub redelivered: usize,
    /// Events it deferred whose count is still kept.
    pub deferred: usize,
    /// Events set aside for it.
    pub dead_letters: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_stream_name("BLOG").is_ok());
        assert!(check_stream_name("SY_ab12-x").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>"] {
            assert!(check_stream_name(bad).is_err(), "{bad}");
        }
        assert!(check_subject_prefix("blog").is_ok());
        assert!(check_subject_prefix("sy.ab12").is_ok());
        for bad in ["", "a.", ".a", "a..b", "a.*", "a.>", "a b"] {
            assert!(check_subject_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_types_become_single_tokens() {
        assert_eq!(subject_token("PostCreated"), "PostCreated");
        assert_eq!(subject_token("a.b c*>"), "a_b_c__");
        assert_eq!(subject_token(""), "_");
    }

    #[test]
    fn deferrals_come_back_soon_and_versions_are_read() {
        assert_eq!(defer_delay(1), MIN_DEFER_DELAY);
        assert_eq!(defer_delay(2), MIN_DEFER_DELAY * 2);
        assert_eq!(defer_delay(40), MAX_DEFER_DELAY);
        assert!(!server_has_filter_subjects("2.9.25"));
        assert!(server_has_filter_subjects("2.10.0"));
        assert!(server_has_filter_subjects("2.15.1-beta"));
        assert!(server_has_filter_subjects("3.0.0"));
        assert!(!server_has_filter_subjects("garbage"));
    }

    #[test]
    fn payloads_become_envelopes_with_the_stream_sequence() {
        let event = envelope_of(br#"{"id":"e1","type":"PostCreated","data":{},"seq":3}"#, 42)
            .expect("envelope");
        assert_eq!(event.seq, Some(42));
        assert_eq!(event.id, "e1");
        let derived = envelope_of(br#"{"type":"X"}"#, 1).expect("envelope");
        assert!(derived.id.starts_with("derived-"));
        assert!(matches!(
            envelope_of(b"{", 1),
            Err(HandleError::Malformed(_))
        ));
        assert!(matches!(
            envelope_of(br#"{"data":{}}"#, 1),
            Err(HandleError::Malformed(_))
        ));
    }
}
