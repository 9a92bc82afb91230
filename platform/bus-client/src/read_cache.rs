//! Answers kept between a service's commits.
//!
//! A read that is much more frequent than the changes it depends on (a list of tickets, a
//! user's orders) can be kept as the bytes it answered, tagged with the outbox's commit
//! count ([`crate::Outbox::commits`]) at the time the read started, and served again while
//! the count has not moved: if every change goes through the outbox, any commit since
//! (whatever it changed) means reading again. A read that raced a commit is never kept:
//! its tag is already old when it ends.
//!
//! Only where the service's process is its database's only writer (SQLite: one process per
//! file). Replicas on one PostgreSQL database write it too, and this process would not see
//! their commits: there, [`ReadCache::for_database`] gives no cache and every read goes to
//! the database.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{PoisonError, RwLock};

use bytes::Bytes;
use switchyard_kit::{ApiError, Db, Dialect};

use crate::Outbox;

/// Most answers kept at once; past it the cache starts over (the next reads refill it).
const MAX_ENTRIES: usize = 10_000;

/// Kept answers by key, each with the commit count it was read at.
pub struct ReadCache<K> {
    kept: RwLock<HashMap<K, (u64, Bytes)>>,
}

impl<K: Eq + Hash + Clone> Default for ReadCache<K> {
    fn default() -> Self {
        ReadCache {
            kept: RwLock::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> ReadCache<K> {
    /// A cache for a service on `db`, or `None` where other processes write the database.
    pub fn for_database(db: &Db) -> Option<Self> {
        (db.dialect() == Dialect::Sqlite).then(Self::default)
    }

    /// The JSON answer for `key`: the one `cache` keeps if no commit of `outbox` came
    /// since it was read, otherwise `read` afresh (and kept, if no commit raced it).
    pub async fn answer<T: serde::Serialize>(
        cache: Option<&Self>,
        outbox: &Outbox,
        key: K,
        read: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<Bytes, ApiError> {
        let at = outbox.commits();
        if let Some(body) = cache.and_then(|c| c.get(&key, at)) {
            return Ok(body);
        }
        let body = Bytes::from(serde_json::to_vec(&read.await?).map_err(ApiError::internal)?);
        if let Some(cache) = cache {
            cache.keep(key, at, outbox.commits(), body.clone());
        }
        Ok(body)
    }

    /// The answer kept for `key`, if it was read at commit count `now`.
    pub fn get(&self, key: &K, now: u64) -> Option<Bytes> {
        let kept = self.kept.read().unwrap_or_else(PoisonError::into_inner);
        match kept.get(key) {
            Some((at, body)) if *at == now => Some(body.clone()),
            _ => None,
        }
    }

    /// Keeps `body` for `key`, read from a start at count `at`, if the count is still `at`
    /// (`now`).
    pub fn keep(&self, key: K, at: u64, now: u64, body: Bytes) {
        if at != now {
            return;
        }
        let mut kept = self.kept.write().unwrap_or_else(PoisonError::into_inner);
        if kept.len() >= MAX_ENTRIES {
            kept.retain(|_, (was, _)| *was == now);
            if kept.len() >= MAX_ENTRIES {
                kept.clear();
            }
        }
        kept.insert(key, (at, body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_what_was_read_until_a_commit() {
        let cache = ReadCache::<()>::default();
        assert_eq!(cache.get(&(), 0), None);
        cache.keep((), 0, 0, Bytes::from_static(b"[]"));
        assert_eq!(cache.get(&(), 0), Some(Bytes::from_static(b"[]")));
        // A commit since: read again.
        assert_eq!(cache.get(&(), 1), None);
    }

    #[test]
    fn a_read_that_raced_a_commit_is_not_kept() {
        let cache = ReadCache::<()>::default();
        cache.keep((), 3, 4, Bytes::from_static(b"[stale]"));
        assert_eq!(cache.get(&(), 3), None);
        assert_eq!(cache.get(&(), 4), None);
    }

    #[test]
    fn keys_are_kept_apart_and_bounded() {
        let cache = ReadCache::<String>::default();
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
