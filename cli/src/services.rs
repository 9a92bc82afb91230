//! The services the binary can run.

use clap::ValueEnum;
use switchyard_kit::{Env, Shutdown};
use tokio::net::TcpListener;

/// Every service `switchyard serve` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceName {
    /// The event bus: durable log, ordered at-least-once delivery (4005).
    EventBus,
    /// Posts: creates posts (4000).
    Posts,
    /// Comments: comments per post and their status (4001).
    Comments,
    /// Query: the read model of posts with comments (4002).
    Query,
    /// Moderation: judges new comments (4003).
    Moderation,
    /// The web client (3000).
    Client,
    /// The local gateway: the Ingress rules on one machine (8080).
    Gateway,
}

async fn bind(common: &switchyard_kit::CommonConfig) -> anyhow::Result<TcpListener> {
    let addr = common.bind_addr();
    TcpListener::bind(&addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "{}: address {addr} is already in use (another process has port {}; set PORT to choose another)",
                common.service,
                common.port
            )
        } else {
            anyhow::anyhow!("{}: cannot listen on {addr}: {e}", common.service)
        }
    })
}

/// Runs `service` from the environment until SIGTERM or Ctrl-C.
pub async fn serve(service: ServiceName, env: &Env) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals();
    match service {
        ServiceName::EventBus => {
            let s = switchyard_event_bus::Settings::from_env(env)?;
            let l = bind(&s.common).await?;
            switchyard_event_bus::launch(s, l, shutdown).await
        }
        ServiceName::Posts => {
            let s = switchyard_posts::settings_from_env(env)?;
            let l = bind(&s.common).await?;
            switchyard_posts::launch(s, l, shutdown).await
        }
        ServiceName::Comments => {
            let s = switchyard_comments::settings_from_env(env)?;
            let l = bind(&s.common).await?;
            switchyard_comments::launch(s, l, shutdown).await
        }
        ServiceName::Query => {
            let s = switchyard_query::settings_from_env(env)?;
            let l = bind(&s.common).await?;
            switchyard_query::launch(s, l, shutdown).await
        }
        ServiceName::Moderation => {
            let s = switchyard_moderation::Settings::from_env(env)?;
            let l = bind(&s.common).await?;
            switchyard_moderation::launch(s, l, shutdown).await
        }
        ServiceName::Client => {
            let s = switchyard_client::Settings::from_env(env)?;
            let l = bind(&s.common).await?;
            switchyard_client::launch(s, l, shutdown).await
        }
        ServiceName::Gateway => {
            let s = switchyard_gateway::Settings::from_env(env)?;
            let l = bind(&s.common).await?;
            switchyard_gateway::launch(s, l, shutdown).await
        }
    }
}

/// Runs `service`'s migrations and returns.
pub async fn migrate(service: ServiceName, env: &Env) -> anyhow::Result<()> {
    let (name, port, migrations) = match service {
        ServiceName::EventBus => (
            switchyard_event_bus::SERVICE,
            switchyard_event_bus::DEFAULT_PORT,
            &switchyard_event_bus::MIGRATIONS,
        ),
        ServiceName::Posts => (
            switchyard_posts::SERVICE,
            switchyard_posts::DEFAULT_PORT,
            &switchyard_posts::MIGRATIONS,
        ),
        ServiceName::Comments => (
            switchyard_comments::SERVICE,
            switchyard_comments::DEFAULT_PORT,
            &switchyard_comments::MIGRATIONS,
        ),
        ServiceName::Query => (
            switchyard_query::SERVICE,
            switchyard_query::DEFAULT_PORT,
            &switchyard_query::MIGRATIONS,
        ),
        ServiceName::Moderation => (
            switchyard_moderation::SERVICE,
            switchyard_moderation::DEFAULT_PORT,
            &switchyard_moderation::MIGRATIONS,
        ),
        ServiceName::Client | ServiceName::Gateway => {
            tracing::info!(service = ?service, "no database, nothing to migrate");
            return Ok(());
        }
    };
    let common = switchyard_kit::CommonConfig::from_env(env, name, port)?;
    let db = switchyard_kit::Db::connect(&common.database_url).await?;
    db.migrate(migrations).await?;
    db.close().await;
    tracing::info!(service = name, "migrations applied");
    Ok(())
}
