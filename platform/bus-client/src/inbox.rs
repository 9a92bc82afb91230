//! The inbox: idempotent consumption.
//!
//! [`begin_once`] opens a transaction whose first statement records the event id; if the id
//! was already recorded the event was processed before and `None` is returned. The caller
//! applies the effect in the same transaction and commits, so effect and record land
//! together or not at all. Writing first also takes SQLite's write lock up front, so the
//! transaction never has to upgrade from a read snapshot.

use sqlx::{Any, Transaction};
use switchyard_kit::Db;
use switchyard_kit::clock::unix_millis;

/// Starts the transaction for `event_id`, or `None` if it was already processed.
pub async fn begin_once(
    db: &Db,
    event_id: &str,
) -> Result<Option<Transaction<'static, Any>>, sqlx::Error> {
    let mut tx = db.pool().begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO processed_events (event_id, processed_at) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event_id)
    .bind(unix_millis())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        tx.rollback().await?;
        return Ok(None);
    }
    Ok(Some(tx))
}
