//! Scenario 1: the durable HTTP event bus with four local subscribers.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::Ctx;
use crate::procs::{RssSampler, Service, free_port, lock, mib};
use crate::report::{Dist, EMBEDDED, Figure, PRODUCTION, Section, fmt_num};
use crate::sink::Sinks;

const S: &str = "bus";
const SUBSCRIBERS: usize = 4;

pub async fn run(ctx: &Ctx) -> Section {
    let mut section = Section::new(
        S,
        "1. Event bus: HTTP bus (4 HTTP subscribers) vs NATS JetStream (one stream, a durable consumer)",
    );
    if ctx.plan.embedded
        && let Err(e) = measure(ctx, &mut section).await
    {
        section.fail(EMBEDDED, &e);
    }
    if ctx.plan.production.is_some() {
        let res = ctx.resources(PRODUCTION);
        let result = match &res {
            Some(res) => crate::natsbus::measure(ctx, &mut section, res).await,
            None => Ok(()),
        };
        crate::finish(&mut section, PRODUCTION, res, result).await;
    }
    ctx.skip_note(&mut section);
    section
}

fn body(id: &str, n: u64) -> bytes::Bytes {
    bytes::Bytes::from(format!(
        r#"{{"id":"{id}","type":"BenchEvent","data":{{"n":{n},"note":"bench"}}}}"#
    ))
}

/// One publish; true when the bus acknowledged it (200).
async fn publish(http: &reqwest::Client, url: &str, id: &str, n: u64) -> bool {
    matches!(
        http.post(url)
            .header("content-type", "application/json")
            .body(body(id, n))
            .send()
            .await,
        Ok(r) if r.status().is_success()
    )
}

