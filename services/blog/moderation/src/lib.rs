//! The moderation service (port 4003 in the blog's contract).
//!
//! `POST /events` ← the bus: on `CommentCreated`, the comment is `rejected` when its content
//! contains a blocked word (case-sensitive substring; `BLOCKED_WORDS`, default `orange`),
//! `approved` otherwise, and `CommentModerated` is published. Moderation owns no business
//! data; its database holds only its outbox and inbox, so each comment is judged once and
//! the verdict is never lost.

mod rule;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use switchyard_blog_contract::{BlogEvent, CommentCreated, CommentModerated, ContractEvent};
use switchyard_bus_client::consumer::malformed;
use switchyard_bus_client::{
    EventHandler, HandleError, Handled, Service, ServiceSettings, ServiceState,
};
use switchyard_events::Envelope;
use switchyard_kit::server::Listeners;
use switchyard_kit::{ConfigError, Env, Migrations, Shutdown};
use utoipa_axum::router::OpenApiRouter;

pub use rule::Rule;

/// Moderation has no tables of its own: its database holds the messaging tables only.
pub static MIGRATIONS: Migrations = Migrations(&[]);

/// The events this service consumes, named by their types: the registry subscribes it to
/// these (and to nothing else), and its handler's `match` names every other event as ignored.
pub const CONSUMES: &[&str] = &[CommentCreated::NAME];

#[derive(Debug, Clone)]
pub struct Settings {
    pub service: ServiceSettings,
    pub rule: Rule,
}

impl Settings {
    /// `service` and the blocked words (`BLOCKED_WORDS`, default `orange`).
    pub fn from_env(env: &Env, service: ServiceSettings) -> Result<Self, ConfigError> {
        Ok(Settings {
            service,
            rule: Rule::new(env.list_or("BLOCKED_WORDS", &["orange"])),
        })
    }
}

/// Runs the service on `listeners` until `shutdown`.
pub async fn launch(
    settings: Settings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let service = Service::start(settings.service, &MIGRATIONS, &shutdown).await?;
    let handler = Arc::new(Moderator {
        state: service.state(),
        rule: settings.rule,
    });
    service
        .run(OpenApiRouter::new(), Some(handler), listeners)
        .await
}

struct Moderator {
    state: ServiceState,
    rule: Rule,
}

impl EventHandler for Moderator {
    fn handle(&self, event: Envelope) -> BoxFuture<'_, Result<Handled, HandleError>> {
        Box::pin(async move {
            let Some(parsed) = BlogEvent::from_envelope(&event).map_err(malformed)? else {
                return Ok(Handled::Ignored);
            };
            // Every event of the contract is named: a new one must be decided about here.
            let comment = match parsed {
                BlogEvent::CommentCreated(comment) => comment,
                BlogEvent::PostCreated(_)
                | BlogEvent::CommentModerated(_)
                | BlogEvent::CommentUpdated(_) => return Ok(Handled::Ignored),
            };
            let Some(mut tx) = self.state.outbox.begin_once(&event.id).await? else {
                return Ok(Handled::Duplicate);
            };
            let verdict = BlogEvent::from(CommentModerated {
                status: self.rule.judge(&comment.content),
                id: comment.id,
                post_id: comment.post_id,
                content: comment.content,
            })
            .into_envelope(event.correlation_id.clone());
            tx.publish(&verdict).await?;
            tx.commit().await?;
            Ok(Handled::Applied)
        })
    }
}

/// The service as the binary runs it (`serve`, `migrate`, `up`), registered in the registry.
pub static ENTRY: switchyard_bus_client::ServiceEntry = switchyard_bus_client::ServiceEntry {
    name: "moderation",
    migrations: &[&switchyard_bus_client::outbox::MESSAGING, &MIGRATIONS],
    run: |start| start.run(launch),
};

impl switchyard_bus_client::StartSettings for Settings {
    fn from_start(start: &switchyard_bus_client::Start) -> Result<Self, ConfigError> {
        Settings::from_env(&start.env, start.service_settings()?)
    }
}
