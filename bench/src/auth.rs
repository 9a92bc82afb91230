//! Scenario 6: the ticketing app's auth service: signups and signins per second with their
//! latency (argon2id at the service's default parameters, which the report states), and
//! `GET /api/users/currentuser` signed in against a bare axum handler returning the same
//! bytes, measured in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::procs::{Service, free_port, lock};
use crate::prod::Resources;
use crate::query::Bare;
use crate::report::{Dist, Figure, Section, fmt_num};
use crate::{Ctx, wrk};

const S: &str = "auth";
/// The key the benchmark's sessions are signed with.
const JWT_KEY: &str = "switchyard-bench-jwt-key-switchyard-bench";
/// Concurrent clients for signups and signins (two cores: more only queue).
const CLIENTS: usize = 8;
/// The header the one trusted proxy in front of auth appends the client's address to.
const XFF: &str = "x-forwarded-for";

/// The `n`th client address of group `group` (10.group.x.y), so every request of a loop
/// comes from its own address and no limit per address is what is measured.
fn client(group: usize, n: u64) -> String {
    format!("10.{}.{}.{}", group % 256, (n >> 8) % 256, n % 256)
}

pub async fn run(ctx: &Ctx) -> Section {
    let mut section = Section::new(
        S,
        "6. Ticketing auth: signup and signin throughput, currentuser reads",
    );
    on_each_backend!(ctx, section, measure);
    ctx.skip_note(&mut section);
    section
}

