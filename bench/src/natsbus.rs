//! Scenario 1, production: NATS JetStream through the platform's own `NatsBus` — publishing
//! with `Nats-Msg-Id` and waiting for each PubAck (as the outbox does), and one durable
//! consumer (`NatsBus::start_consuming`, as the services consume) receiving.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::future::BoxFuture;
use switchyard_bus_client::consumer::Handled;
use switchyard_bus_client::{EventHandler, HandleError, NatsBus};
use switchyard_events::Envelope;
use switchyard_kit::{Metrics, Shutdown};

use crate::Ctx;
use crate::procs::lock;
use crate::prod::{Resources, Stream};
use crate::report::{Dist, Figure, PRODUCTION, Section, fmt_num};

const S: &str = "bus";

fn body(id: &str, n: u64) -> bytes::Bytes {
    bytes::Bytes::from(format!(
        r#"{{"id":"{id}","type":"BenchEvent","data":{{"n":{n},"note":"bench"}}}}"#
    ))
}

/// One publish, waiting for the PubAck; true when stored.
async fn publish(bus: &NatsBus, id: &str, n: u64) -> bool {
    bus.publish_raw(bus.subject_for("BenchEvent"), Some(id), body(id, n), &[])
        .await
        .is_ok()
}

/// Records every event the consumer hands over, with its receive time.
struct Recorder {
    received: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl EventHandler for Recorder {
    fn handle(&self, event: Envelope) -> BoxFuture<'_, Result<Handled, HandleError>> {
        let at = Instant::now();
        lock(&self.received).push((event.id, at));
        Box::pin(async { Ok(Handled::Applied) })
    }
}

