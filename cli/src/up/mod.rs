//! `switchyard up <app>`: a whole app on one machine, each service its own process.
//!
//! Like a Deployment, the supervisor keeps every service running: it starts them in
//! dependency order, waits until each answers `/readyz`, restarts one that exits (with
//! exponential backoff), prefixes every log line with the service's name, and on Ctrl-C or
//! SIGTERM stops them all gracefully.

mod plan;
mod supervisor;
mod table;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

pub use plan::Plan;

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// The app to run (without one, the apps are listed).
    pub app: Option<String>,
    /// Where every service keeps its data (one folder per service).
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// The gateway's port: the address to open in a browser (default: the app's, from the
    /// registry, plus --port-offset).
    #[arg(long, env = "GATEWAY_PORT")]
    pub gateway_port: Option<u16>,
    /// Added to every service's local port (the blog's 4000, 4001, ...), to run beside
    /// other things.
    #[arg(long, default_value_t = 0)]
    pub port_offset: u16,
    /// Address the services and the gateway listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Run every service on this PostgreSQL server (one database per service, created if
    /// missing), e.g. postgres://postgres@127.0.0.1:5432. Default: a SQLite file each.
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
    /// With --postgres, the databases are named <prefix>_<service>.
    #[arg(long, default_value = "switchyard")]
    pub database_prefix: String,
    /// Use NATS JetStream as the bus, e.g. nats://127.0.0.1:4222, or several servers of one
    /// cluster separated by commas (the HTTP event bus is then not started). Default: the
    /// HTTP event bus.
    #[arg(long, value_name = "URL[,URL...]")]
    pub nats: Option<String>,
    /// With --nats, how many servers of the cluster keep each stream (1 to 5).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: u8,
    /// How long the bus keeps an event, in seconds (the NATS stream's max age, or the HTTP
    /// bus's retention; 0: for ever). Default: the app's (`EVENTS_MAX_AGE_SECONDS`).
    #[arg(
        long,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(0..=switchyard_kit::config::MAX_RETENTION_SECONDS)
    )]
    pub events_max_age: Option<u64>,
    /// The JetStream stream, with --nats (default: the app's, e.g. BLOG).
    #[arg(long)]
    pub stream: Option<String>,
    /// The subject prefix, with --nats (default: the app's, e.g. blog).
    #[arg(long)]
    pub subject_prefix: Option<String>,
    /// Processes of every service of the app that can run as several (not the bus, the
    /// gateway or the console), each behind the gateway: 1 to 4; more than one needs the
    /// production backends (--postgres and --nats). Replica k listens on the service's
    /// ports plus 20 × (k − 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=plan::MAX_REPLICAS as i64))]
    pub replicas: u8,
    /// Replicas of one service, over --replicas (repeatable): `--replica orders=3`.
    #[arg(long = "replica", value_name = "SERVICE=N")]
    pub replica: Vec<String>,
    /// How long to wait for every service to be ready.
    #[arg(long, default_value = "30", value_parser = parse_secs)]
    pub ready_timeout: Duration,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?} is not a number of seconds"))
}

/// The apps, one per line, for `up` without an app or with an unknown one.
fn app_list() -> String {
    switchyard_registry::APPS
        .iter()
        .map(|a| format!("  {:<12} {}", a.name, a.about))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the app until Ctrl-C or SIGTERM.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let Some(name) = args.app.as_deref() else {
        anyhow::bail!("which app? switchyard up <APP>, one of:\n{}", app_list());
    };
    let Some(app) = switchyard_registry::app(name) else {
        anyhow::bail!("unknown app {name:?}; the apps are:\n{}", app_list());
    };
    let plan = Plan::new(app, &args).await?;
    plan.check_ports()?;
    supervisor::run(plan, args.ready_timeout).await
}