/// Runs `CLIENTS` loops of `one` for `secs`; returns (successes per second, latencies ms).
async fn hammer<F, Fut>(secs: u64, one: F) -> (f64, Dist, u64)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let one = Arc::new(one);
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let failures = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (one, latencies, failures) = (one.clone(), latencies.clone(), failures.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < until {
                    n += 1;
                    let t = Instant::now();
                    if one(c, n).await {
                        lock(&latencies).push(t.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let values = lock(&latencies).clone();
    let rate = values.len() as f64 / elapsed;
    (rate, Dist::new(values), failures.load(Ordering::Relaxed))
}

async fn measure(
    ctx: &Ctx,
    section: &mut Section,
    on: &str,
    res: Option<&Resources>,
) -> anyhow::Result<()> {
    wrk::check_installed()?;
    let p = &ctx.params;
    let dir = tempfile::Builder::new()
        .prefix("switchyard-bench-auth")
        .tempdir()?;
    // The limits keep their defaults. The service is told one proxy stands in front of it
    // (as `up`'s gateway and the cluster's ingress do), and each request names its own
    // client address in `X-Forwarded-For`, as many users behind that proxy would.
    let mut env: Vec<(&str, String)> = vec![
        ("JWT_KEY", JWT_KEY.to_string()),
        ("TRUSTED_PROXY_HOPS", "1".to_string()),
    ];
    if let Some(res) = res {
        let prefix = res.fresh_prefix();
        env.push(("DATABASE_URL", res.database(&prefix, "auth").await?));
    }
    let port = free_port()?;
    let mut auth = Service::spawn(
        &ctx.bin,
        "ticketing/auth",
        port,
        &dir.path().join("data"),
        dir.path(),
        &env,
    )?;
    auth.wait_ready(&ctx.http, Duration::from_secs(30)).await?;
    let base = auth.url();
    let secs = p.write_secs.max(2);

    // Signups: unique emails.
    let (http, url) = (ctx.http.clone(), format!("{base}/api/users/signup"));
    let (rate, lat, failed) = hammer(secs, move |c, n| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let body = serde_json::json!({"email": format!("u{c}-{n}@bench.test"), "password": "password"});
            let req = http.post(&url).header(XFF, client(10 + c, n)).json(&body);
            matches!(req.send().await, Ok(r) if r.status().as_u16() == 201)
        }
    })
    .await;
    section.push_on(
        on,
        Figure::info(S, "signups per second", rate, "/s")
            .note(format!("{CLIENTS} clients, {failed} failed")),
    );
    section.push_on(
        on,
        Figure::info(S, "signup latency p50", lat.pct(50.0), "ms"),
    );
    section.push_on(
        on,
        Figure::info(S, "signup latency p99", lat.pct(99.0), "ms"),
    );

    // Signins: the users just created.
    let (http, url) = (ctx.http.clone(), format!("{base}/api/users/signin"));
    let (rate, lat, failed) = hammer(secs, move |c, n| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let body =
                serde_json::json!({"email": format!("u{c}-1@bench.test"), "password": "password"});
            let req = http.post(&url).header(XFF, client(100 + c, n)).json(&body);
            matches!(req.send().await, Ok(r) if r.status().as_u16() == 200)
        }
    })
    .await;
    section.push_on(
        on,
        Figure::info(S, "signins per second", rate, "/s")
            .note(format!("{CLIENTS} clients, {failed} failed")),
    );
    section.push_on(
        on,
        Figure::info(S, "signin latency p50", lat.pct(50.0), "ms"),
    );
    section.push_on(
        on,
        Figure::info(S, "signin latency p99", lat.pct(99.0), "ms"),
    );

    // A real sign-in after 300 abandoned ones from 300 client addresses (each given up after
    // 0.3 s, as clients that time out do), so no limit per address slows them: hashing is
    // queued with a bound (503 at once past it) and a queued hash whose client has gone is
    // skipped, so the real one waits about one hash.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()?;
    let url = format!("{base}/api/users/signin");
    let mut abandoned = tokio::task::JoinSet::new();
    for i in 0..300 {
        let (http, url) = (impatient.clone(), url.clone());
        abandoned.spawn(async move {
            let body =
                serde_json::json!({"email": format!("gone{i}@bench.test"), "password": "wrong"});
            let req = http.post(&url).header(XFF, client(200, i)).json(&body);
            let _ = req.send().await;
        });
    }
    while abandoned.join_next().await.is_some() {}
    let started = std::time::Instant::now();
    let real = ctx
        .http
        .post(&url)
        .header(XFF, client(250, 1))
        .json(&serde_json::json!({"email": "u0-1@bench.test", "password": "password"}))
        .send()
        .await?;
    let real_ms = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        real.status().as_u16() == 200,
        "the real sign-in after the abandoned ones answered {}",
        real.status()
    );
    section.push_on(
        on,
        Figure::at_most(
            S,
            "a real sign-in after 300 abandoned ones",
            real_ms,
            "ms",
            2000.0,
        )
        .note("300 client addresses, each abandoned after 0.3 s; argon2id at its production cost"),
    );

    // currentuser, signed in, against a bare handler with the same bytes.
    let signup = ctx
        .http
        .post(format!("{base}/api/users/signup"))
        .json(&serde_json::json!({"email": "reader@bench.test", "password": "password"}))
        .send()
        .await?;
    anyhow::ensure!(
        signup.status().as_u16() == 201,
        "signup for the reader failed"
    );
    let cookie = signup
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("session="))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no session cookie"))?;
    let url = format!("{base}/api/users/currentuser");
    let body = ctx
        .http
        .get(&url)
        .header("cookie", &cookie)
        .send()
        .await?
        .bytes()
        .await?;
    anyhow::ensure!(
        body.starts_with(b"{\"currentUser\":{"),
        "currentuser did not see the session: {}",
        String::from_utf8_lossy(&body)
    );
    let file = dir.path().join("currentuser.json");
    std::fs::write(&file, &body)?;
    let bare = Bare::start(ctx, &file).await?;
    let headers = [format!("Cookie: {cookie}")];
    let service = wrk::run_with_headers(&url, 2, 32, p.wrk_secs, &headers).await?;
    let reference = wrk::run_with_headers(&bare.url(), 2, 32, p.wrk_secs, &headers).await?;
    let ratio = 100.0 * service.requests_per_sec / reference.requests_per_sec.max(1.0);
    section.push_on(
        on,
        Figure::info(
            S,
            "currentuser (signed in) requests per second",
            service.requests_per_sec,
            "/s",
        ),
    );
    section.push_on(
        on,
        Figure::info(
            S,
            "bare axum, same bytes, requests per second",
            reference.requests_per_sec,
            "/s",
        ),
    );
    section.push_on(
        on,
        Figure::at_least(S, "currentuser / bare axum", ratio, "%", 70.0).note(format!(
            "p99 {} ms vs {} ms",
            fmt_num(service.p99_ms, 2),
            fmt_num(reference.p99_ms, 2)
        )),
    );
    section.note(format!(
        "{on}: argon2id at the service's defaults (ARGON2_MEMORY_KIB=19456, ARGON2_ITERATIONS=2, ARGON2_PARALLELISM=1); signup hashes once, signin verifies once, both on the blocking pool; {CLIENTS} concurrent clients for {secs} s each."
    ));
    auth.kill9();
    Ok(())
}
