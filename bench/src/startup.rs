//! Scenario 4: start-up time of every service: `switchyard serve <service>` spawned with a
//! fresh data directory (production: a fresh database and a fresh stream), timed to the
//! first 200 on `/healthz` and on `/readyz`; median of a few runs.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::Ctx;
use crate::procs::{Service, free_port, tail};
use crate::prod::Resources;
use crate::report::{Dist, Figure, Section, fmt_num};

const S: &str = "startup";
const SERVICES: [&str; 7] = [
    "event-bus",
    "posts",
    "comments",
    "query",
    "moderation",
    "client",
    "gateway",
];

pub async fn run(ctx: &Ctx) -> Section {
    let mut section = Section::new(
        S,
        "4. Start-up time per service: spawn → first 200 on /healthz and on /readyz",
    );
    on_each_backend!(ctx, section, measure);
    section.note(
        "The event bus runs on embedded only (production uses NATS). Client and gateway keep no data and use no bus: the same binary path on both backends. Embedded services other than the bus point EVENT_BUS_URL at a running bus (readiness checks it).",
    );
    ctx.skip_note(&mut section);
    section
}

/// Spawn → first 200 on `/healthz`, → first 200 on `/readyz`.
async fn time_one(
    ctx: &Ctx,
    name: &str,
    dir: &std::path::Path,
    env: &[(&str, String)],
) -> anyhow::Result<(f64, f64)> {
    let port = free_port()?;
    let data = dir.join(format!("data-{name}-{port}"));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .build()?;
    let t0 = Instant::now();
    let service = Service::spawn(&ctx.bin, name, port, &data, dir, env)?;
    let health = format!("{}/healthz", service.ops_url());
    let ready = format!("{}/readyz", service.ops_url());
    let (mut healthy, mut readied) = (None, None);
    let deadline = t0 + Duration::from_secs(30);
    while readied.is_none() || healthy.is_none() {
        if healthy.is_none()
            && let Ok(r) = http.get(&health).send().await
            && r.status().is_success()
        {
            healthy = Some(t0.elapsed());
        }
        if readied.is_none()
            && let Ok(r) = http.get(&ready).send().await
            && r.status().is_success()
        {
            readied = Some(t0.elapsed());
        }
        if Instant::now() > deadline {
            bail!(
                "{name} not healthy and ready within 30 s; its log:\n{}",
                tail(&dir.join(format!("{name}.log")), 15)
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(service);
    let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    Ok((ms(healthy), ms(readied)))
}

async fn measure(
    ctx: &Ctx,
    section: &mut Section,
    on: &str,
    res: Option<&Resources>,
) -> anyhow::Result<()> {
    let runs = ctx.params.startup_runs;
    let dir = tempfile::Builder::new()
        .prefix("switchyard-bench-startup")
        .tempdir()?;
    // Embedded: a bus for the services to reach (their readiness checks it).
    let mut helper_bus = None;
    if res.is_none() {
        let port = free_port()?;
        let mut bus = Service::spawn(
            &ctx.bin,
            "event-bus",
            port,
            &dir.path().join("helper-bus"),
            dir.path(),
            &[],
        )?;
        bus.wait_ready(&ctx.http, Duration::from_secs(20)).await?;
        helper_bus = Some(bus);
    }
    for name in SERVICES {
        if res.is_some() && name == "event-bus" {
            continue;
        }
        let mut health = Vec::new();
        let mut ready = Vec::new();
        for _ in 0..runs {
            let env: Vec<(&str, String)> = match (res, &helper_bus) {
                (Some(res), _) => {
                    let stream = res.stream();
                    res.service_env(name, &stream).await?
                }
                (None, Some(bus)) if name != "event-bus" => vec![("EVENT_BUS_URL", bus.url())],
                _ => Vec::new(),
            };
            let (h, r) = time_one(ctx, name, dir.path(), &env).await?;
            health.push(h);
            ready.push(r);
        }
        let list = |v: &[f64]| {
            v.iter()
                .map(|t| fmt_num(*t, 1))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (h, r) = (Dist::new(health.clone()), Dist::new(ready.clone()));
        section.push_on(
            on,
            Figure::info(
                S,
                &format!("{name}: spawn → /healthz 200 (median)"),
                h.pct(50.0),
                "ms",
            )
            .note(format!("{runs} runs: {} ms", list(&health))),
        );
        section.push_on(
            on,
            Figure::info(
                S,
                &format!("{name}: spawn → /readyz 200 (median)"),
                r.pct(50.0),
                "ms",
            )
            .note(format!("{runs} runs: {} ms", list(&ready))),
        );
    }
    drop(helper_bus);
    Ok(())
}
