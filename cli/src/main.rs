//! `switchyard`: run any service (`serve <name>`), or a whole app (`up <app>`).

mod services;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use services::ServiceName;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Event-driven microservices: the blog and its platform",
    after_help = "Start the whole blog: switchyard up blog (then open http://127.0.0.1:8080)\n\nServices (switchyard serve <SERVICE>):\n  event-bus   the event bus: durable log, ordered delivery (port 4005)\n  posts       creates posts (port 4000)\n  comments    comments per post and their status (port 4001)\n  query       the read model: posts with comments (port 4002)\n  moderation  judges new comments (port 4003)\n  client      the web client (port 3000)\n  gateway     the local ingress: the rules of infra/k8s/base/ingress-srv.yaml (port 8080)\n\nConfiguration comes from environment variables: PORT, HOST, DATA_DIR, DATABASE_URL,\nEVENT_BUS_URL, LOG_FORMAT, RUST_LOG, ... (see the README)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one service, configured from environment variables.
    Serve {
        /// The service to run.
        #[arg(env = "SWITCHYARD_SERVICE")]
        service: ServiceName,
    },
    /// Run a whole app on this machine: every service its own process, supervised.
    Up(up::UpArgs),
    /// Run a service's database migrations against DATABASE_URL, then exit.
    Migrate {
        #[arg(env = "SWITCHYARD_SERVICE")]
        service: ServiceName,
    },
    /// Rebuild the query service's read model from the whole event log (query stopped).
    RebuildQuery,
    /// Exit 0 if the URL answers 2xx (container health checks; no shell needed).
    Healthcheck {
        /// Default: http://127.0.0.1:$PORT/healthz.
        #[arg(long)]
        url: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let env = switchyard_kit::Env::process();
    switchyard_kit::telemetry::init(switchyard_kit::telemetry::format_from_env(&env)?);
    match command {
        Command::Serve { service } => {
            services::serve(service, &env).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Up(args) => {
            up::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { service } => {
            services::migrate(service, &env).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::RebuildQuery => {
            let settings = switchyard_query::settings_from_env(&env)?;
            let read = switchyard_query::rebuild(&settings).await?;
            println!("query read model rebuilt from {read} events");
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck { url } => {
            let url = match url {
                Some(url) => url,
                None => format!(
                    "http://127.0.0.1:{}/healthz",
                    env.parse_or::<u16>("PORT", 4000)?
                ),
            };
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(3))
                .build()?;
            match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => Ok(ExitCode::SUCCESS),
                Ok(r) => {
                    eprintln!("{url} answered {}", r.status());
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => {
                    eprintln!("{url}: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
