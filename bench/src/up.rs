//! Scenario 3: `switchyard up blog` start-up time, and the gateway's cost on `GET /posts`.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::bare_proxy::BareProxy;
use crate::blog::{populate, wait_settled};
use crate::procs::{alive, descendants, port_free, signal};
use crate::prod::Resources;
use crate::report::{Dist, Figure, Section, fmt_num};
use crate::{Ctx, wrk};

const S: &str = "up";
/// The local ports of `app`, API and ops, as the app registry gives them (the gateway's API
/// port is chosen apart); `--port-offset` shifts them all.
fn ports(app: &switchyard_registry::App) -> Vec<u16> {
    app.services
        .iter()
        .flat_map(|s| {
            let api = (s.kind != switchyard_registry::Kind::Gateway).then_some(s.local_port);
            let ports: Vec<u16> = api.into_iter().chain([s.local_ops_port]).collect();
            // A second replica's (`up --replicas 2`).
            let second = (s.kind == switchyard_registry::Kind::App).then(|| ports.clone());
            ports.into_iter().chain(
                second
                    .into_iter()
                    .flatten()
                    .filter_map(|p| switchyard_registry::replica_port(p, 2)),
            )
        })
        .collect()
}

pub async fn run(ctx: &Ctx) -> Section {
    let mut section = Section::new(
        S,
        "5. The blog in one command: `switchyard up blog` and the gateway",
    );
    on_each_backend!(ctx, section, measure);
    ctx.skip_note(&mut section);
    section
}

/// A running `switchyard up <app>`; stopped (SIGTERM, then SIGKILL of the whole tree) when
/// dropped.
pub struct Up {
    child: tokio::process::Child,
    pub pid: u32,
    offset: u16,
    gateway_port: u16,
    /// Spawn → "is up in" line.
    pub ready_after: Duration,
    /// What `up` itself printed ("is up in 812.3ms").
    pub reported: String,
    drain: Option<tokio::task::JoinHandle<()>>,
}

/// Where the kernel's ephemeral ports start (Linux's default range is 32768-60999): a
/// port up there can be taken by any outgoing connection between the check and the bind.
const EPHEMERAL_PORTS_START: u32 = 32_768;

/// A port offset whose ports of `app`, and a gateway port, are all free, and all below
/// the ephemeral ports (the bench's own connections to PostgreSQL, NATS and the services
/// take those by the thousand).
fn free_layout(app: &switchyard_registry::App) -> anyhow::Result<(u16, u16)> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let highest = ports(app).into_iter().max().map_or(0, u32::from).max(4010);
    let span = EPHEMERAL_PORTS_START
        .saturating_sub(10_000 + highest + 1)
        .max(1);
    for attempt in 0..200u32 {
        let offset = 10_000 + u16::try_from((seed / 7 + attempt * 97) % span).unwrap_or(0);
        let gateway = offset + 4010;
        if ports(app).iter().all(|p| port_free(p + offset)) && port_free(gateway) {
            return Ok((offset, gateway));
        }
    }
    bail!("no free port layout found for `up`")
}

