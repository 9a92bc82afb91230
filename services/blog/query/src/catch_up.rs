//! Catching up from the bus's log: at start from the stored position, and the full
//! rebuild that replays the log from the beginning.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use switchyard_bus_client::HandleError;
use switchyard_bus_client::bus::Bus;
use switchyard_kit::{Backoff, Db, Shutdown};

use crate::apply::Applier;
use crate::read_model::ReadModel;

const PAGE: u32 = 500;

/// Starts catching up in the background (the service serves meanwhile).
pub(crate) fn spawn(bus: Bus, applier: Arc<Applier>, shutdown: &Shutdown) {
    let stop = shutdown.background_token();
    shutdown.spawn("catch-up", async move {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            tokio::select! {
                result = catch_up(&bus, &applier) => match result {
                    Ok(applied) => {
                        tracing::info!(applied, "caught up with the bus");
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, retry_in = ?backoff.current(), "catch-up failed"),
                },
                _ = stop.cancelled() => return,
            }
            if !backoff.wait(&stop).await {
                return;
            }
        }
    });
}

async fn position(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT seq FROM bus_position WHERE id = 1")
        .fetch_one(db.pool())
        .await?
        .try_get(0)
}

/// Applies every event after the stored position; returns how many were read.
async fn catch_up(bus: &Bus, applier: &Applier) -> anyhow::Result<u64> {
    let mut after = position(&applier.model().db).await?;
    let mut read = 0u64;
    loop {
        let page = bus.page(after, PAGE).await?;
        let Some(last) = page.last().and_then(|e| e.seq) else {
            return Ok(read);
        };
        for event in &page {
            match applier.apply(event).await {
                Ok(_) => {}
                Err(HandleError::Malformed(e)) => {
                    tracing::warn!(event_id = %event.id, error = %e, "skipping a malformed event in the log");
                }
                Err(HandleError::Transient(e)) => return Err(e),
                Err(HandleError::NotYet(why)) => {
                    anyhow::bail!("event {} not applicable yet: {why}", event.id)
                }
            }
        }
        read += page.len() as u64;
        after = last;
        applier.position().save(&applier.model().db).await?;
    }
}

/// Rebuilds the read model from the whole log: empties it, then replays every event.
/// Run it while the query service is stopped. Returns the number of events read.
pub async fn rebuild(settings: &switchyard_bus_client::ServiceSettings) -> anyhow::Result<u64> {
    // Migrated only when MIGRATE_ON_START allows it, as at a start of the service.
    let db = Db::open(
        &settings.common,
        &[
            &switchyard_bus_client::outbox::MESSAGING,
            &crate::MIGRATIONS,
        ],
    )
    .await?;
    let mut tx = db.pool().begin().await?;
    for statement in [
        "DELETE FROM comments",
        "DELETE FROM posts",
        "DELETE FROM processed_events",
        "UPDATE bus_position SET seq = 0 WHERE id = 1",
        "UPDATE model_version SET version = version + 1 WHERE id = 1",
    ] {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    let bus = settings.bus.connect().await?;
    let applier = Applier::new(ReadModel::new(db.clone()));
    let read = catch_up(&bus, &applier).await?;
    db.close().await;
    Ok(read)
}
