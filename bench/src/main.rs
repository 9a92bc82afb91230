//! `switchyard-bench`: the benchmark suite of Switchyard.
//!
//! It drives the real release `switchyard` binary as child processes (each with its own
//! temporary data directory, on free loopback ports), measures, compares with the targets
//! of the issues, prints Markdown and writes `bench/results/latest.{md,json}`.
//!
//! ```text
//! switchyard-bench [--quick] [--backend both|embedded|production] all | bus | query | write | startup | up | auth | ticketing
//! switchyard-bench bare-hop --port P --database URL [--stream NAME] [--next URL]
//! switchyard-bench bare-server --port P --file body.json
//! ```
//!
//! Every blog scenario runs on both backends: `embedded` (SQLite + the HTTP event bus) and
//! `production` (PostgreSQL + NATS JetStream, servers from `BENCH_POSTGRES_URL` /
//! `BENCH_NATS_URL`; skipped with a note when they are unreachable).

/// Runs a scenario's `measure(ctx, &mut section, backend, resources)` on every backend of
/// the plan, each with fresh resources, then records its failure and cleans up ([`finish`]).
macro_rules! on_each_backend {
    ($ctx:expr, $section:expr, $measure:path) => {
        for backend in $ctx.plan.backends() {
            let res = $ctx.resources(backend);
            let result = $measure($ctx, &mut $section, backend, res.as_ref()).await;
            $crate::finish(&mut $section, backend, res, result).await;
        }
    };
}

mod auth;
mod bare_hop;
mod bare_proxy;
mod blog;
mod bus;
mod hops;
mod natsbus;
mod procs;
mod prod;
mod query;
mod report;
mod sink;
mod startup;
mod ticketing;
mod tracing;
mod up;
mod write;
mod wrk;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};

use report::{Machine, Report, Section};

#[derive(Parser)]
#[command(
    name = "switchyard-bench",
    about = "Benchmarks of the Switchyard apps against their targets"
)]
struct Cli {
    /// A short run (about a minute in all), for CI.
    #[arg(long, global = true)]
    quick: bool,
    /// The `switchyard` binary to drive (default: next to this one, i.e. target/release).
    #[arg(long, global = true)]
    switchyard: Option<PathBuf>,
    /// Where latest.md and latest.json go (default: bench/results of the source tree).
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// Which backends to run: both (default), embedded or production.
    #[arg(long, global = true, default_value = "both", value_parser = ["both", "embedded", "production"])]
    backend: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every scenario, then the summary.
    All,
    /// 1. The event bus: throughput, latency, memory, SIGKILL.
    Bus,
    /// 2. The blog services: query vs bare axum, moderation end to end, memory.
    Query,
    /// 3. Sustained writes through posts and comments, and convergence of the read model.
    Write,
    /// 4. Start-up time of every service (spawn → /healthz, → /readyz).
    Startup,
    /// 5. `switchyard up blog` start-up and the gateway.
    Up,
    /// 6. Ticketing auth: signups, signins, currentuser against bare axum.
    Auth,
    /// 7. Ticketing under `up`: reads, order → reserved, purchases, memory, start-up.
    Ticketing,
    /// 8. One comment's three hops, step by step, from the services' trace logs.
    Hops,
    /// 9. Tracing: the purchase's and the approval's p99 with spans exported vs off.
    Tracing,
    /// One durable hop of the latency yardstick: commits a row, then posts to `--next`.
    BareHop {
        #[arg(long)]
        port: u16,
        /// `sqlite://...`, `postgres://...`, or `nats://...` with `--stream`.
        #[arg(long)]
        database: String,
        /// The JetStream stream to publish to, with a `nats://` URL.
        #[arg(long)]
        stream: Option<String>,
        #[arg(long)]
        next: Option<String>,
    },
    /// Forwards every request to `--to` and streams the answer back (the gateway's
    /// yardstick: a proxy that does nothing else).
    BareProxy {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        to: String,
    },
    /// Serves a file's bytes as JSON on every GET (the "bare axum" reference).
    BareServer {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        file: PathBuf,
    },
}