impl Up {
    /// Starts `up <app>` with its data in `data_dir`, more arguments `extra` and
    /// environment `envs`, and waits for its "is up in" line.
    pub async fn start(
        ctx: &Ctx,
        app: &switchyard_registry::App,
        data_dir: &Path,
        log: &Path,
        extra: &[String],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Up> {
        let (offset, gateway_port) = free_layout(app)?;
        let mut log_file = tokio::fs::File::create(log)
            .await
            .context("creating the up log")?;
        let stderr = std::fs::File::create(log.with_extension("stderr.log"))
            .context("creating the up log")?;
        let started = Instant::now();
        let mut child = tokio::process::Command::new(&ctx.bin)
            .args(["up", app.name, "--data-dir"])
            .arg(data_dir)
            .args([
                "--port-offset",
                &offset.to_string(),
                "--gateway-port",
                &gateway_port.to_string(),
            ])
            .args(extra)
            .env_remove("RUST_LOG")
            .env_remove("DATABASE_URL")
            .env_remove("EVENT_BUS_URL")
            .env_remove("LOG_FORMAT")
            .env_remove("DATA_DIR")
            .env_remove("GATEWAY_PORT")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .context("starting switchyard up")?;
        let pid = child.id().context("up pid")?;
        let stdout = child.stdout.take().context("up stdout")?;
        let (tx, rx) = tokio::sync::oneshot::channel::<(Instant, String)>();
        // Reads up's output: reports the "is up in" line, then keeps draining (so `up`
        // never blocks on a full pipe) into the log file.
        let drain = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut tx = Some(tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("is up in")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send((Instant::now(), line.clone()));
                }
                let _ = log_file.write_all(line.as_bytes()).await;
                let _ = log_file.write_all(b"\n").await;
            }
        });
        let mut up = Up {
            child,
            pid,
            offset,
            gateway_port,
            ready_after: Duration::ZERO,
            reported: String::new(),
            drain: Some(drain),
        };
        match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(Ok((at, line))) => {
                up.ready_after = at.duration_since(started);
                up.reported = line
                    .split("is up in")
                    .nth(1)
                    .and_then(|r| r.split(':').next())
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default();
                Ok(up)
            }
            Ok(Err(_)) => bail!(
                "`switchyard up {}` ended before it was up; its output:\n{}\nits errors:\n{}",
                app.name,
                crate::procs::tail(log, 30),
                crate::procs::tail(&log.with_extension("stderr.log"), 30)
            ),
            Err(_) => bail!(
                "`switchyard up {}` did not print \"is up in\" within 60 s; its output:\n{}\nits errors:\n{}",
                app.name,
                crate::procs::tail(log, 30),
                crate::procs::tail(&log.with_extension("stderr.log"), 30)
            ),
        }
    }

    /// The address of the service whose local port (before the offset) is `base_port`.
    pub fn url(&self, base_port: u16) -> String {
        format!("http://127.0.0.1:{}", base_port + self.offset)
    }

    pub fn gateway(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway_port)
    }

    /// SIGTERM to `up` (it stops its services in order); after 20 s, SIGKILL everything.
    pub async fn stop(mut self) {
        let tree = descendants(self.pid);
        signal(self.pid, Signal::SIGTERM);
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
        for p in std::iter::once(self.pid).chain(tree) {
            if alive(p) {
                signal(p, Signal::SIGKILL);
            }
        }
        let _ = self.child.wait().await;
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(d) = self.drain.take() {
            d.abort();
        }
        if let Ok(None) = self.child.try_wait() {
            // Not stopped through `stop`: do it synchronously, bounded.
            let tree = descendants(self.pid);
            signal(self.pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            for p in std::iter::once(self.pid).chain(tree) {
                if alive(p) {
                    signal(p, Signal::SIGKILL);
                }
            }
            let _ = self.child.start_kill();
        }
    }
}

/// Whether this `switchyard` knows `up --database-prefix`.
/// `up`'s arguments for `app` on the backend `res` stands for: none on embedded, fresh
/// databases and a fresh stream on production.
pub async fn backend_args(
    ctx: &Ctx,
    res: Option<&Resources>,
    app: &switchyard_registry::App,
) -> anyhow::Result<Vec<String>> {
    match res {
        Some(res) => {
            let prefix_flag = has_database_prefix(ctx).await;
            Ok(production_args(res, app, prefix_flag).await?.0)
        }
        None => Ok(Vec::new()),
    }
}

pub async fn has_database_prefix(ctx: &Ctx) -> bool {
    tokio::process::Command::new(&ctx.bin)
        .args(["up", "--help"])
        .stdin(Stdio::null())
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("--database-prefix"))
        .unwrap_or(false)
}

