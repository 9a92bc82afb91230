//! The body of `GET /api/tickets`, kept between changes.
//!
//! Listing reads every ticket for sale and serialises them: on SQLite that is a row at a
//! time through the driver's thread, a few hundred microseconds for a hundred tickets, and
//! the list is read far more often than it changes. So the JSON is kept, tagged with the
//! outbox's commit count ([`switchyard_bus_client::Outbox::commits`]) at the time the read
//! started, and served while the count has not moved: every change of tickets commits
//! through the outbox, so any commit since (this one or another, a ticket or not) means
//! reading again. A read that raced a commit is never kept (its tag is already old).
//!
//! Only where this process is the database's only writer: on SQLite (one process per
//! file). On PostgreSQL, replicas write the same database, so every list is read afresh.

use std::sync::{PoisonError, RwLock};

use bytes::Bytes;

/// The kept list and the commit count it was read at.
#[derive(Default)]
pub(crate) struct ListCache {
    kept: RwLock<Option<(u64, Bytes)>>,
}

impl ListCache {
    /// The kept body, if it was read at commit count `now`.
    pub(crate) fn get(&self, now: u64) -> Option<Bytes> {
        let kept = self.kept.read().unwrap_or_else(PoisonError::into_inner);
        match &*kept {
            Some((at, body)) if *at == now => Some(body.clone()),
            _ => None,
        }
    }

    /// Keeps `body`, read from a start at count `at`, if the count is still `at` (`now`).
    pub(crate) fn keep(&self, at: u64, now: u64, body: Bytes) {
        if at == now {
            *self.kept.write().unwrap_or_else(PoisonError::into_inner) = Some((at, body));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_what_was_read_until_a_commit() {
        let cache = ListCache::default();
        assert_eq!(cache.get(0), None);
        cache.keep(0, 0, Bytes::from_static(b"[]"));
        assert_eq!(cache.get(0), Some(Bytes::from_static(b"[]")));
        // A commit since: read again.
        assert_eq!(cache.get(1), None);
    }

    #[test]
    fn a_read_that_raced_a_commit_is_not_kept() {
        let cache = ListCache::default();
        cache.keep(3, 4, Bytes::from_static(b"[stale]"));
        assert_eq!(cache.get(3), None);
        assert_eq!(cache.get(4), None);
    }
}