/// The durable consumer `bench`, on a runtime (thread) of its own so that its receive
/// times do not wait behind the publishers; stopped when dropped.
struct Receiver {
    received: Arc<Mutex<Vec<(String, Instant)>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(nats: &str, stream: &Stream) -> anyhow::Result<Receiver> {
        let received = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("nats-receiver")
            .enable_all()
            .build()
            .context("receiver runtime")?;
        let (nats, stream, r) = (nats.to_string(), stream.clone(), received.clone());
        let thread = std::thread::Builder::new()
            .name("nats-receiver".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let bus = match NatsBus::connect(&nats, &stream.name, &stream.prefix).await {
                        Ok(bus) => Arc::new(bus),
                        Err(e) => {
                            eprintln!("switchyard-bench: the NATS receiver cannot connect: {e:#}");
                            return;
                        }
                    };
                    let shutdown = Shutdown::new();
                    bus.start_consuming(
                        &switchyard_bus_client::ConsumerSettings::new("bench"),
                        Arc::new(Recorder { received: r }),
                        Metrics::new("bench"),
                        &shutdown,
                    );
                    let _ = stopped.await;
                    shutdown.trigger();
                    shutdown.drain_background(Duration::from_secs(2)).await;
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .context("receiver thread")?;
        Ok(Receiver {
            received,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn take(&self) -> Vec<(String, Instant)> {
        std::mem::take(&mut *lock(&self.received))
    }

    /// Waits until every id of `ids` was received (or `limit` passes); true if so.
    async fn drain(&self, ids: &[String], limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            {
                let recs = lock(&self.received);
                if recs.len() >= ids.len() {
                    let got: HashSet<&str> = recs.iter().map(|(id, _)| id.as_str()).collect();
                    if ids.iter().all(|id| got.contains(id.as_str())) {
                        return true;
                    }
                }
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `n` closed-loop publishers for `dur`; the acknowledged ids.
async fn closed_loop(bus: &Arc<NatsBus>, prefix: &str, n: usize, dur: Duration) -> Vec<String> {
    let counter = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + dur;
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (bus, prefix, counter) = (bus.clone(), prefix.to_string(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            while Instant::now() < stop_at {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let id = format!("{prefix}{i}");
                if publish(&bus, &id, i).await {
                    acked.push(id);
                }
            }
            acked
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(mut a) = t.await {
            all.append(&mut a);
        }
    }
    all
}

/// `rate` events/s for `dur`, each publish its own task at its scheduled time; (id, start)
/// of the acknowledged ones and how many started > 5 ms late.
async fn open_loop(
    bus: &Arc<NatsBus>,
    prefix: &str,
    rate: u64,
    dur: Duration,
) -> (Vec<(String, Instant)>, usize) {
    let total = rate * dur.as_secs();
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let late = Arc::new(AtomicU64::new(0));
    let limit = Arc::new(tokio::sync::Semaphore::new(512));
    let mut tasks = Vec::new();
    for i in 0..total {
        let due = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let (bus, acked, late) = (bus.clone(), acked.clone(), late.clone());
        let id = format!("{prefix}{i}");
        tasks.push(tokio::spawn(async move {
            let at = Instant::now();
            if tokio::time::Instant::now().duration_since(due) > Duration::from_millis(5) {
                late.fetch_add(1, Ordering::Relaxed);
            }
            if publish(&bus, &id, i).await {
                lock(&acked).push((id, at));
            }
            drop(permit);
        }));
    }
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
    }
    let sent = std::mem::take(&mut *lock(&acked));
    (
        sent,
        usize::try_from(late.load(Ordering::Relaxed)).unwrap_or(0),
    )
}

pub async fn measure(ctx: &Ctx, section: &mut Section, res: &Resources) -> anyhow::Result<()> {
    let p = &ctx.params;
    let stream = res.stream();
    let bus = Arc::new(NatsBus::connect(&res.servers.nats, &stream.name, &stream.prefix).await?);
    bus.ensure_streams().await?;
    let receiver = Receiver::start(&res.servers.nats, &stream)?;

    // Warm-up (not measured): also lets the consumer get created.
    let warm = closed_loop(&bus, "w-", p.publishers, Duration::from_millis(p.warmup_ms)).await;
    receiver.drain(&warm, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    receiver.take();

    // (a) throughput.
    let started = Instant::now();
    let acked = closed_loop(&bus, "t-", p.publishers, Duration::from_secs(p.bus_secs)).await;
    let publish_elapsed = started.elapsed().as_secs_f64();
    let drained = receiver.drain(&acked, Duration::from_secs(60)).await;
    let recs = receiver.take();
    let acked_set: HashSet<&str> = acked.iter().map(String::as_str).collect();
    let window_end = started + Duration::from_secs_f64(publish_elapsed);
    let mut last = started;
    let mut in_window: HashSet<&str> = HashSet::new();
    let mut got: HashSet<&str> = HashSet::new();
    for (id, at) in &recs {
        if acked_set.contains(id.as_str()) {
            got.insert(id);
            last = last.max(*at);
            if *at <= window_end {
                in_window.insert(id);
            }
        }
    }
    let missing = acked.len() - got.len();
    let delivered_secs = last
        .duration_since(started)
        .as_secs_f64()
        .max(publish_elapsed);
    let delivered_rate = if missing == 0 {
        acked.len() as f64 / delivered_secs
    } else {
        in_window.len() as f64 / publish_elapsed
    };
    section.push_on(
        PRODUCTION,
        Figure::info(
            S,
            "(a) events/s appended (acknowledged)",
            acked.len() as f64 / publish_elapsed,
            "events/s",
        )
        .note(format!(
            "JetStream PubAck (Nats-Msg-Id set), one stream, one connection; {} closed-loop publishers, {} events in {:.1} s",
            p.publishers,
            fmt_num(acked.len() as f64, 0),
            publish_elapsed
        )),
    );
    section.push_on(
        PRODUCTION,
        Figure::at_least(
            S,
            "(a) events/s delivered (to every subscriber)",
            delivered_rate,
            "events/s",
            10_000.0,
        )
        .note(format!(
            "one durable pull consumer (`NatsBus::start_consuming`: explicit acks, max_ack_pending 256, 4 handler tasks); every acknowledged event received {:.2} s after the start (publishing took {:.2} s){}",
            delivered_secs,
            publish_elapsed,
            if drained {
                String::new()
            } else {
                format!("; {missing} still missing after 60 s")
            }
        )),
    );
    section.push_on(
        PRODUCTION,
        Figure::info(
            S,
            "(a) events/s delivered within the publishing window",
            in_window.len() as f64 / publish_elapsed,
            "events/s",
        ),
    );

    // (b) latency, open loop.
    let (sent, late) = open_loop(
        &bus,
        "l-",
        p.latency_rate,
        Duration::from_secs(p.latency_secs),
    )
    .await;
    let sent_ids: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
    receiver.drain(&sent_ids, Duration::from_secs(30)).await;
    let recs = receiver.take();
    let mut first: HashMap<&str, Instant> = HashMap::new();
    for (id, at) in &recs {
        first.entry(id.as_str()).or_insert(*at);
    }
    let mut lat = Vec::new();
    let mut never = 0usize;
    for (id, at) in &sent {
        match first.get(id.as_str()) {
            Some(got) => lat.push(got.saturating_duration_since(*at).as_secs_f64() * 1000.0),
            None => never += 1,
        }
    }
    drop(receiver);
    let d = Dist::new(lat);
    section.push_on(
        PRODUCTION,
        Figure::info(S, "(b) publish→delivered latency p50", d.pct(50.0), "ms").note(format!(
            "{} events/s open loop for {} s: {} events to the durable consumer{}{}",
            fmt_num(p.latency_rate as f64, 0),
            p.latency_secs,
            fmt_num(sent.len() as f64, 0),
            if never > 0 {
                format!(", {never} never delivered")
            } else {
                String::new()
            },
            if late > 0 {
                format!(", {late} sends started >5 ms behind schedule")
            } else {
                String::new()
            }
        )),
    );
    section.push_on(
        PRODUCTION,
        Figure::at_most(
            S,
            "(b) publish→delivered latency p99",
            d.pct(99.0),
            "ms",
            10.0,
        ),
    );
    section.push_on(
        PRODUCTION,
        Figure::info(S, "(b) publish→delivered latency max", d.max(), "ms"),
    );
    Ok(())
}
