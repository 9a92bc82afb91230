//! The NATS JetStream backend against a real server (`SWITCHYARD_TEST_NATS_URL`, default
//! nats://127.0.0.1:4222): publishing with deduplication, paging with stream sequences,
//! consuming with acks, redelivery after transient failures, dead letters, readiness.
//!
//! Without a server the tests are skipped with a message, except under `CI=true` where a
//! missing server is a failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use switchyard_bus_client::consumer::Handled;
use switchyard_bus_client::{ConsumerSettings, EventHandler, HandleError, NatsBus, Publisher};
use switchyard_events::Envelope;
use switchyard_kit::{ApiError, Metrics, ReadinessCheck, Shutdown};

fn nats_url() -> String {
    std::env::var("SWITCHYARD_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Deletes a test's streams when dropped (also when the test panics), on a connection of
/// its own.
struct Cleanup {
    stream: String,
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (stream, prefix) = (self.stream.clone(), self.prefix.clone());
        let cleaner = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let deleted = async {
                    NatsBus::connect(&nats_url(), &stream, &prefix)
                        .await?
                        .delete_streams()
                        .await
                };
                match tokio::time::timeout(Duration::from_secs(10), deleted).await {
                    Ok(Ok(())) => {}
                    other => eprintln!("warning: could not delete stream {stream}: {other:?}"),
                }
            });
        });
        let _ = cleaner.join();
    }
}

/// The bus on a fresh stream and prefix, or `None` (skip) when no server answers.
async fn fresh_bus() -> Option<(Arc<NatsBus>, Cleanup)> {
    if !production_selected() {
        eprintln!("skipped: the production backend is not in SWITCHYARD_TEST_BACKENDS");
        return None;
    }
    let url = nats_url();
    let addr = url.trim_start_matches("nats://").to_string();
    let reachable = matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(addr.clone())
        )
        .await,
        Ok(Ok(_))
    );
    if !reachable {
        switchyard_kit::testing::skip_or_fail(&format!("NATS not reachable at {url}"));
        return None;
    }
    let id = switchyard_events::ids::entity_id();
    let cleanup = Cleanup {
        stream: format!("SYT_{id}"),
        prefix: format!("syt.{id}"),
    };
    let bus = NatsBus::connect(&url, &cleanup.stream, &cleanup.prefix)
        .await
        .expect("connect");
    bus.ensure_streams().await.expect("streams");
    Some((Arc::new(bus), cleanup))
}

async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    switchyard_kit::wait::until(what, Duration::from_secs(30), check)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn event(event_type: &str, n: u32) -> Envelope {
    Envelope::new(event_type, serde_json::json!({ "n": n }))
}

async fn publish(bus: &NatsBus, e: &Envelope) {
    bus.publish(&e.event_type, &e.id, Bytes::from(e.to_bytes()))
        .await
        .expect("published");
}

/// Records what it handled; fails transiently the first `fail_first` times per event id;
/// answers "not yet" to a `Later` event the first `defer_first` times and to a `Never`
/// event always.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Envelope>>,
    attempts: Mutex<HashMap<String, u32>>,
    fail_first: u32,
    defer_first: u32,
}

