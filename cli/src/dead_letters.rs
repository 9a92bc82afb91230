//! `switchyard dead-letters <service> list | show ID | replay ID | replay --all`: a
//! service's dead letters, in its outbox and at the bus (see
//! [`switchyard_bus_client::dead_letters`]).
//!
//! The service's database and bus come from the environment, as for `serve` (in a pod:
//! `kubectl exec deploy/orders-depl -- switchyard dead-letters orders list`). Beside `up`,
//! `--data-dir` names `up`'s data directory; the bus is the app's local one (or
//! `EVENT_BUS_URL`), its ops listener the registry's (or `EVENT_BUS_OPS_URL`).

use std::path::PathBuf;

use clap::Subcommand;
use switchyard_bus_client::BusConfig;
use switchyard_bus_client::dead_letters::{ConsumerNames, DeadLetters};
use switchyard_kit::{Db, Env};
use switchyard_registry::{Kind, Resolved};

use crate::services;

#[derive(Subcommand, Debug, Clone)]
pub enum Action {
    /// Every dead letter of the service, one a line (`--json` for JSON).
    List {
        #[arg(long)]
        json: bool,
    },
    /// One dead letter with its event, as JSON.
    Show { id: String },
    /// Deliver a dead letter again (or every one, with --all).
    Replay {
        /// The dead letter's id, as `list` shows it.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

/// Runs `action` for `service`.
pub async fn run(
    service: &str,
    data_dir: Option<PathBuf>,
    action: Action,
    env: &Env,
) -> anyhow::Result<()> {
    let r = switchyard_registry::resolve(service)?;
    if r.service.kind != Kind::App {
        anyhow::bail!(
            "{} is not an app service: it has no dead letters of its own",
            r.qualified()
        );
    }
    let env = services::beside_up(&r, env, data_dir);
    let letters = open(&r, &env).await?;
    match action {
        Action::List { json } => {
            let list = letters.list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("{}: no dead letters", r.qualified());
            } else {
                println!("{:<18} {:<22} {:<26} REASON", "ID", "TYPE", "AT");
                for d in &list {
                    println!(
                        "{:<18} {:<22} {:<26} {}",
                        d.id,
                        d.event_type.as_deref().unwrap_or("?"),
                        d.at,
                        d.reason
                    );
                }
            }
        }
        Action::Show { id } => match letters.show(&id).await? {
            Some(d) => println!("{}", serde_json::to_string_pretty(&d)?),
            None => anyhow::bail!("{}: no dead letter {id}", r.qualified()),
        },
        Action::Replay { id: Some(id), .. } => {
            if letters.replay(&id).await? {
                println!("{id}: replayed");
            } else {
                println!("{id}: nothing to replay (replayed already, or no such dead letter)");
            }
        }
        Action::Replay { id: None, .. } => {
            let n = letters.replay_all().await?;
            println!("{}: {n} dead letters replayed", r.qualified());
        }
    }
    if let Some(db) = &letters.db {
        db.close().await;
    }
    Ok(())
}

async fn open(r: &Resolved, env: &Env) -> anyhow::Result<DeadLetters> {
    let settings = services::service_settings(r, env)?;
    let bus = BusConfig::connect(&settings.bus).await?;
    let db = if r.service.database {
        Some(Db::connect(&settings.common.database_url).await?)
    } else {
        None
    };
    Ok(DeadLetters {
        db,
        bus,
        consumer: r.service.consumer_group.map(|group| ConsumerNames {
            subscriber: r.service.name.to_string(),
            durable: group.to_string(),
        }),
        bus_ops: env
            .raw("EVENT_BUS_OPS_URL")
            .map(|u| u.trim_end_matches('/').to_string()),
    })
}
