//! `switchyard-bench`: the benchmark suite of Switchyard.
//!
//! It drives the real release `switchyard` binary as child processes (each with its own
//! temporary data directory, on free loopback ports), measures, compares with the targets
//! of the issues, prints Markdown and writes `bench/results/latest.{md,json}`.
//!
//! ```text
//! switchyard-bench [--quick] all | bus | query | up
//! switchyard-bench bare-server --port P --file body.json
//! ```

mod blog;
mod bus;
mod procs;
mod query;
mod report;
mod sink;
mod up;
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
    about = "Benchmarks of the Switchyard blog against its targets"
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
    /// 3. `switchyard up blog` start-up and the gateway.
    Up,
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
        }
    }
}

/// What every scenario gets.
pub struct Ctx {
    pub bin: PathBuf,
    pub params: Params,
    pub http: reqwest::Client,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::BareServer { port, file } => bare_server(port, &file),
        ref cmd => {
            let which = match cmd {
                Cmd::All => vec!["bus", "query", "up"],
                Cmd::Bus => vec!["bus"],
                Cmd::Query => vec!["query"],
                Cmd::Up => vec!["up"],
                Cmd::BareServer { .. } => vec![],
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
    let ctx = Ctx {
        bin,
        params,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .build()?,
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
    println!(
        "# switchyard-bench ({} run) driving {}\n",
        report.mode,
        ctx.bin.display()
    );
    for name in which {
        let scenario = async {
            match *name {
                "bus" => bus::run(&ctx).await,
                "query" => query::run(&ctx).await,
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

async fn stop_signal() {
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
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("binding 127.0.0.1:{port}"))?;
        axum::serve(listener, app)
            .with_graceful_shutdown(stop_signal())
            .await
            .context("serving")
    })
}
