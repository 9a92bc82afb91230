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

use clap::{Args, ValueEnum};

pub use plan::Plan;

/// The apps `up` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum App {
    /// Posts, comments, moderation, query, the event bus, the web client and the gateway.
    Blog,
}

impl App {
    pub fn name(self) -> &'static str {
        match self {
            App::Blog => "blog",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// The app to run.
    #[arg(default_value = "blog")]
    pub app: App,
    /// Where every service keeps its data (one folder per service).
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// The gateway's port: the address to open in a browser.
    #[arg(long, env = "GATEWAY_PORT", default_value_t = 8080)]
    pub gateway_port: u16,
    /// Added to every service's contract port (4000, 4001, ...), to run beside other things.
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
    /// Use NATS JetStream as the bus, e.g. nats://127.0.0.1:4222 (the HTTP event bus is
    /// then not started). Default: the HTTP event bus.
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// The JetStream stream, with --nats.
    #[arg(long, default_value = "BLOG")]
    pub stream: String,
    /// The subject prefix, with --nats.
    #[arg(long, default_value = "blog")]
    pub subject_prefix: String,
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

/// Runs the app until Ctrl-C or SIGTERM.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let plan = Plan::new(&args).await?;
    plan.check_ports()?;
    supervisor::run(plan, args.ready_timeout).await
}
