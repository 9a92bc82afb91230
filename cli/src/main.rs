//! `switchyard`: run any service (`serve <name>`), or a whole app (`up <app>`).

mod dead_letters;
mod services;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The text after `--help`: the apps and their services, from the app registry.
fn after_help() -> String {
    format!(
        "Start a whole app: switchyard up <APP> (then open the address it prints)\n\nServices (switchyard serve <SERVICE>), by app:\n{}\nConfiguration comes from environment variables: PORT, OPS_PORT, HOST, DATA_DIR,\nDATABASE_URL, EVENT_BUS_URL, LOG_FORMAT, RUST_LOG, ... (see the README).",
        switchyard_registry::help_text()
    )
}

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Event-driven microservices: the apps and their platform",
    after_help = after_help()
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one service, configured from environment variables.
    Serve {
        /// The service to run: its name, or app/name when two apps share it.
        #[arg(env = "SWITCHYARD_SERVICE")]
        service: String,
    },
    /// Run a whole app on this machine: every service its own process, supervised.
    Up(up::UpArgs),
    /// Run a service's database migrations against DATABASE_URL, then exit.
    Migrate {
        #[arg(env = "SWITCHYARD_SERVICE")]
        service: String,
    },
    /// List the services of every app (as `serve` takes them), or check one name.
    Services {
        /// Exit 0 and print its qualified name if NAME is a service (image builds use it).
        #[arg(long, value_name = "NAME")]
        check: Option<String>,
    },
    /// Rebuild the query service's read model from the whole event log (query stopped).
    RebuildQuery,
    /// List, show or replay a service's dead letters: events its outbox or its consumer set
    /// aside. Configured like `serve` (its database, the bus).
    DeadLetters {
        /// The service: its name, or app/name.
        service: String,
        /// The data directory `up` was given (the service's data is in DIR/<service>).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<std::path::PathBuf>,
        #[command(subcommand)]
        action: dead_letters::Action,
    },
    /// Republish a service's state for its replicas (tickets: every ticket, or one, as a
    /// `ticket:updated` snapshot that a replica applies when it is newer than its own).
    /// Configured like `serve`; writes through the service's outbox.
    Republish {
        /// The service (tickets).
        service: String,
        /// The data directory `up` was given (the service's data is in DIR/<service>).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<std::path::PathBuf>,
        /// Only this one.
        #[arg(long)]
        id: Option<String>,
    },
    /// Print the NATS users of an app's services (a nats-server `authorization` block:
    /// each service publishes its own events and pulls its own durable only).
    NatsUsers {
        /// The app.
        app: String,
        /// Its stream, if not the app's (`BUS_STREAM`).
        #[arg(long, env = "BUS_STREAM")]
        stream: Option<String>,
        /// Its subject prefix, if not the app's (`BUS_SUBJECT_PREFIX`).
        #[arg(long, env = "BUS_SUBJECT_PREFIX")]
        subject_prefix: Option<String>,
    },
    /// Print an app's events as an AsyncAPI 3 document (JSON): every event with its
    /// payload schema, which service sends and which receives it, on both buses. The
    /// committed copies are docs/asyncapi/<app>.json; `up` serves it on the gateway's ops
    /// port at /asyncapi.json.
    Asyncapi {
        /// The app.
        app: String,
    },
    /// Open the console of an app that runs already: its map, live events and their
    /// journeys, consumers and dead letters, read from its bus (EVENT_BUS_URL, by default
    /// the app's local one; beside `up`, --data-dir gives the bus's secret). For traces,
    /// the services' OTEL_EXPORTER_OTLP_ENDPOINT names it.
    Console {
        /// The app.
        app: String,
        /// The data directory `up` was given (its bus secret is there).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<std::path::PathBuf>,
        /// The port of its page (default: the registry's, which `up`'s own console takes).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Exit 0 if the URL answers 2xx (container health checks; no shell needed).
    Healthcheck {
        /// Default: http://127.0.0.1:$OPS_PORT/healthz.
        #[arg(long)]
        url: Option<String>,
    },
}

impl Command {
    /// Whether this runs a console: work about an app, which yields the CPU to the app's
    /// own processes on a busy machine (see `switchyard_kit::priority`).
    fn watches_an_app(&self) -> bool {
        match self {
            Command::Console { .. } => true,
            Command::Serve { service } => switchyard_registry::resolve(service)
                .is_ok_and(|r| r.service.kind == switchyard_registry::Kind::Console),
            _ => false,
        }
    }
}

