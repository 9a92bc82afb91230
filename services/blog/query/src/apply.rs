//! Applying events to the read model, once each, in any order.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::Row;
use switchyard_blog_contract::{
    BlogEvent, CommentCreated, CommentUpdated, ContractEvent, PostCreated,
};
use switchyard_bus_client::consumer::{Handled, malformed};
use switchyard_bus_client::inbox::begin_once;
use switchyard_bus_client::{EventHandler, HandleError};
use switchyard_events::Envelope;
use switchyard_kit::Dialect;

use crate::position::Position;
use crate::read_model::ReadModel;

/// The events this service consumes, named by their types: the registry subscribes it to
/// these (and to nothing else), and its handler's `match` names every other event as ignored.
pub const CONSUMES: &[&str] = &[
    PostCreated::NAME,
    CommentCreated::NAME,
    CommentUpdated::NAME,
];

pub(crate) struct Applier {
    model: ReadModel,
    position: Arc<Position>,
}

impl Applier {
    pub fn new(model: ReadModel) -> Self {
        Applier {
            model,
            position: Arc::default(),
        }
    }

    pub fn model(&self) -> &ReadModel {
        &self.model
    }

    /// How far in the bus's log this applier has applied.
    pub fn position(&self) -> &Arc<Position> {
        &self.position
    }

    /// Applies one event (the inbox makes a repeat a no-op).
    pub async fn apply(&self, event: &Envelope) -> Result<Handled, HandleError> {
        let db = &self.model.db;
        // Events the read model does not use change nothing, not even the stored position:
        // catching up from a slightly older position only reads them again.
        let Some(blog_event) = BlogEvent::from_envelope(event).map_err(malformed)? else {
            return Ok(Handled::Ignored);
        };
        // Every event of the contract is named: a new one must be decided about here.
        match blog_event {
            BlogEvent::PostCreated(_)
            | BlogEvent::CommentCreated(_)
            | BlogEvent::CommentUpdated(_) => {}
            BlogEvent::CommentModerated(_) => return Ok(Handled::Ignored),
        }
        let Some(mut tx) = begin_once(db, &event.id).await? else {
            return Ok(Handled::Duplicate);
        };
        let post_id = blog_event.post_id().to_string();
        match blog_event {
            BlogEvent::PostCreated(PostCreated { id, title }) => {
                sqlx::query(
                    "INSERT INTO posts (id, title, log_seq) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(title)
                .bind(event.seq)
                .execute(&mut *tx)
                .await?;
            }
            BlogEvent::CommentCreated(CommentCreated {
                id,
                post_id,
                content,
                status,
            }) => {
                // If the update overtook the creation, the update's status stands; the
                // creation only brings the comment's place in the log.
                sqlx::query(
                    "INSERT INTO comments (id, post_id, content, status, log_seq) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (id) DO UPDATE SET log_seq = excluded.log_seq",
                )
                .bind(id)
                .bind(post_id)
                .bind(content)
                .bind(status.as_str())
                .bind(event.seq)
                .execute(&mut *tx)
                .await?;
            }
            BlogEvent::CommentUpdated(CommentUpdated {
                id,
                post_id,
                content,
                status,
            }) => {
                sqlx::query(
                    "INSERT INTO comments (id, post_id, content, status) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (id) DO UPDATE SET status = excluded.status, content = excluded.content",
                )
                .bind(id)
                .bind(post_id)
                .bind(content)
                .bind(status.as_str())
                .execute(&mut *tx)
                .await?;
            }
            BlogEvent::CommentModerated(_) => {}
        }
        // Tells replicas sharing the database that their kept JSON is stale (on SQLite one
        // process owns the database and keeps its JSON up to date itself).
        let shared_version = if db.dialect() == Dialect::Postgres {
            let row = sqlx::query(
                "UPDATE model_version SET version = version + 1 WHERE id = 1 RETURNING version",
            )
            .fetch_one(&mut *tx)
            .await?;
            Some(row.try_get::<i64, _>(0)?)
        } else {
            None
        };
        tx.commit().await?;
        if let Some(seq) = event.seq {
            self.position.applied(seq);
        }
        if let Some(version) = shared_version {
            self.model.wrote_version(version);
        }
        self.model.post_changed(&post_id);
        Ok(Handled::Applied)
    }
}

impl EventHandler for Applier {
    fn handle(&self, event: Envelope) -> BoxFuture<'_, Result<Handled, HandleError>> {
        Box::pin(async move { self.apply(&event).await })
    }
}