impl EventHandler for Recorder {
    fn handle(&self, event: Envelope) -> BoxFuture<'_, Result<Handled, HandleError>> {
        Box::pin(async move {
            match event.event_type.as_str() {
                "Poison" => return Err(HandleError::Malformed(ApiError::bad_request("poison"))),
                "Flaky" => return Err(HandleError::Transient(anyhow::anyhow!("always failing"))),
                "Hang" => {
                    tokio::time::sleep(Duration::from_secs(20)).await;
                    return Err(HandleError::Transient(anyhow::anyhow!("hung")));
                }
                "Never" => return Err(HandleError::NotYet("its predecessor never comes".into())),
                _ => {}
            }
            let attempt = {
                let mut attempts = self.attempts.lock().expect("lock");
                let n = attempts.entry(event.id.clone()).or_default();
                *n += 1;
                *n
            };
            if event.event_type == "Later" && attempt <= self.defer_first {
                return Err(HandleError::NotYet("version gap".into()));
            }
            if attempt <= self.fail_first {
                return Err(HandleError::Transient(anyhow::anyhow!("not now")));
            }
            self.seen.lock().expect("lock").push(event);
            Ok(Handled::Applied)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_once_per_id_and_pages_with_stream_sequences() {
    let Some((bus, _cleanup)) = fresh_bus().await else {
        return;
    };
    let events: Vec<Envelope> = (0..25).map(|n| event("PostCreated", n)).collect();
    for e in &events {
        publish(&bus, e).await;
    }
    // A republished event (an outbox retry) is stored once.
    publish(&bus, &events[3]).await;
    let all = bus.page(0, 1000).await.expect("page");
    assert_eq!(all.len(), 25);
    for (i, (read, sent)) in all.iter().zip(&events).enumerate() {
        assert_eq!(read.id, sent.id);
        assert_eq!(read.data, sent.data);
        assert_eq!(read.seq, Some(i as i64 + 1));
    }
    // Pages: from a position, bounded.
    let page = bus.page(10, 5).await.expect("page");
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (11..=15).map(Some).collect::<Vec<_>>()
    );
    assert!(bus.page(25, 10).await.expect("page").is_empty());
    assert_eq!(
        bus.subject_for("PostCreated"),
        format!("{}.PostCreated", bus.subject_prefix())
    );
    let ready = bus.check().await;
    assert!(ready.is_ok(), "{ready:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_with_redelivery_and_dead_letters() {
    let Some((bus, _cleanup)) = fresh_bus().await else {
        return;
    };
    let recorder = Arc::new(Recorder {
        fail_first: 2,
        ..Default::default()
    });
    let shutdown = Shutdown::new();
    let metrics = Metrics::new("test");
    bus.start_consuming(
        &ConsumerSettings::new("svc"),
        recorder.clone(),
        metrics.clone(),
        &shutdown,
    );
    let events: Vec<Envelope> = (0..10).map(|n| event("CommentCreated", n)).collect();
    for e in &events {
        publish(&bus, e).await;
    }
    let poison = event("Poison", 0);
    publish(&bus, &poison).await;
    // Not JSON at all.
    bus.publish_raw(
        bus.subject_for("Garbage"),
        Some("garbage-1"),
        Bytes::from_static(b"{"),
        &[],
    )
    .await
    .expect("raw publish");
    eventually("every event handled once after two failures", || async {
        (recorder.seen.lock().expect("lock").len() == 10).then_some(())
    })
    .await;
    eventually("two dead letters", || async {
        (bus.dead_letter_count("svc").await.ok()? == 2).then_some(())
    })
    .await;
    let seen = recorder.seen.lock().expect("lock").clone();
    let mut ids: Vec<&str> = seen.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 10, "each event handled once");
    for e in &seen {
        let sent = events.iter().position(|s| s.id == e.id).expect("sent");
        assert_eq!(e.seq, Some(sent as i64 + 1), "seq is the stream sequence");
    }
    assert!(
        metrics
            .render()
            .contains("switchyard_events_dead_lettered_total")
    );
    // Redelivery is not duplication: a second consumer group sees everything too.
    let other = Arc::new(Recorder::default());
    bus.start_consuming(
        &ConsumerSettings::new("other"),
        other.clone(),
        Metrics::new("other"),
        &shutdown,
    );
    eventually("the second group handled all", || async {
        (other.seen.lock().expect("lock").len() == 10).then_some(())
    })
    .await;
    shutdown.drain_background(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_deliveries_are_dead_lettered() {
    let Some((bus, _cleanup)) = fresh_bus().await else {
        return;
    };
    let mut settings = ConsumerSettings::new("svc");
    settings.ack_wait = Duration::from_secs(1);
    settings.max_deliver = 3;
    let recorder = Arc::new(Recorder::default());
    let shutdown = Shutdown::new();
    bus.start_consuming(&settings, recorder.clone(), Metrics::new("svc"), &shutdown);
    // Never answering: after max_deliver deliveries without an answer it is set aside.
    publish(&bus, &event("Hang", 2)).await;
    publish(&bus, &event("Fine", 3)).await;
    eventually("the hanging event dead-lettered", || async {
        (bus.dead_letter_count("svc").await.ok()? == 1).then_some(())
    })
    .await;
    eventually("the fine event handled", || async {
        (recorder.seen.lock().expect("lock").len() == 1).then_some(())
    })
    .await;
    shutdown.drain_background(Duration::from_secs(1)).await;
}

/// A transient failure (the database away) is not the event's fault: however long it
/// lasts, here six tries over about six seconds against an ack wait of one second and
/// three deliveries allowed, the event is retried until it applies, delivered once, and
/// never dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_outlasting_max_deliver_is_retried_until_it_applies() {
    let Some((bus, _cleanup)) = fresh_bus().await else {
        return;
    };
    let mut settings = ConsumerSettings::new("svc");
    settings.ack_wait = Duration::from_secs(1);
    settings.max_deliver = 3;
    let recorder = Arc::new(Recorder {
        fail_first: 6,
        ..Default::default()
    });
    let metrics = Metrics::new("svc");
    let shutdown = Shutdown::new();
    bus.start_consuming(&settings, recorder.clone(), metrics.clone(), &shutdown);
    let slow = event("Slow", 1);
    publish(&bus, &slow).await;
    eventually("the event applied after its transient failures", || async {
        (recorder.seen.lock().expect("lock").len() == 1).then_some(())
    })
    .await;
    let attempts = *recorder
        .attempts
        .lock()
        .expect("lock")
        .get(&slow.id)
        .expect("attempts");
    assert_eq!(attempts, 7, "six failures, then applied, each tried once");
    assert_eq!(bus.dead_letter_count("svc").await.expect("count"), 0);
    let text = metrics.render();
    assert!(
        !text.contains("switchyard_events_dead_lettered_total{"),
        "{text}"
    );
    shutdown.drain_background(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_events_come_back_without_counting_as_failures() {
    let Some((bus, _cleanup)) = fresh_bus().await else {
        return;
    };
    let mut settings = ConsumerSettings::new("svc");
    // Deferred more often than failures are allowed: deferrals must not count.
    settings.max_deliver = 2;
    let recorder = Arc::new(Recorder {
        defer_first: 6,
        ..Default::default()
    });
    let metrics = Metrics::new("svc");
    let shutdown = Shutdown::new();
    bus.start_consuming(&settings, recorder.clone(), metrics.clone(), &shutdown);
    publish(&bus, &event("Later", 1)).await;
    eventually("the deferred event applied", || async {
        (recorder.seen.lock().expect("lock").len() == 1).then_some(())
    })
    .await;
    let attempts = *recorder
        .attempts
        .lock()
        .expect("lock")
        .values()
        .next()
        .expect("attempts");
    assert_eq!(attempts, 7, "six deferrals, then applied");
    assert_eq!(bus.dead_letter_count("svc").await.expect("count"), 0);
    assert!(
        metrics.render().contains("outcome=\"deferred\""),
        "deferrals are counted as such"
    );
    shutdown.drain_background(Duration::from_secs(2)).await;
}

/// Defers every event while `hold` is set, then applies it.
#[derive(Default)]
struct Held {
    hold: std::sync::atomic::AtomicBool,
    applied: std::sync::atomic::AtomicUsize,
}

impl EventHandler for Held {
    fn handle(&self, _event: Envelope) -> BoxFuture<'_, Result<Handled, HandleError>> {
        use std::sync::atomic::Ordering;
        Box::pin(async move {
            if self.hold.load(Ordering::SeqCst) {
                return Err(HandleError::NotYet("held".into()));
            }
            self.applied.fetch_add(1, Ordering::SeqCst);
            Ok(Handled::Applied)
        })
    }
}

/// The console's view of a consumer counts the event it defers, read by a client that
/// only reads (no consumer of the deferral bucket, no stream made), and stops counting it
/// once it is applied (its count deleted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_sees_a_deferred_event_counted_until_it_is_applied() {
    use std::sync::atomic::Ordering;
    let Some((bus, cleanup)) = fresh_bus().await else {
        return;
    };
    let mut settings = ConsumerSettings::new("svc");
    settings.max_deliver = 1000;
    let handler = Arc::new(Held::default());
    handler.hold.store(true, Ordering::SeqCst);
    let shutdown = Shutdown::new();
    bus.start_consuming(&settings, handler.clone(), Metrics::new("svc"), &shutdown);
    publish(&bus, &event("Held", 1)).await;
    let reader = NatsBus::connect(&nats_url(), &cleanup.stream, &cleanup.prefix)
        .await
        .expect("connect")
        .watching(true);
    eventually("the deferral counted", || async {
        let state = reader.consumer_state("svc").await.ok()??;
        (state.deferred == 1).then_some(())
    })
    .await;
    handler.hold.store(false, Ordering::SeqCst);
    eventually("the event applied and no longer counted", || async {
        let state = reader.consumer_state("svc").await.ok()??;
        (handler.applied.load(Ordering::SeqCst) == 1 && state.deferred == 0).then_some(())
    })
    .await;
    shutdown.drain_background(Duration::from_secs(2)).await;
}

/// One replica of a consumer in [`deferrals_by_other_replicas_are_not_failures`]: defers
/// the event its first `defer_first` deliveries across both replicas, then applies it.
struct Replica {
    id: usize,
    defer_first: u32,
    /// Deliveries so far (both replicas), deliveries per replica, applications.
    shared: Arc<Mutex<(u32, [u32; 2], u32)>>,
}

impl EventHandler for Replica {
    fn handle(&self, _event: Envelope) -> BoxFuture<'_, Result<Handled, HandleError>> {
        Box::pin(async move {
            let mut shared = self.shared.lock().expect("lock");
            shared.0 += 1;
            shared.1[self.id] += 1;
            if shared.0 <= self.defer_first {
                return Err(HandleError::NotYet("version gap".into()));
            }
            shared.2 += 1;
            Ok(Handled::Applied)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferrals_by_other_replicas_are_not_failures() {
    let Some((bus, _cleanup)) = fresh_bus().await else {
        return;
    };
    // Two replicas of one consumer take turns deferring an event more often than
    // failures are allowed: neither may take the other's deferrals for failures.
    let mut settings = ConsumerSettings::new("svc");
    settings.max_deliver = 2;
    let shared = Arc::new(Mutex::new((0, [0, 0], 0)));
    let shutdown = Shutdown::new();
    for id in 0..2 {
        bus.start_consuming(
            &settings,
            Arc::new(Replica {
                id,
                defer_first: 10,
                shared: shared.clone(),
            }),
            Metrics::new("svc"),
            &shutdown,
        );
    }
    publish(&bus, &event("Later", 1)).await;
    eventually("the deferred event applied", || async {
        (shared.lock().expect("lock").2 == 1).then_some(())
    })
    .await;
    let (deliveries, per_replica, applied) = *shared.lock().expect("lock");
    eprintln!("deliveries per replica: {per_replica:?}");
    assert_eq!(
        (deliveries, applied),
        (11, 1),
        "ten deferrals, then applied"
    );
    assert_eq!(bus.dead_letter_count("svc").await.expect("count"), 0);
    shutdown.drain_background(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_that_never_fills_is_dead_lettered_after_the_defer_limit() {
    let Some((bus, _cleanup)) = fresh_bus().await else {
        return;
    };
    let mut settings = ConsumerSettings::new("svc");
    settings.defer_limit = Duration::from_millis(500);
    let recorder = Arc::new(Recorder::default());
    let shutdown = Shutdown::new();
    bus.start_consuming(&settings, recorder.clone(), Metrics::new("svc"), &shutdown);
    publish(&bus, &event("Never", 1)).await;
    publish(&bus, &event("Fine", 2)).await;
    eventually("the event that never applies dead-lettered", || async {
        (bus.dead_letter_count("svc").await.ok()? == 1).then_some(())
    })
    .await;
    eventually("the stream went on", || async {
        (recorder.seen.lock().expect("lock").len() == 1).then_some(())
    })
    .await;
    shutdown.drain_background(Duration::from_secs(2)).await;
}

/// A consumer that was down for longer than the defer limit finds a backlog: an event of
/// it that must wait for another is deferred as usual, the limit counted from its first
/// deferral, not from when it was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_from_a_backlog_older_than_the_defer_limit_is_deferred_then_applied() {
    let Some((bus, _cleanup)) = fresh_bus().await else {
        return;
    };
    let limit = Duration::from_millis(400);
    let mut settings = ConsumerSettings::new("svc");
    settings.defer_limit = limit;
    let stored = std::time::Instant::now();
    publish(&bus, &event("Later", 1)).await;
    // The backlog ages past the limit while no consumer runs.
    eventually("the event to be older than the defer limit", || async {
        (stored.elapsed() > limit * 2).then_some(())
    })
    .await;
    let recorder = Arc::new(Recorder {
        defer_first: 3,
        ..Recorder::default()
    });
    let shutdown = Shutdown::new();
    bus.start_consuming(&settings, recorder.clone(), Metrics::new("svc"), &shutdown);
    eventually("the deferred event applied", || async {
        (recorder.seen.lock().expect("lock").len() == 1).then_some(())
    })
    .await;
    assert_eq!(bus.dead_letter_count("svc").await.expect("count"), 0);
    shutdown.drain_background(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_of_some_types_handles_only_those() {
    let Some((bus, _cleanup)) = fresh_bus().await else {
        return;
    };
    let shutdown = Shutdown::new();
    let one = Arc::new(Recorder::default());
    let two = Arc::new(Recorder::default());
    // One type: a server-side filter subject; two types: a filter list on NATS 2.10+,
    // and on older servers the replica acknowledges the others unhandled.
    bus.start_consuming(
        &ConsumerSettings::new("one").only(["A"]),
        one.clone(),
        Metrics::new("one"),
        &shutdown,
    );
    bus.start_consuming(
        &ConsumerSettings::new("two").only(["A", "C"]),
        two.clone(),
        Metrics::new("two"),
        &shutdown,
    );
    for (n, t) in ["A", "B", "C", "B", "A"].iter().enumerate() {
        publish(&bus, &event(t, n as u32)).await;
    }
    eventually("both consumers handled their types", || async {
        (one.seen.lock().expect("lock").len() == 2 && two.seen.lock().expect("lock").len() == 3)
            .then_some(())
    })
    .await;
    let types = |r: &Recorder| {
        let mut t: Vec<String> = r
            .seen
            .lock()
            .expect("lock")
            .iter()
            .map(|e| e.event_type.clone())
            .collect();
        t.sort();
        t
    };
    assert_eq!(types(&one), ["A", "A"]);
    assert_eq!(types(&two), ["A", "A", "C"]);
    shutdown.drain_background(Duration::from_secs(2)).await;
}

/// Whether `SWITCHYARD_TEST_BACKENDS` (default `embedded,production`) lists `production`.
fn production_selected() -> bool {
    std::env::var("SWITCHYARD_TEST_BACKENDS")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .is_none_or(|v| v.split(',').any(|b| b.trim() == "production"))
}

/// After an upgrade that consumes another type, the existing durable (made for the old
/// types, with the old limits) is brought to the new configuration at start: the new
/// type is delivered from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_made_for_fewer_types_is_brought_to_the_new_ones() {
    let Some((bus, _cleanup)) = fresh_bus().await else {
        return;
    };
    // The old version: consumes A only.
    let old = Arc::new(Recorder::default());
    let shutdown = Shutdown::new();
    bus.start_consuming(
        &ConsumerSettings::new("svc").only(["A"]),
        old.clone(),
        Metrics::new("svc"),
        &shutdown,
    );
    publish(&bus, &event("A", 1)).await;
    eventually("the old version handled A", || async {
        (old.seen.lock().expect("lock").len() == 1).then_some(())
    })
    .await;
    shutdown.trigger();
    shutdown.drain_background(Duration::from_secs(5)).await;
    // The new version: consumes A and B, with another ack wait.
    let new = Arc::new(Recorder::default());
    let shutdown = Shutdown::new();
    let mut settings = ConsumerSettings::new("svc").only(["A", "B"]);
    settings.ack_wait = Duration::from_secs(7);
    bus.start_consuming(&settings, new.clone(), Metrics::new("svc"), &shutdown);
    // The new version's start brings the durable to its configuration.
    let stream = bus
        .jetstream()
        .get_stream(bus.stream_name())
        .await
        .expect("stream");
    let info = eventually("the durable brought to the new configuration", || async {
        let info = stream.consumer_info("svc").await.ok()?;
        (info.config.ack_wait == Duration::from_secs(7)).then_some(info)
    })
    .await;
    assert_ne!(
        info.config.filter_subject,
        bus.subject_for("A"),
        "the old filter is gone"
    );
    // From then on the new type is delivered.
    publish(&bus, &event("B", 2)).await;
    publish(&bus, &event("A", 3)).await;
    eventually("the new version handled B and A", || async {
        let seen = new.seen.lock().expect("lock");
        let types: Vec<&str> = seen.iter().map(|e| e.event_type.as_str()).collect();
        (types.contains(&"B") && types.contains(&"A")).then_some(())
    })
    .await;
    shutdown.trigger();
    shutdown.drain_background(Duration::from_secs(5)).await;
}

/// The stream keeps events for `EVENTS_MAX_AGE_SECONDS`: a stream made before without a
/// limit is brought to it when a service with the setting starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_gets_its_max_age_also_when_it_existed() {
    let Some((bus, cleanup)) = fresh_bus().await else {
        return;
    };
    let max_age = |bus: Arc<NatsBus>| async move {
        bus.jetstream()
            .get_stream(bus.stream_name())
            .await
            .expect("stream")
            .info()
            .await
            .expect("info")
            .config
            .max_age
    };
    assert_eq!(
        max_age(bus.clone()).await,
        Duration::ZERO,
        "made without a limit"
    );
    let week = Duration::from_secs(7 * 24 * 3600);
    let limited = NatsBus::connect(&nats_url(), &cleanup.stream, &cleanup.prefix)
        .await
        .expect("connect")
        .with_max_age(Some(week));
    limited.ensure_streams().await.expect("streams");
    assert_eq!(max_age(Arc::new(limited)).await, week);
}

/// Holds the first delivery of an event of type `Slow` until `release` is notified;
/// records each delivery.
struct Gate {
    release: tokio::sync::Notify,
    deliveries: Mutex<HashMap<String, u32>>,
}

impl EventHandler for Gate {
    fn handle(&self, event: Envelope) -> BoxFuture<'_, Result<Handled, HandleError>> {
        Box::pin(async move {
            let delivery = {
                let mut deliveries = self.deliveries.lock().expect("lock");
                let n = deliveries.entry(event.id.clone()).or_default();
                *n += 1;
                *n
            };
            if event.event_type == "Slow" && delivery == 1 {
                self.release.notified().await;
            }
            Ok(Handled::Applied)
        })
    }
}

/// Messages pulled ahead of a free handler wait in the consumer while the one handler is
/// held for three times the ack wait: they are kept alive, so none is delivered again,
/// none is dead-lettered, and each is handled once when the handler is free. (The held
/// event itself counts as hung past its ack wait, and may come again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_waiting_for_a_busy_handler_are_kept_alive() {
    let Some((bus, _cleanup)) = fresh_bus().await else {
        return;
    };
    let mut settings = ConsumerSettings::new("svc");
    settings.ack_wait = Duration::from_secs(1);
    settings.max_deliver = 3;
    settings.concurrency = 1;
    let gate = Arc::new(Gate {
        release: tokio::sync::Notify::new(),
        deliveries: Mutex::new(HashMap::new()),
    });
    let shutdown = Shutdown::new();
    bus.start_consuming(&settings, gate.clone(), Metrics::new("test"), &shutdown);
    let slow = event("Slow", 0);
    publish(&bus, &slow).await;
    let rest: Vec<Envelope> = (1..=8).map(|n| event("CommentCreated", n)).collect();
    for e in &rest {
        publish(&bus, e).await;
    }
    eventually("the slow event is being handled", || async {
        gate.deliveries
            .lock()
            .expect("lock")
            .contains_key(&slow.id)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    gate.release.notify_one();
    eventually("every event handled", || async {
        let deliveries = gate.deliveries.lock().expect("lock");
        rest.iter()
            .all(|e| deliveries.contains_key(&e.id))
            .then_some(())
    })
    .await;
    let deliveries = gate.deliveries.lock().expect("lock").clone();
    for e in &rest {
        assert_eq!(
            deliveries.get(&e.id),
            Some(&1),
            "{} ({}) delivered again",
            e.id,
            e.event_type
        );
    }
    assert_eq!(bus.dead_letter_count("svc").await.expect("count"), 0);
    shutdown.drain_background(Duration::from_secs(5)).await;
}
