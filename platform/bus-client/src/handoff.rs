//! Committed outbox rows handed to the relay in memory, so that it publishes them without
//! reading them back (SQLite).
//!
//! On SQLite one connection writes, so outbox rows commit in `seq` order, and
//! `AUTOINCREMENT` never hands a `seq` out twice. A [`crate::Change`] that commits hands its
//! rows over here; the relay takes them and publishes them at once, which saves the
//! read-back (a reader connection, a `SELECT` and the wake-ups around them) on every hop.
//!
//! The table stays the truth; this is only a shortcut to it:
//! * a change hands over after its commit has returned, so two changes can hand over in the
//!   other order than they committed. The relay therefore only takes rows that continue,
//!   without a gap, the last `seq` it settled (published and deleted). A gap means a
//!   committed row it has not been handed yet (or never will be: a commit that reported an
//!   error may still have happened), and the relay reads the table instead;
//! * until the relay has settled one row it knows no `seq` to continue from, so after a
//!   start its first round reads the table (rows left by an earlier run are there too);
//! * a wake-up from outside a change ([`crate::Outbox::wake`]), the relay's safety poll, a
//!   failed publish and a full handoff all send the relay to the table.
//!
//! PostgreSQL does not use it: several replicas write one outbox and `seq` order is not
//! commit order there, so its relay reads the table under its advisory lock.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

/// Rows kept at most; beyond this the relay is behind, and reading the table is cheaper
/// than holding more in memory.
const CAPACITY: usize = 4096;

/// One committed outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    pub seq: i64,
    pub event_id: String,
    pub event_type: String,
    pub body: Bytes,
}

/// What the relay should publish next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Take {
    /// These rows, in `seq` order, continuing the last settled one.
    Rows(Vec<Pending>),
    /// Read the table: there may be committed rows this handoff does not hold.
    ReadTable,
    /// Nothing is waiting.
    Nothing,
}

#[derive(Default)]
pub(crate) struct Handoff {
    inner: Mutex<Inner>,
}

struct Inner {
    /// The last `seq` the relay settled, once it has settled one.
    settled: Option<i64>,
    ready: BTreeMap<i64, Pending>,
    read_table: bool,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            settled: None,
            ready: BTreeMap::new(),
            read_table: true,
        }
    }
}

impl Handoff {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands over the rows of a change that has committed.
    pub fn hand_over(&self, rows: Vec<Pending>) {
        let mut inner = self.lock();
        for row in rows {
            if inner.settled.is_some_and(|s| row.seq <= s) {
                continue;
            }
            if inner.ready.len() >= CAPACITY {
                inner.read_table = true;
                continue;
            }
            inner.ready.insert(row.seq, row);
        }
    }

    /// Sends the relay's next round to the table.
    pub fn read_table_next(&self) {
        self.lock().read_table = true;
    }

    /// Up to `max` rows that continue the last settled one, or where to look instead. When
    /// it answers [`Take::ReadTable`] the request is consumed: the caller reads the table
    /// now, and anything committed after that read sends it back there again.
    pub fn take(&self, max: usize) -> Take {
        let mut inner = self.lock();
        let Some(settled) = inner.settled else {
            inner.read_table = false;
            return Take::ReadTable;
        };
        if inner.read_table {
            inner.read_table = false;
            return Take::ReadTable;
        }
        let mut rows = Vec::new();
        let mut next = settled + 1;
        while rows.len() < max {
            match inner.ready.first_entry() {
                Some(entry) if *entry.key() == next => {
                    rows.push(entry.remove());
                    next += 1;
                }
                _ => break,
            }
        }
        if !rows.is_empty() {
            Take::Rows(rows)
        } else if inner.ready.is_empty() {
            Take::Nothing
        } else {
            Take::ReadTable
        }
    }

    /// Records that every row up to `seq` has been published and deleted: rows handed over
    /// at or below it are dropped, and the next rows to take continue from it.
    pub fn settled(&self, seq: i64) {
        let mut inner = self.lock();
        let settled = inner.settled.map_or(seq, |s| s.max(seq));
        inner.settled = Some(settled);
        let kept = inner.ready.split_off(&(settled + 1));
        inner.ready = kept;
    }

    /// Rows handed over and not yet taken.
    pub fn waiting(&self) -> usize {
        self.lock().ready.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64) -> Pending {
        Pending {
            seq,
            event_id: format!("e{seq}"),
            event_type: "T".to_string(),
            body: Bytes::from_static(b"{}"),
        }
    }

    fn seqs(take: Take) -> Vec<i64> {
        match take {
            Take::Rows(rows) => rows.iter().map(|r| r.seq).collect(),
            other => panic!("expected rows, got {other:?}"),
        }
    }

    #[test]
    fn the_first_round_reads_the_table_then_rows_continue_the_settled_seq() {
        let h = Handoff::default();
        h.hand_over(vec![row(1)]);
        // Nothing settled yet: rows from an earlier run may be in the table.
        assert_eq!(h.take(10), Take::ReadTable);
        // The table round published row 1.
        h.settled(1);
        assert_eq!(h.waiting(), 0, "row 1 is dropped once settled");
        h.hand_over(vec![row(2), row(3)]);
        assert_eq!(seqs(h.take(10)), [2, 3]);
        h.settled(3);
        assert_eq!(h.take(10), Take::Nothing);
    }

    #[test]
    fn a_gap_sends_the_relay_to_the_table_and_a_late_handoff_is_dropped() {
        let h = Handoff::default();
        assert_eq!(h.take(10), Take::ReadTable);
        h.settled(4);
        // Row 6's change handed over before row 5's (which committed first).
        h.hand_over(vec![row(6)]);
        assert_eq!(h.take(10), Take::ReadTable);
        // The table held 5 and 6; both were published.
        h.settled(6);
        h.hand_over(vec![row(5)]);
        assert_eq!(
            h.waiting(),
            0,
            "a row at or below the settled seq is not kept"
        );
        assert_eq!(h.take(10), Take::Nothing);
    }

    #[test]
    fn rows_are_taken_in_order_up_to_the_limit() {
        let h = Handoff::default();
        assert_eq!(h.take(10), Take::ReadTable);
        h.settled(0);
        h.hand_over(vec![row(3), row(1)]);
        h.hand_over(vec![row(2)]);
        assert_eq!(seqs(h.take(2)), [1, 2]);
        // Taken but not yet settled rows are the relay's; the rest wait.
        h.settled(2);
        assert_eq!(seqs(h.take(2)), [3]);
    }

    #[test]
    fn a_wake_up_from_outside_a_change_and_a_full_handoff_read_the_table() {
        let h = Handoff::default();
        assert_eq!(h.take(10), Take::ReadTable);
        h.settled(0);
        h.hand_over(vec![row(1)]);
        h.read_table_next();
        assert_eq!(h.take(10), Take::ReadTable);
        // The request is consumed by that round.
        assert_eq!(seqs(h.take(10)), [1]);
        h.settled(1);
        h.hand_over((2..2 + CAPACITY as i64 + 5).map(row).collect());
        assert_eq!(h.waiting(), CAPACITY);
        assert_eq!(
            h.take(10),
            Take::ReadTable,
            "rows beyond the capacity are only in the table"
        );
    }
}
