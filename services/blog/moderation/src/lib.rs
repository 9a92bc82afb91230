//! The moderation service (port 4003).
//!
//! `POST /events` ← the bus: on `CommentCreated`, the comment is `rejected` when its content
//! contains a blocked word (case-sensitive substring; `BLOCKED_WORDS`, default `orange`),
//! `approved` otherwise, and `CommentModerated` is published. Moderation owns no business
//! data; its database holds only its outbox and inbox, so each comment is judged once and
//! the verdict is never lost.

mod rule;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use switchyard_bus_client::consumer::{Handled, malformed};
use switchyard_bus_client::inbox::begin_once;
use switchyard_bus_client::outbox::{MESSAGING_POSTGRES, MESSAGING_SQLITE};
use switchyard_bus_client::{BusConfig, EventHandler, Foundation, HandleError, Outbox};
use switchyard_events::{BlogEvent, Envelope};
use switchyard_kit::{CommonConfig, ConfigError, Db, Env, Migrations, Shutdown};
use tokio::net::TcpListener;

pub use rule::Rule;

pub const SERVICE: &str = "moderation";
pub const DEFAULT_PORT: u16 = 4003;

pub static MIGRATIONS: Migrations = Migrations {
    sqlite: &[("messaging", MESSAGING_SQLITE)],
    postgres: &[("messaging", MESSAGING_POSTGRES)],
};

#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonConfig,
    pub bus: BusConfig,
    pub rule: Rule,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Settings {
            common: CommonConfig::from_env(env, SERVICE, DEFAULT_PORT)?,
            bus: BusConfig::from_env(env)?,
            rule: Rule::new(env.list_or("BLOCKED_WORDS", &["orange"])),
        })
    }
}

/// Runs the service on `listener` until `shutdown`.
pub async fn launch(
    settings: Settings,
    listener: TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let common = &settings.common;
    let base =
        Foundation::start(SERVICE, common, &settings.bus, &MIGRATIONS, true, &shutdown).await?;
    let handler = Arc::new(Moderator {
        db: base.db.clone(),
        outbox: base.outbox.clone(),
        rule: settings.rule.clone(),
    });
    base.consume(handler.clone(), &shutdown).await?;
    base.serve(common, axum::Router::new(), handler, listener, shutdown)
        .await
}

struct Moderator {
    db: Db,
    outbox: Outbox,
    rule: Rule,
}

impl EventHandler for Moderator {
    fn handle(&self, event: Envelope) -> BoxFuture<'_, Result<Handled, HandleError>> {
        Box::pin(async move {
            let Some(BlogEvent::CommentCreated {
                id,
                post_id,
                content,
                ..
            }) = BlogEvent::from_envelope(&event).map_err(malformed)?
            else {
                return Ok(Handled::Ignored);
            };
            let Some(mut tx) = begin_once(&self.db, &event.id).await? else {
                return Ok(Handled::Duplicate);
            };
            let status = self.rule.judge(&content);
            let verdict = BlogEvent::CommentModerated {
                id,
                post_id,
                content,
                status,
            }
            .into_envelope(event.correlation_id.clone());
            Outbox::enqueue(&mut tx, &verdict).await?;
            tx.commit().await?;
            self.outbox.wake();
            Ok(Handled::Applied)
        })
    }
}