/// Names of the databases of `server` starting with `prefix`.
async fn databases_like(server: &str, prefix: &str) -> anyhow::Result<Vec<String>> {
    use sqlx::{Connection, Row};
    let url = switchyard_kit::db::with_database(server, "postgres");
    let mut conn = sqlx::postgres::PgConnection::connect(&url).await?;
    let rows = sqlx::query("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
        .bind(prefix)
        .fetch_all(&mut conn)
        .await?;
    conn.close().await.ok();
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get::<String, _>(0).ok())
        .collect())
}

/// The `up` arguments of one production run: a fresh stream and subject prefix, and fresh
/// databases (`--database-prefix`, or the default `switchyard_<service>` when the binary
/// has no such flag and no such database exists), all registered for clean-up.
pub async fn production_args(
    res: &Resources,
    app: &switchyard_registry::App,
    prefix_flag: bool,
) -> anyhow::Result<(Vec<String>, String)> {
    let stream = res.stream();
    let mut args = vec![
        "--postgres".to_string(),
        res.servers.postgres.clone(),
        "--nats".to_string(),
        res.servers.nats.clone(),
        "--stream".to_string(),
        stream.name.clone(),
        "--subject-prefix".to_string(),
        stream.prefix.clone(),
    ];
    let db_prefix = if prefix_flag {
        let p = res.fresh_prefix();
        args.extend(["--database-prefix".to_string(), p.clone()]);
        p
    } else {
        let existing = databases_like(&res.servers.postgres, "switchyard_").await?;
        anyhow::ensure!(
            existing.is_empty(),
            "this switchyard has no `up --database-prefix` and databases {} exist already: not touching them",
            existing.join(", ")
        );
        "switchyard".to_string()
    };
    for service in app
        .services
        .iter()
        .filter(|s| s.database && s.kind == switchyard_registry::Kind::App)
    {
        res.register_database(&format!("{db_prefix}_{}", service.name.replace('-', "_")));
    }
    Ok((args, db_prefix))
}

