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
use switchyard_bus_client::nats_bus::ConsumerSettings;
use switchyard_bus_client::{EventHandler, HandleError, NatsBus, Publisher};
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
    fresh_bus_with(ConsumerSettings::default()).await
}

async fn fresh_bus_with(settings: ConsumerSettings) -> Option<(Arc<NatsBus>, Cleanup)> {
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
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("NATS not reachable at {url} (CI=true: a missing server is a failure)");
        }
        eprintln!("skipped: NATS not reachable at {url}");
        return None;
    }
    let id = switchyard_events::ids::entity_id();
    let cleanup = Cleanup {
        stream: format!("SYT_{id}"),
        prefix: format!("syt.{id}"),
    };
    let bus = NatsBus::connect(&url, &cleanup.stream, &cleanup.prefix)
        .await
        .expect("connect")
        .with_consumer_settings(settings);
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

/// Records what it handled; fails transiently the first `fail_first` times per event id.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Envelope>>,
    attempts: Mutex<HashMap<String, u32>>,
    fail_first: u32,
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
                _ => {}
            }
            let attempt = {
                let mut attempts = self.attempts.lock().expect("lock");
                let n = attempts.entry(event.id.clone()).or_default();
                *n += 1;
                *n
            };
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
    bus.start_consuming("svc", recorder.clone(), metrics.clone(), &shutdown);
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
    bus.start_consuming("other", other.clone(), Metrics::new("other"), &shutdown);
    eventually("the second group handled all", || async {
        (other.seen.lock().expect("lock").len() == 10).then_some(())
    })
    .await;
    shutdown.drain_background(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_deliveries_are_dead_lettered() {
    let Some((bus, _cleanup)) = fresh_bus_with(ConsumerSettings {
        ack_wait: Duration::from_secs(1),
        max_deliver: 3,
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let recorder = Arc::new(Recorder::default());
    let shutdown = Shutdown::new();
    bus.start_consuming("svc", recorder.clone(), Metrics::new("svc"), &shutdown);
    // Failing every time: the handler gives up at the last delivery.
    publish(&bus, &event("Flaky", 1)).await;
    eventually("the failing event dead-lettered", || async {
        (bus.dead_letter_count("svc").await.ok()? == 1).then_some(())
    })
    .await;
    // Never answering: the server stops after max_deliver, its advisory dead-letters it.
    publish(&bus, &event("Hang", 2)).await;
    publish(&bus, &event("Fine", 3)).await;
    eventually("the hanging event dead-lettered", || async {
        (bus.dead_letter_count("svc").await.ok()? == 2).then_some(())
    })
    .await;
    eventually("the fine event handled", || async {
        (recorder.seen.lock().expect("lock").len() == 1).then_some(())
    })
    .await;
    shutdown.drain_background(Duration::from_secs(1)).await;
}

/// Whether `SWITCHYARD_TEST_BACKENDS` (default `embedded,production`) lists `production`.
fn production_selected() -> bool {
    std::env::var("SWITCHYARD_TEST_BACKENDS")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .is_none_or(|v| v.split(',').any(|b| b.trim() == "production"))
}
