//! How far in the bus's log the read model has applied, saved in the background.
//!
//! The position only tells a start where to catch up from: applying an event twice changes
//! nothing (the inbox), so a saved position a little behind costs a start a few events read
//! again, never a wrong read model. Writing it in every event's transaction cost every event
//! a statement (a round trip to the database); it is kept in memory instead and saved every
//! second, at the end of a catch-up and at shutdown.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use switchyard_kit::{Db, Shutdown};

/// How often a moved position is saved.
const SAVE_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct Position {
    /// The highest `seq` applied by this process.
    applied: AtomicI64,
    /// The highest `seq` this process saved.
    saved: AtomicI64,
}

impl Position {
    /// Records that the event at `seq` has been applied (committed).
    pub fn applied(&self, seq: i64) {
        self.applied.fetch_max(seq, Ordering::AcqRel);
    }

    /// Saves the position if it moved since the last save (never backwards: another
    /// replica sharing the database may have saved a higher one).
    pub async fn save(&self, db: &Db) -> Result<(), sqlx::Error> {
        let applied = self.applied.load(Ordering::Acquire);
        if applied <= self.saved.load(Ordering::Acquire) {
            return Ok(());
        }
        sqlx::query("UPDATE bus_position SET seq = $1 WHERE id = 1 AND seq < $1")
            .bind(applied)
            .execute(db.pool())
            .await?;
        self.saved.fetch_max(applied, Ordering::AcqRel);
        Ok(())
    }

    /// Saves the position every second until shutdown, and once more then.
    pub fn spawn_saver(self: std::sync::Arc<Self>, db: Db, shutdown: &Shutdown) {
        let stop = shutdown.background_token();
        shutdown.spawn("position-saver", async move {
            loop {
                let stopping = tokio::select! {
                    _ = tokio::time::sleep(SAVE_EVERY) => false,
                    _ = stop.cancelled() => true,
                };
                if let Err(e) = self.save(&db).await {
                    tracing::warn!(error = %e, "could not save the position in the bus's log");
                }
                if stopping {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;

    async fn saved(db: &Db) -> anyhow::Result<i64> {
        Ok(sqlx::query("SELECT seq FROM bus_position WHERE id = 1")
            .fetch_one(db.pool())
            .await?
            .try_get(0)?)
    }

    #[tokio::test]
    async fn the_highest_applied_seq_is_saved_and_never_moves_back() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::connect(&format!("sqlite://{}/q.db", dir.path().display())).await?;
        sqlx::query("CREATE TABLE bus_position (id INTEGER PRIMARY KEY, seq BIGINT NOT NULL)")
            .execute(db.pool())
            .await?;
        sqlx::query("INSERT INTO bus_position (id, seq) VALUES (1, 0)")
            .execute(db.pool())
            .await?;
        let position = Position::default();
        position.save(&db).await?;
        assert_eq!(saved(&db).await?, 0, "nothing applied, nothing saved");
        // Applied out of order: the highest counts.
        position.applied(7);
        position.applied(5);
        position.save(&db).await?;
        assert_eq!(saved(&db).await?, 7);
        // Another replica saved further on: this one does not move it back.
        sqlx::query("UPDATE bus_position SET seq = 20 WHERE id = 1")
            .execute(db.pool())
            .await?;
        position.applied(9);
        position.save(&db).await?;
        assert_eq!(saved(&db).await?, 20);
        Ok(())
    }
}
