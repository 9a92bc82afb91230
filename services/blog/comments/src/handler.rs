//! Consuming `CommentModerated`.

use futures_util::future::BoxFuture;
use sqlx::Row;
use switchyard_blog_contract::{BlogEvent, CommentModerated, CommentUpdated, ContractEvent};
use switchyard_bus_client::consumer::malformed;
use switchyard_bus_client::{EventHandler, HandleError, Handled, ServiceState};
use switchyard_events::Envelope;

/// The events this service consumes, named by their types: the registry subscribes it to
/// these (and to nothing else), and its handler's `match` names every other event as ignored.
pub const CONSUMES: &[&str] = &[CommentModerated::NAME];

pub(crate) struct Moderations(pub ServiceState);

impl EventHandler for Moderations {
    fn handle(&self, event: Envelope) -> BoxFuture<'_, Result<Handled, HandleError>> {
        Box::pin(async move {
            let Some(parsed) = BlogEvent::from_envelope(&event).map_err(malformed)? else {
                return Ok(Handled::Ignored);
            };
            // Every event of the contract is named: a new one must be decided about here.
            let CommentModerated {
                id,
                post_id,
                status,
                ..
            } = match parsed {
                BlogEvent::CommentModerated(verdict) => verdict,
                BlogEvent::PostCreated(_)
                | BlogEvent::CommentCreated(_)
                | BlogEvent::CommentUpdated(_) => return Ok(Handled::Ignored),
            };
            let state = &self.0;
            let Some(mut tx) = state.outbox.begin_once(&event.id).await? else {
                return Ok(Handled::Duplicate);
            };
            let row = sqlx::query(
                "UPDATE comments SET status = $1 WHERE id = $2 AND post_id = $3 RETURNING content",
            )
            .bind(status.as_str())
            .bind(&id)
            .bind(&post_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                tracing::warn!(comment_id = %id, %post_id, "moderation of an unknown comment ignored");
                tx.commit().await?;
                return Ok(Handled::Ignored);
            };
            // The stored content is authoritative, whatever the moderation event carried.
            let content: String = row.try_get("content")?;
            let updated = BlogEvent::from(CommentUpdated {
                id,
                status,
                post_id,
                content,
            })
            .into_envelope(event.correlation_id.clone());
            tx.publish(&updated).await?;
            tx.commit().await?;
            Ok(Handled::Applied)
        })
    }
}