async fn measure(ctx: &Ctx, section: &mut Section) -> anyhow::Result<()> {
    let p = &ctx.params;
    let sinks = Sinks::start(SUBSCRIBERS)?;
    let dir = tempfile::Builder::new()
        .prefix("switchyard-bench-bus")
        .tempdir()?;
    let port = free_port()?;
    let envs = [("SUBSCRIBERS", sinks.subscribers_env())];
    let mut bus = Service::spawn(
        &ctx.bin,
        "event-bus",
        port,
        &dir.path().join("data"),
        dir.path(),
        &envs,
    )?;
    bus.wait_ready(&ctx.http, Duration::from_secs(20)).await?;
    let url = format!("{}/events", bus.url());
    let pid = bus.pid().context("bus pid")?;

    // Idle memory, after a moment of rest.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = bus.mem().context("reading the bus's memory")?;

    // A client with a connection per publisher.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()?;

    // Warm-up (not measured), then wait for it to be delivered everywhere.
    let warm = closed_loop(
        &http,
        &url,
        "w-",
        p.publishers,
        Duration::from_millis(p.warmup_ms),
    )
    .await;
    drain(&sinks, &warm, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    sinks.clear();

    // (a) Sustained throughput, closed loop.
    let sampler = RssSampler::start(vec![("bus".into(), pid)]);
    let started = Instant::now();
    let acked = closed_loop(
        &http,
        &url,
        "t-",
        p.publishers,
        Duration::from_secs(p.bus_secs),
    )
    .await;
    let publish_elapsed = started.elapsed().as_secs_f64();
    let acked_set: HashSet<String> = acked.iter().cloned().collect();
    let drained = drain(&sinks, &acked, Duration::from_secs(60)).await;
    let records: Vec<Vec<crate::sink::Received>> = sinks.states.iter().map(|s| s.take()).collect();
    let mut last_delivery = started;
    let mut delivered_to_all_in_window = usize::MAX;
    let window_end = started + Duration::from_secs_f64(publish_elapsed);
    let mut missing_total = 0usize;
    for recs in &records {
        let ids: HashSet<&str> = recs
            .iter()
            .filter(|r| r.id.starts_with("t-"))
            .map(|r| r.id.as_str())
            .collect();
        missing_total += acked_set
            .iter()
            .filter(|id| !ids.contains(id.as_str()))
            .count();
        if let Some(last) = recs
            .iter()
            .filter(|r| acked_set.contains(&r.id))
            .map(|r| r.at)
            .max()
        {
            last_delivery = last_delivery.max(last);
        }
        let in_window: HashSet<&str> = recs
            .iter()
            .filter(|r| r.at <= window_end && r.id.starts_with("t-"))
            .map(|r| r.id.as_str())
            .collect();
        delivered_to_all_in_window = delivered_to_all_in_window.min(in_window.len());
    }
    let appended_rate = acked.len() as f64 / publish_elapsed;
    let delivered_secs = last_delivery
        .duration_since(started)
        .as_secs_f64()
        .max(publish_elapsed);
    let delivered_rate = if missing_total == 0 {
        acked.len() as f64 / delivered_secs
    } else {
        // Not everything arrived within the drain limit: count what the slowest got.
        delivered_to_all_in_window as f64 / publish_elapsed
    };
    section.push(
        Figure::info(
            S,
            "(a) events/s appended (acknowledged)",
            appended_rate,
            "events/s",
        )
        .note(format!(
            "HTTP 200 from POST /events; {} closed-loop publishers, {} events in {:.1} s",
            p.publishers,
            fmt_num(acked.len() as f64, 0),
            publish_elapsed
        )),
    );
    section.push(
        Figure::at_least(S, "(a) events/s delivered (to every subscriber)", delivered_rate, "events/s", 5000.0)
            .note(format!(
                "4 HTTP subscribers; every acknowledged event at every subscriber {:.2} s after the start (publishing took {:.2} s){}",
                delivered_secs,
                publish_elapsed,
                if drained { String::new() } else { format!("; {missing_total} (event, subscriber) deliveries still missing after 60 s") }
            )),
    );
    section.push(Figure::info(
        S,
        "(a) events/s delivered within the publishing window",
        delivered_to_all_in_window as f64 / publish_elapsed,
        "events/s",
    ));

    // (b) Latency, open loop at a fixed rate.
    sinks.clear();
    let (sent, late) = open_loop(
        &http,
        &url,
        "l-",
        p.latency_rate,
        Duration::from_secs(p.latency_secs),
    )
    .await;
    let sent_ids: Vec<String> = sent.iter().map(|(id, _)| id.clone()).collect();
    drain(&sinks, &sent_ids, Duration::from_secs(30)).await;
    let mut lat = Vec::new();
    let mut missing = 0usize;
    for s in &sinks.states {
        let recs = s.take();
        let mut first: HashMap<&str, Instant> = HashMap::new();
        for r in &recs {
            first.entry(r.id.as_str()).or_insert(r.at);
        }
        for (id, at) in &sent {
            match first.get(id.as_str()) {
                Some(got) => lat.push(got.saturating_duration_since(*at).as_secs_f64() * 1000.0),
                None => missing += 1,
            }
        }
    }
    let peaks = sampler.finish().await;
    let d = Dist::new(lat);
    let lat_note = format!(
        "{} events/s open loop for {} s: {} events × 4 subscribers = {} deliveries{}{}",
        fmt_num(p.latency_rate as f64, 0),
        p.latency_secs,
        fmt_num(sent.len() as f64, 0),
        fmt_num(d.len() as f64, 0),
        if missing > 0 {
            format!(", {missing} never delivered")
        } else {
            String::new()
        },
        if late > 0 {
            format!(", {late} sends started >5 ms behind schedule")
        } else {
            String::new()
        },
    );
    section.push(
        Figure::info(S, "(b) publish→delivered latency p50", d.pct(50.0), "ms").note(lat_note),
    );
    section.push(Figure::at_most(
        S,
        "(b) publish→delivered latency p99",
        d.pct(99.0),
        "ms",
        10.0,
    ));
    section.push(Figure::info(
        S,
        "(b) publish→delivered latency max",
        d.max(),
        "ms",
    ));

    // (c) Memory.
    let under = bus.mem().unwrap_or_default();
    section.push(
        Figure::at_most(
            S,
            "(c) bus RSS idle (VmRSS)",
            mib(idle.rss_kib),
            "MiB",
            20.0,
        )
        .original("~62 MB"),
    );
    let peak_sampled = peaks.get("bus").copied().unwrap_or(0);
    section.push(Figure::info(
        S,
        "(c) bus RSS under load (max sampled VmRSS)",
        mib(peak_sampled),
        "MiB",
    ));
    section.push(
        Figure::at_most(
            S,
            "(c) bus peak RSS (VmHWM) after (a)+(b)",
            mib(under.hwm_kib),
            "MiB",
            20.0,
        )
        .original("124 MB"),
    );
    drop(bus);

    // (d) SIGKILL the bus under load; nothing acknowledged may be lost.
    sinks.clear();
    let kill = kill_test(ctx, &sinks).await?;
    section.push(
        Figure::at_most(S, "(d) acknowledged events lost after SIGKILL + restart", kill.lost as f64, "count", 0.0)
            .note(format!(
                "{} acknowledged ({} publishes retried); missing from GET /events: {}, stored twice: {}, missing at a subscriber: {}; redelivered duplicates at subscribers (allowed): {}; first deliveries out of seq order: {}; bus back in {:.0} ms",
                fmt_num(kill.acked as f64, 0),
                kill.retried,
                kill.missing_in_log,
                kill.duplicated_in_log,
                kill.missing_at_subscribers,
                kill.redelivered,
                kill.out_of_order,
                kill.restart_ms
            ))
            .original("in-memory: all lost"),
    );
    Ok(())
}

/// Publishes with `n` closed-loop workers for `dur`; returns the acknowledged ids.
async fn closed_loop(
    http: &reqwest::Client,
    url: &str,
    prefix: &str,
    n: usize,
    dur: Duration,
) -> Vec<String> {
    let counter = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + dur;
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (http, url, prefix, counter) = (
            http.clone(),
            url.to_string(),
            prefix.to_string(),
            counter.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            while Instant::now() < stop_at {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let id = format!("{prefix}{i}");
                if publish(&http, &url, &id, i).await {
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

/// Sends `rate` events/s for `dur`, each from its own task at its scheduled time.
/// Returns (id, send time) of the acknowledged ones and how many started >5 ms late.
async fn open_loop(
    http: &reqwest::Client,
    url: &str,
    prefix: &str,
    rate: u64,
    dur: Duration,
) -> (Vec<(String, Instant)>, usize) {
    let total = rate * dur.as_secs();
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let acked = Arc::new(Mutex::new(Vec::with_capacity(
        usize::try_from(total).unwrap_or(0),
    )));
    let late = Arc::new(AtomicU64::new(0));
    let limit = Arc::new(tokio::sync::Semaphore::new(512));
    let mut tasks = Vec::new();
    for i in 0..total {
        let due = start + period.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let (http, url, acked, late) = (http.clone(), url.to_string(), acked.clone(), late.clone());
        let id = format!("{prefix}{i}");
        tasks.push(tokio::spawn(async move {
            let at = Instant::now();
            if tokio::time::Instant::now().duration_since(due) > Duration::from_millis(5) {
                late.fetch_add(1, Ordering::Relaxed);
            }
            if publish(&http, &url, &id, i).await {
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

/// Waits until every sink has received every id of `ids` (cheap length checks first, the
/// full check only when the lengths allow it), or `limit` passes; true if they all did.
async fn drain(sinks: &Sinks, ids: &[String], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let long_enough = sinks
            .states
            .iter()
            .all(|s| lock(&s.received).len() >= ids.len());
        if long_enough {
            let complete = sinks.states.iter().all(|s| {
                let recs = lock(&s.received);
                let got: HashSet<&str> = recs.iter().map(|r| r.id.as_str()).collect();
                ids.iter().all(|id| got.contains(id.as_str()))
            });
            if complete {
                return true;
            }
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct KillOutcome {
    acked: usize,
    retried: u64,
    lost: usize,
    missing_in_log: usize,
    duplicated_in_log: usize,
    missing_at_subscribers: usize,
    redelivered: usize,
    out_of_order: usize,
    restart_ms: f64,
}

async fn kill_test(ctx: &Ctx, sinks: &Sinks) -> anyhow::Result<KillOutcome> {
    let p = &ctx.params;
    let dir = tempfile::Builder::new()
        .prefix("switchyard-bench-kill")
        .tempdir()?;
    let port = free_port()?;
    let envs = [("SUBSCRIBERS", sinks.subscribers_env())];
    let mut bus = Service::spawn(
        &ctx.bin,
        "event-bus",
        port,
        &dir.path().join("data"),
        dir.path(),
        &envs,
    )?;
    bus.wait_ready(&ctx.http, Duration::from_secs(20)).await?;
    let url = format!("{}/events", bus.url());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(5))
        .build()?;
    let counter = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let dur = Duration::from_secs(p.kill_secs);
    let stop_at = Instant::now() + dur;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (http, url, counter, retried) =
            (http.clone(), url.clone(), counter.clone(), retried.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut gave_up = Vec::new();
            while Instant::now() < stop_at {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let id = format!("k-{i}");
                let give_up_at = Instant::now() + Duration::from_secs(30);
                loop {
                    if publish(&http, &url, &id, i).await {
                        acked.push(id);
                        break;
                    }
                    if Instant::now() > give_up_at {
                        gave_up.push(id);
                        break;
                    }
                    retried.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            (acked, gave_up)
        }));
    }
    tokio::time::sleep(dur.mul_f64(0.4)).await;
    bus.kill9();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    bus.restart()?;
    bus.wait_ready(&ctx.http, Duration::from_secs(20)).await?;
    let restart_ms = killed.elapsed().as_secs_f64() * 1000.0;
    let mut acked = Vec::new();
    for t in tasks {
        if let Ok((mut a, g)) = t.await {
            acked.append(&mut a);
            if !g.is_empty() {
                bail!(
                    "{} events were never acknowledged within 30 s of retries",
                    g.len()
                );
            }
        }
    }
    drain(sinks, &acked, Duration::from_secs(30)).await;

    let log: Vec<Value> = ctx
        .http
        .get(&url)
        .timeout(Duration::from_secs(60))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut in_log: HashMap<&str, usize> = HashMap::new();
    for e in &log {
        if let Some(id) = e["id"].as_str() {
            *in_log.entry(id).or_insert(0) += 1;
        }
    }
    let missing_in_log = acked
        .iter()
        .filter(|id| !in_log.contains_key(id.as_str()))
        .count();
    let duplicated_in_log = in_log.values().filter(|n| **n > 1).count();
    let mut missing_at_subscribers = 0;
    let mut redelivered = 0;
    let mut out_of_order = 0;
    for s in &sinks.states {
        let recs = s.take();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for r in &recs {
            *counts.entry(r.id.as_str()).or_insert(0) += 1;
        }
        missing_at_subscribers += acked
            .iter()
            .filter(|id| !counts.contains_key(id.as_str()))
            .count();
        redelivered += counts
            .values()
            .filter(|n| **n > 1)
            .map(|n| n - 1)
            .sum::<usize>();
        // Order: each event's first delivery must come after those of lower seq.
        let mut first_seen: HashSet<&str> = HashSet::new();
        let mut high = i64::MIN;
        for r in &recs {
            if first_seen.insert(r.id.as_str()) {
                if r.seq < high {
                    out_of_order += 1;
                }
                high = high.max(r.seq);
            }
        }
    }
    Ok(KillOutcome {
        acked: acked.len(),
        retried: retried.load(Ordering::Relaxed),
        lost: missing_in_log + duplicated_in_log + missing_at_subscribers,
        missing_in_log,
        duplicated_in_log,
        missing_at_subscribers,
        redelivered,
        out_of_order,
        restart_ms,
    })
}