async fn measure(
    ctx: &Ctx,
    section: &mut Section,
    on: &str,
    res: Option<&Resources>,
) -> anyhow::Result<()> {
    let p = &ctx.params;
    wrk::check_installed()?;
    let root = tempfile::Builder::new()
        .prefix("switchyard-bench-up")
        .tempdir()?;
    let prefix_flag = res.is_some() && has_database_prefix(ctx).await;
    let mut times = Vec::new();
    let mut reported = Vec::new();
    let mut last = None;
    let mut db_prefixes = Vec::new();
    for run in 0..p.up_runs {
        let data = root.path().join(format!("run{run}"));
        let extra = match res {
            Some(res) => {
                let (args, db_prefix) =
                    production_args(res, &switchyard_registry::BLOG, prefix_flag).await?;
                db_prefixes.push(db_prefix);
                args
            }
            None => Vec::new(),
        };
        let up = Up::start(
            ctx,
            &switchyard_registry::BLOG,
            &data,
            &root.path().join(format!("up{run}.log")),
            &extra,
            &[],
        )
        .await?;
        times.push(up.ready_after.as_secs_f64() * 1000.0);
        reported.push(up.reported.clone());
        if run + 1 == p.up_runs {
            last = Some(up);
        } else {
            up.stop().await;
            // The default database names are reused: drop them before the next run.
            if let Some(res) = res
                && !prefix_flag
            {
                for f in res.cleanup().await {
                    section.note(format!("{on}: cleanup failed: {f}"));
                }
            }
        }
    }
    if res.is_some() {
        section.note(format!(
            "{on}: `switchyard up blog --postgres … --nats … --stream <fresh> --subject-prefix <fresh>{}` (databases {}, dropped afterwards); start-up includes creating the four databases.",
            if prefix_flag { " --database-prefix <fresh>" } else { "" },
            db_prefixes.iter().map(|p| format!("`{p}_*`")).collect::<Vec<_>>().join(", ")
        ));
    }
    let d = Dist::new(times.clone());
    section.push_on(
        on,
        Figure::at_most(
            S,
            "`switchyard up blog`: spawn → \"is up in\" (median)",
            d.pct(50.0),
            "ms",
            1000.0,
        )
        .original("~1.5 s")
        .note(format!(
            "{} runs, fresh data dirs: {} ms (up's own figure: {})",
            times.len(),
            times
                .iter()
                .map(|t| fmt_num(*t, 0))
                .collect::<Vec<_>>()
                .join(", "),
            reported.join(", ")
        )),
    );
    let up = last.context("no up run")?;

    // The gateway against query directly, same data.
    let gw = up.gateway();
    let query = up.url(4002);
    populate(&ctx.http, &gw, &gw, p.posts, p.comments_per_post).await?;
    let through_gw = wait_settled(
        &ctx.http,
        &gw,
        p.posts,
        p.posts * p.comments_per_post,
        Duration::from_secs(60),
    )
    .await?;
    let direct = ctx
        .http
        .get(format!("{query}/posts"))
        .send()
        .await?
        .bytes()
        .await?;
    if through_gw != direct {
        section.note(format!(
            "{on}: warning: the gateway's GET /posts body differs from query's"
        ));
    }
    let g = wrk::run(&format!("{gw}/posts"), 1, 64, p.wrk_secs).await?;
    let q = wrk::run(&format!("{query}/posts"), 1, 64, p.wrk_secs).await?;
    // The yardstick: what any proxy in front of query costs on this machine.
    let bare = BareProxy::start(ctx, &query, "/posts").await?;
    let b = wrk::run(&bare.url("/posts"), 1, 64, p.wrk_secs).await?;
    drop(bare);
    up.stop().await;
    let note = |r: &wrk::WrkResult| {
        format!(
            "wrk -t1 -c64 -d{}s: p50 {:.2} ms, p99 {:.2} ms{}",
            p.wrk_secs,
            r.p50_ms,
            r.p99_ms,
            if r.non_2xx + r.socket_errors > 0 {
                format!(", {} non-2xx, {} socket errors", r.non_2xx, r.socket_errors)
            } else {
                String::new()
            }
        )
    };
    section.push_on(
        on,
        Figure::info(
            S,
            "GET /posts through the gateway",
            g.requests_per_sec,
            "req/s",
        )
        .note(note(&g)),
    );
    section.push_on(
        on,
        Figure::info(
            S,
            "GET /posts straight to query",
            q.requests_per_sec,
            "req/s",
        )
        .note(note(&q)),
    );
    section.push_on(
        on,
        Figure::info(
            S,
            "GET /posts through a bare proxy (the yardstick)",
            b.requests_per_sec,
            "req/s",
        )
        .note(format!(
            "`switchyard-bench bare-proxy`: hyper-util's client as the gateway uses it, forwarding only; {}",
            note(&b)
        )),
    );
    section.push_on(
        on,
        Figure::info(
            S,
            "bare proxy / direct throughput",
            100.0 * b.requests_per_sec / q.requests_per_sec,
            "%",
        ),
    );
    section.push_on(
        on,
        Figure::info(
            S,
            "gateway / bare proxy throughput",
            100.0 * g.requests_per_sec / b.requests_per_sec,
            "%",
        ),
    );
    section.push_on(
        on,
        Figure::at_least(
            S,
            "gateway / direct throughput",
            100.0 * g.requests_per_sec / q.requests_per_sec,
            "%",
            75.0,
        ),
    );
    section.note(format!(
        "{on}: gateway figures use the last `up` instance populated with {} posts × {} comments ({} KB body) through the gateway.",
        p.posts,
        p.comments_per_post,
        through_gw.len() / 1000
    ));
    Ok(())
}
