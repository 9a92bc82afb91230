//! Answers kept between a service's commits.
//!
//! A read that is much more frequent than the changes it depends on (a list of tickets, a
//! user's orders) can be kept as the bytes it answered, tagged with a version of the
//! database at the time the read started, and served again while the version has not
//! moved. A read that raced a change is never kept: its tag is already old when it ends.
//!
//! The version counts two things:
//! - this process's own commits ([`crate::Outbox::commits`]), counted the moment each
//!   commit returns: a replica's next read after its own write is never served from before
//!   that write;
//! - on PostgreSQL, where other replicas of the service write the same database, their
//!   changes: a trigger on each table the kept reads depend on (created by the service's
//!   migrations, [`change_notices!`]) sends a `NOTIFY` at the end
//!   of every statement that changes it, which PostgreSQL delivers to every listening
//!   connection when (and only if) the transaction commits; each notice moves the version.
//!   While this process is not listening (before its `LISTEN` is in place, while its
//!   connection is lost) nothing is served from or kept in the cache; a reconnection moves
//!   the version, since notices sent while away are lost. A kept answer is also never served
//!   past [`MAX_AGE`], so a listening connection that stalled without failing delays
//!   another replica's change by at most that.
//!
//! On SQLite the service's process is its database's only writer (one process per file):
//! its own commits are the whole version.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sqlx::Row;
use switchyard_kit::{ApiError, Backoff, Db, Dialect, Shutdown};

use crate::Outbox;

/// Most answers kept at once; past it the cache starts over (the next reads refill it).
const MAX_ENTRIES: usize = 10_000;

/// The longest a kept answer is served: the bound on how late another replica's change can
/// be seen if this process's notices stall unnoticed (they normally arrive within
/// milliseconds of the commit).
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// The channel the change triggers notify on (a channel is scoped to its database, and each
/// service has a database of its own).
const CHANNEL: &str = "switchyard_changes";

/// The PostgreSQL statements that make each of the given tables (literals) notify its
/// changes to the read caches of every process of the service: a statement trigger on each
/// table that sends a `NOTIFY` on the cache's channel. PostgreSQL folds a transaction's
/// identical notices into one and delivers it at commit (only then), so a change costs one
/// notice however many rows it touched. For a service's migrations (PostgreSQL only: on
/// SQLite the service is its database's only writer):
///
/// ```
/// use switchyard_kit::Migration;
/// const NOTICES: Migration =
///     Migration::postgres_only(5, "change notices", switchyard_bus_client::change_notices!("tickets"));
/// assert!(NOTICES.postgres.contains("ON tickets FOR EACH STATEMENT"));
/// ```
///
/// [`ReadCache::for_database`] refuses to start if a table its reads depend on lacks it.
#[macro_export]
macro_rules! change_notices {
    ($($table:literal),+ $(,)?) => {
        concat!(
            "CREATE OR REPLACE FUNCTION switchyard_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$ ",
            "BEGIN PERFORM pg_notify('switchyard_changes', ''); RETURN NULL; END $$;\n",
            $(
                "CREATE OR REPLACE TRIGGER switchyard_notify_change ",
                "AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ", $table,
                " FOR EACH STATEMENT EXECUTE FUNCTION switchyard_notify_change();\n",
            )+
        )
    };
}

/// Kept answers by key, each with the version it was read at and when.
pub struct ReadCache<K> {
    kept: RwLock<HashMap<K, Kept>>,
    /// Other writers of the database (PostgreSQL), or `None` where there are none.
    others: Option<Arc<OtherWriters>>,
}

struct Kept {
    version: u64,
    at: Instant,
    body: Bytes,
}

impl Kept {
    /// Whether it may be served at database version `now`.
    fn fresh(&self, now: u64) -> bool {
        self.version == now && self.at.elapsed() < MAX_AGE
    }
}

/// What this process has heard of other processes' changes.
#[derive(Default)]
pub struct OtherWriters {
    /// Notices received, plus one per (re)connection of the listener.
    seen: AtomicU64,
    /// Whether the listener is in place: if not, changes could go unheard.
    listening: AtomicBool,
}