/// How long and how much each scenario runs.
#[derive(Debug, Clone)]
pub struct Params {
    pub publishers: usize,
    pub warmup_ms: u64,
    pub bus_secs: u64,
    pub latency_rate: u64,
    pub latency_secs: u64,
    pub kill_secs: u64,
    pub posts: usize,
    pub comments_per_post: usize,
    pub wrk_secs: u64,
    pub e2e_comments: usize,
    pub e2e_max_secs: u64,
    pub up_runs: usize,
    pub writers: usize,
    pub write_secs: u64,
    pub startup_runs: usize,
    /// Rounds of each mode in the tracing scenario (each a fresh `up`).
    pub tracing_rounds: usize,
}

impl Params {
    fn full() -> Params {
        Params {
            publishers: 32,
            warmup_ms: 1000,
            bus_secs: 10,
            latency_rate: 1000,
            latency_secs: 10,
            kill_secs: 6,
            posts: 100,
            comments_per_post: 3,
            wrk_secs: 10,
            e2e_comments: 300,
            e2e_max_secs: 120,
            up_runs: 3,
            writers: 32,
            write_secs: 10,
            startup_runs: 3,
            tracing_rounds: 8,
        }
    }

    fn quick() -> Params {
        Params {
            publishers: 32,
            warmup_ms: 300,
            bus_secs: 3,
            latency_rate: 1000,
            latency_secs: 3,
            kill_secs: 3,
            posts: 100,
            comments_per_post: 3,
            wrk_secs: 2,
            e2e_comments: 60,
            e2e_max_secs: 20,
            up_runs: 1,
            writers: 32,
            write_secs: 3,
            startup_runs: 1,
            tracing_rounds: 2,
        }
    }
}

/// What every scenario gets.
pub struct Ctx {
    pub bin: PathBuf,
    pub params: Params,
    pub http: reqwest::Client,
    pub plan: prod::Plan,
}

impl Ctx {
    /// Fresh bookkeeping of databases and streams for a run on `backend` (none on embedded).
    pub fn resources(&self, backend: &str) -> Option<prod::Resources> {
        match &self.plan.production {
            Some(servers) if backend == report::PRODUCTION => Some(prod::Resources::new(servers)),
            _ => None,
        }
    }

    /// Says in the section why production did not run, if it did not.
    pub fn skip_note(&self, section: &mut Section) {
        if let Some(why) = &self.plan.production_skipped {
            section.note(format!("skipped production: {why}"));
        }
    }
}

