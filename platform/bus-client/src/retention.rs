//! Retention: what a service keeps only for a while.
//!
//! Every service remembers the events it processed (`processed_events`, its inbox) so
//! that a redelivery changes nothing; a service may keep other records of finished work
//! (tombstones of cancelled orders, fired timers). None of them is needed after the bus
//! itself has forgotten the event: so each is deleted [`RETENTION_DAYS`](Retention) after
//! it was written, in small batches, every [`PRUNE_EVERY`]. The default (30 days) is
//! longer than any bus keeps an event in this project's settings (ticketing's stream and
//! log: 7 days), so no event the bus can still deliver finds its record gone. A dead
//! letter replayed after that long is applied as new; the handlers that could mind check
//! their own state as well.

use std::time::Duration;

use switchyard_kit::clock::unix_millis;
use switchyard_kit::{ConfigError, Db, Env, Shutdown};

/// How often the records past their retention are deleted.
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Rows deleted per statement (a statement holds the writer briefly).
const BATCH: i64 = 1000;

/// How long records of finished work are kept (`RETENTION_DAYS`, default 30).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Duration);

impl Default for Retention {
    fn default() -> Self {
        Retention(Duration::from_secs(30 * 24 * 3600))
    }
}

impl Retention {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let days: u64 = env.parse_or("RETENTION_DAYS", 30)?;
        if days == 0 || days > 3650 {
            return Err(ConfigError::Malformed {
                name: "RETENTION_DAYS".to_string(),
                value: days.to_string(),
                reason: "must be from 1 to 3650".to_string(),
            });
        }
        Ok(Retention(Duration::from_secs(days * 24 * 3600)))
    }
}

/// A table whose rows are deleted once older than the retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiring {
    pub table: &'static str,
    /// Its key (rows are deleted by key, in batches).
    pub key: &'static str,
    /// When the row was written: milliseconds since the Unix epoch.
    pub written_at: &'static str,
    /// Which rows may go at all (`""`: every row), e.g. `fired = 1`.
    pub only_if: &'static str,
}

/// The inbox: every service that consumes has it.
pub const INBOX: Expiring = Expiring {
    table: "processed_events",
    key: "event_id",
    written_at: "processed_at",
    only_if: "",
};

/// Deletes the rows of `tables` older than `retention`, now and every [`PRUNE_EVERY`].
pub fn spawn(db: Db, tables: Vec<Expiring>, retention: Retention, shutdown: &Shutdown) {
    let stop = shutdown.background_token();
    shutdown.spawn("retention", async move {
        loop {
            for table in &tables {
                match prune(&db, table, retention.0).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(table = table.table, deleted = n, "records past their retention deleted"),
                    Err(e) => tracing::debug!(table = table.table, error = %e, "pruning failed; trying again later"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(PRUNE_EVERY) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
}

/// Deletes `table`'s rows older than `age`, in batches; returns how many.
pub async fn prune(db: &Db, table: &Expiring, age: Duration) -> Result<u64, sqlx::Error> {
    let cutoff = unix_millis() - i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    let extra = if table.only_if.is_empty() {
        String::new()
    } else {
        format!(" AND {}", table.only_if)
    };
    let sql = format!(
        "DELETE FROM {t} WHERE {k} IN (SELECT {k} FROM {t} WHERE {w} < $1{extra} LIMIT $2)",
        t = table.table,
        k = table.key,
        w = table.written_at,
    );
    let mut total = 0;
    loop {
        let n = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(cutoff)
            .bind(BATCH)
            .execute(db.pool())
            .await?
            .rows_affected();
        total += n;
        if n < u64::try_from(BATCH).unwrap_or(0) {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_rows_past_the_retention_go() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = Db::connect(&format!("sqlite://{}/r.db", dir.path().display())).await?;
        db.migrate("test", &[&crate::outbox::MESSAGING]).await?;
        let day = 24 * 3600 * 1000;
        let now = unix_millis();
        for (i, at) in [now - 40 * day, now - 31 * day, now - 29 * day, now]
            .iter()
            .enumerate()
        {
            sqlx::query("INSERT INTO processed_events (event_id, processed_at) VALUES ($1, $2)")
                .bind(format!("e{i}"))
                .bind(*at)
                .execute(db.pool())
                .await?;
        }
        let deleted = prune(&db, &INBOX, Retention::default().0).await?;
        assert_eq!(deleted, 2);
        let left: Vec<String> =
            sqlx::query_scalar("SELECT event_id FROM processed_events ORDER BY event_id")
                .fetch_all(db.pool())
                .await?;
        assert_eq!(left, ["e2", "e3"]);
        Ok(())
    }

    #[test]
    fn the_retention_is_read_and_bounded() {
        let days = |v: &str| Retention::from_env(&Env::from_pairs([("RETENTION_DAYS", v)]));
        assert_eq!(
            days("7").expect("7"),
            Retention(Duration::from_secs(7 * 24 * 3600))
        );
        for bad in ["0", "4000", "x"] {
            assert!(days(bad).is_err(), "{bad}");
        }
    }
}