impl<K: Eq + Hash + Clone> ReadCache<K> {
    /// A cache for a process that is its database's only writer.
    fn sole_writer() -> Self {
        ReadCache {
            kept: RwLock::new(HashMap::new()),
            others: None,
        }
    }

    /// A cache whose reads depend on `tables` of `db`: on PostgreSQL, checks that each
    /// table notifies its changes ([`change_notices!`], in the service's migrations) and
    /// listens for them until `shutdown` (a task of its own, reconnecting when its
    /// connection is lost).
    pub async fn for_database(
        db: &Db,
        tables: &[&str],
        shutdown: &Shutdown,
    ) -> anyhow::Result<Self> {
        if db.dialect() == Dialect::Sqlite {
            return Ok(Self::sole_writer());
        }
        check_notices(db, tables).await?;
        let others = Arc::new(OtherWriters::default());
        let stop = shutdown.background_token();
        shutdown.spawn(
            "read-cache-listener",
            listen(db.clone(), others.clone(), stop),
        );
        Ok(ReadCache {
            kept: RwLock::new(HashMap::new()),
            others: Some(others),
        })
    }

    /// Whether it can serve answers: always for a sole writer, while its listener is in
    /// place otherwise.
    pub fn listening(&self) -> bool {
        self.others
            .as_ref()
            .is_none_or(|o| o.listening.load(Ordering::Acquire))
    }

    /// The database's version as this process knows it, or `None` while it cannot know
    /// (another writer's changes could go unheard).
    fn version(&self, outbox: &Outbox) -> Option<u64> {
        let own = outbox.commits();
        match &self.others {
            None => Some(own),
            Some(others) => {
                if !others.listening.load(Ordering::Acquire) {
                    return None;
                }
                // Both only grow, so their sum moves whenever either does.
                Some(own.wrapping_add(others.seen.load(Ordering::Acquire)))
            }
        }
    }