/// Ends one backend's run of a scenario: drops its databases and streams, records a failure.
pub async fn finish(
    section: &mut Section,
    backend: &str,
    res: Option<prod::Resources>,
    result: anyhow::Result<()>,
) {
    if let Err(e) = result {
        section.fail(backend, &e);
    }
    if let Some(res) = res {
        for f in res.cleanup().await {
            section.note(format!("{backend}: cleanup failed: {f}"));
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::BareServer { port, file } => bare_server(port, &file),
        Cmd::BareProxy { port, ref to } => bare_proxy::serve(port, to),
        Cmd::BareHop {
            port,
            database,
            stream,
            next,
        } => bare_hop::serve(port, &database, stream, next),
        ref cmd => {
            let which = match cmd {
                Cmd::All => vec![
                    "bus",
                    "query",
                    "write",
                    "startup",
                    "up",
                    "auth",
                    "ticketing",
                    "hops",
                    "tracing",
                ],
                Cmd::Bus => vec!["bus"],
                Cmd::Query => vec!["query"],
                Cmd::Write => vec!["write"],
                Cmd::Startup => vec!["startup"],
                Cmd::Up => vec!["up"],
                Cmd::Auth => vec!["auth"],
                Cmd::Ticketing => vec!["ticketing"],
                Cmd::Hops => vec!["hops"],
                Cmd::Tracing => vec!["tracing"],
                Cmd::BareServer { .. } | Cmd::BareHop { .. } | Cmd::BareProxy { .. } => vec![],
            };
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the runtime")
                .and_then(|rt| rt.block_on(suite(&cli, &which)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn locate_switchyard(cli: &Cli) -> anyhow::Result<PathBuf> {
    let bin = match &cli.switchyard {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating switchyard-bench")?
            .with_file_name("switchyard"),
    };
    anyhow::ensure!(
        bin.is_file(),
        "{} not found: build it first (`cargo build --release -p switchyard -p switchyard-bench`, or `bash bench/run.sh`), or pass --switchyard PATH",
        bin.display()
    );
    Ok(bin)
}

async fn suite(cli: &Cli, which: &[&str]) -> anyhow::Result<()> {
    let bin = locate_switchyard(cli)?;
    let out = cli
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results"));
    let params = if cli.quick {
        Params::quick()
    } else {
        Params::full()
    };
    let plan = if cli.backend == "embedded" {
        prod::Plan {
            embedded: true,
            production: None,
            production_skipped: Some("not selected (--backend embedded)".to_string()),
        }
    } else {
        let servers = prod::Servers::from_env();
        match servers.check().await {
            Ok(()) => prod::Plan {
                embedded: cli.backend == "both",
                production: Some(servers),
                production_skipped: None,
            },
            Err(e) => {
                eprintln!("switchyard-bench: production backend skipped: {e:#}");
                prod::Plan {
                    embedded: cli.backend == "both",
                    production: None,
                    production_skipped: Some(format!(
                        "servers unreachable ({e:#}); set BENCH_POSTGRES_URL / BENCH_NATS_URL"
                    )),
                }
            }
        }
    };
    let ctx = Ctx {
        bin,
        params,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()?,
        plan,
    };
    let started = Instant::now();
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut report = Report::new(
        if cli.quick { "quick" } else { "full" },
        Machine::detect(),
        started_unix,
    );
    report.backends = ctx.plan.backends().iter().map(|b| b.to_string()).collect();
    report.production_skipped = ctx.plan.production_skipped.clone();
    println!(
        "# switchyard-bench ({} run) driving {} on {}\n",
        report.mode,
        ctx.bin.display(),
        report.backends.join(" + ")
    );
    for name in which {
        let scenario = async {
            match *name {
                "bus" => bus::run(&ctx).await,
                "query" => query::run(&ctx).await,
                "write" => write::run(&ctx).await,
                "startup" => startup::run(&ctx).await,
                "auth" => auth::run(&ctx).await,
                "ticketing" => ticketing::run(&ctx).await,
                "hops" => hops::run(&ctx).await,
                "tracing" => tracing::run(&ctx).await,
                _ => up::run(&ctx).await,
            }
        };
        // Ctrl-C / SIGTERM: drop the scenario (its children are killed on drop), then stop.
        let section: Section = tokio::select! {
            s = scenario => s,
            _ = stop_signal() => {
                anyhow::bail!("interrupted; child processes stopped");
            }
        };
        println!("{}", section.markdown());
        report.add(section);
    }
    report.duration_s = started.elapsed().as_secs_f64();
    println!("{}", report.summary_markdown());
    report.write(&out)?;
    println!(
        "Results written to {} and {}",
        out.join("latest.md").display(),
        out.join("latest.json").display()
    );
    Ok(())
}

/// Serves `app` on 127.0.0.1:`port` until SIGTERM or Ctrl-C (the reference servers).
pub(crate) async fn serve_until_stopped(port: u16, app: axum::Router) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    axum::serve(listener, app)
        .with_graceful_shutdown(stop_signal())
        .await
        .context("serving")
}

pub(crate) async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// The reference: a bare axum 0.8 handler returning the same bytes from memory, on a
/// runtime like the services' (multi-thread, one worker per core).
fn bare_server(port: u16, file: &std::path::Path) -> anyhow::Result<()> {
    use axum::http::header;
    let body = bytes::Bytes::from(
        std::fs::read(file).with_context(|| format!("reading {}", file.display()))?,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let app = axum::Router::new().fallback(axum::routing::get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        }));
        crate::serve_until_stopped(port, app).await
    })
}