/// `OPS_PORT`, or the registry's ops port of `SWITCHYARD_SERVICE`.
fn ops_port_for_healthcheck(env: &switchyard_kit::Env) -> anyhow::Result<u16> {
    if env.raw("OPS_PORT").is_some() {
        return Ok(env.required::<u16>("OPS_PORT", "")?);
    }
    let service: String = env.required(
        "SWITCHYARD_SERVICE",
        "or OPS_PORT, or --url: which service to check",
    )?;
    Ok(switchyard_registry::resolve(&service)?
        .service
        .local_ops_port)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.watches_an_app() {
        // Before the runtime starts its threads, so that every one of them inherits it.
        if let Err(e) = switchyard_kit::priority::lower_this_thread() {
            eprintln!("switchyard: the console keeps the default priority: {e}");
        }
    }
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
            services::serve(&service, &env).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Up(args) => {
            up::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { service } => {
            services::migrate(&service, &env).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Services { check: Some(name) } => {
            println!("{}", switchyard_registry::resolve(&name)?.qualified());
            Ok(ExitCode::SUCCESS)
        }
        Command::Services { check: None } => {
            print!("{}", switchyard_registry::help_text());
            Ok(ExitCode::SUCCESS)
        }
        Command::RebuildQuery => {
            let query = switchyard_registry::resolve("blog/query")?;
            let settings = services::service_settings(&query, &env)?;
            let read = switchyard_query::rebuild(&settings).await?;
            println!("query read model rebuilt from {read} events");
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetters {
            service,
            data_dir,
            action,
        } => {
            dead_letters::run(&service, data_dir, action, &env).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Republish {
            service,
            data_dir,
            id,
        } => {
            let r = switchyard_registry::resolve(&service)?;
            if r.qualified() != "ticketing/tickets" {
                anyhow::bail!(
                    "{} has no state to republish (tickets does; orders cancels its overdue orders by itself)",
                    r.qualified()
                );
            }
            let env = services::beside_up(&r, &env, data_dir);
            let common = services::common_config(&r, &env)?;
            let db = switchyard_kit::Db::connect(&common.database_url).await?;
            let n = switchyard_tickets::republish(&db, id.as_deref()).await?;
            db.close().await;
            println!("{n} tickets republished (published by the tickets service's outbox)");
            Ok(ExitCode::SUCCESS)
        }
        Command::Console {
            app,
            data_dir,
            port,
        } => {
            let r = switchyard_registry::resolve(&format!("{app}/console"))?;
            let mut env = services::beside_up(&r, &env, None);
            if let Some(dir) = data_dir
                && env.raw(switchyard_registry::BUS_SECRET).is_none()
            {
                let path = dir.join(switchyard_registry::BUS_SECRET.to_lowercase());
                if let Ok(secret) = std::fs::read_to_string(&path) {
                    env = env.with_overrides([(switchyard_registry::BUS_SECRET, secret.trim())]);
                }
            }
            let port = port.unwrap_or(r.service.local_port);
            // Its ops endpoints on any free port: the registry's is `up`'s console's. On this
            // machine only unless HOST says otherwise: it has no sign-in.
            env = env
                .with_overrides([("PORT", port.to_string())])
                .with_defaults([("OPS_PORT", "0"), ("HOST", "127.0.0.1")]);
            println!("the console of {}: http://127.0.0.1:{port}", r.app.name);
            services::serve(&r.qualified(), &env).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::NatsUsers {
            app,
            stream,
            subject_prefix,
        } => {
            let app = switchyard_registry::app(&app).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown app {app:?}; the apps are: {}",
                    switchyard_registry::app_names().join(", ")
                )
            })?;
            print!(
                "{}",
                services::nats_server_config(
                    app,
                    stream.as_deref().unwrap_or(app.stream),
                    subject_prefix.as_deref().unwrap_or(app.subject_prefix),
                )
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Asyncapi { app } => {
            let app = switchyard_registry::app(&app).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown app {app:?}; the apps are: {}",
                    switchyard_registry::app_names().join(", ")
                )
            })?;
            print!("{}", switchyard_registry::asyncapi::document_text(app));
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck { url } => {
            let url = match url {
                Some(url) => url,
                None => format!(
                    "http://127.0.0.1:{}/healthz",
                    ops_port_for_healthcheck(&env)?
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