    /// The JSON answer for `key`: the one kept if the database has not changed since it
    /// was read, otherwise `read` afresh (and kept, if no change raced it).
    pub async fn answer<T: serde::Serialize>(
        &self,
        outbox: &Outbox,
        key: K,
        read: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<Bytes, ApiError> {
        let at = self.version(outbox);
        if let Some(at) = at
            && let Some(body) = self.get(&key, at)
        {
            return Ok(body);
        }
        let body = Bytes::from(serde_json::to_vec(&read.await?).map_err(ApiError::internal)?);
        if let Some(at) = at
            && let Some(now) = self.version(outbox)
        {
            self.keep(key, at, now, body.clone());
        }
        Ok(body)
    }

    /// The answer kept for `key`, if it was read at version `now` less than [`MAX_AGE`] ago.
    pub fn get(&self, key: &K, now: u64) -> Option<Bytes> {
        let kept = self.kept.read().unwrap_or_else(PoisonError::into_inner);
        match kept.get(key) {
            Some(k) if k.fresh(now) => Some(k.body.clone()),
            _ => None,
        }
    }

    /// Keeps `body` for `key`, read from a start at version `at`, if the version is still
    /// `at` (`now`).
    pub fn keep(&self, key: K, at: u64, now: u64, body: Bytes) {
        if at != now {
            return;
        }
        let mut kept = self.kept.write().unwrap_or_else(PoisonError::into_inner);
        if kept.len() >= MAX_ENTRIES {
            kept.retain(|_, k| k.fresh(now));
            if kept.len() >= MAX_ENTRIES {
                kept.clear();
            }
        }
        kept.insert(
            key,
            Kept {
                version: at,
                at: Instant::now(),
                body,
            },
        );
    }
}

/// Checks that each of `tables` has the change trigger of [`change_notices!`] (a service's
/// migrations create it): a table without it would change unheard, and other replicas'
/// changes would show only after [`MAX_AGE`].
async fn check_notices(db: &Db, tables: &[&str]) -> anyhow::Result<()> {
    let rows = sqlx::query(
        "SELECT c.relname::text FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
         WHERE t.tgname = 'switchyard_notify_change' AND c.relnamespace = current_schema()::regnamespace",
    )
    .fetch_all(db.pool())
    .await?;
    let notifying = rows
        .iter()
        .map(|row| row.try_get::<String, _>(0))
        .collect::<Result<Vec<_>, _>>()?;
    let silent: Vec<&str> = tables
        .iter()
        .copied()
        .filter(|t| !notifying.iter().any(|n| n == t))
        .collect();
    anyhow::ensure!(
        silent.is_empty(),
        "the read cache depends on table(s) {silent:?}, which do not notify their changes: \
         add a migration with switchyard_bus_client::change_notices!({silent:?}) to the service"
    );
    Ok(())
}

/// Listens for other processes' changes until `stop`, counting them in `others`.
async fn listen(db: Db, others: Arc<OtherWriters>, stop: tokio_util::sync::CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let mut listener = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            connected = async {
                let mut listener = db.listener().await?;
                listener.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            } => match connected {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::warn!(error = %e, "the read cache cannot listen for other replicas' changes; reading the database every time");
                    if !backoff.wait(&stop).await {
                        return;
                    }
                    continue;
                }
            },
        };
        backoff.reset();
        // Notices sent while not listening are lost: everything kept is old now. The count
        // moves before the cache opens again, so a read begun while closed is not kept.
        others.seen.fetch_add(1, Ordering::AcqRel);
        others.listening.store(true, Ordering::Release);
        let lost = loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                notice = listener.try_recv() => match notice {
                    Ok(Some(_)) => {
                        others.seen.fetch_add(1, Ordering::AcqRel);
                    }
                    Ok(None) => break "the connection was closed".to_string(),
                    Err(e) => break e.to_string(),
                },
            }
        };
        others.listening.store(false, Ordering::Release);
        others.seen.fetch_add(1, Ordering::AcqRel);
        tracing::warn!(error = %lost, "the read cache stopped hearing other replicas' changes; reading the database until it listens again");
        if !backoff.wait(&stop).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_triggers_notify_the_channel_the_cache_listens_on() {
        let sql = change_notices!("a", "b_2");
        assert!(
            sql.contains(&format!("pg_notify('{CHANNEL}', '')")),
            "{sql}"
        );
        assert!(
            sql.contains(" ON a FOR EACH STATEMENT") && sql.contains(" ON b_2 FOR EACH STATEMENT"),
            "{sql}"
        );
    }

    #[test]
    fn serves_what_was_read_until_a_commit() {
        let cache = ReadCache::<()>::sole_writer();
        assert_eq!(cache.get(&(), 0), None);
        cache.keep((), 0, 0, Bytes::from_static(b"[]"));
        assert_eq!(cache.get(&(), 0), Some(Bytes::from_static(b"[]")));
        // A commit since: read again.
        assert_eq!(cache.get(&(), 1), None);
    }

    #[test]
    fn a_read_that_raced_a_commit_is_not_kept() {
        let cache = ReadCache::<()>::sole_writer();
        cache.keep((), 3, 4, Bytes::from_static(b"[stale]"));
        assert_eq!(cache.get(&(), 3), None);
        assert_eq!(cache.get(&(), 4), None);
    }

    #[test]
    fn keys_are_kept_apart_and_bounded() {
        let cache = ReadCache::<String>::sole_writer();
        cache.keep("a".into(), 1, 1, Bytes::from_static(b"A"));
        cache.keep("b".into(), 1, 1, Bytes::from_static(b"B"));
        assert_eq!(
            cache.get(&"a".to_string(), 1),
            Some(Bytes::from_static(b"A"))
        );
        assert_eq!(
            cache.get(&"b".to_string(), 1),
            Some(Bytes::from_static(b"B"))
        );
        for n in 0..MAX_ENTRIES + 5 {
            cache.keep(n.to_string(), 2, 2, Bytes::from_static(b"x"));
        }
        let kept = cache.kept.read().expect("lock").len();
        assert!(kept <= MAX_ENTRIES, "{kept}");
    }
}
