//! The spans received, newest kept: a bounded queue, oldest dropped first.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

/// What a span stood for (OTLP's span kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    /// From OTLP's number; an unknown one is `Unspecified`.
    pub fn from_otlp(kind: i32) -> SpanKind {
        match kind {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }
}

/// One span as received, ids in hex.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanRecord {
    pub trace_id: String,
    pub span_id: String,
    /// `None` for the first span of a trace.
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    /// Its resource's `service.name`.
    pub service: String,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// Its attributes, each a JSON string, number or boolean (bounded in count and size).
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// The status message of a failed span.
    pub error: Option<String>,
}

/// Distinct (service, span name) pairs counted; names past it are not counted.
const MAX_NAMES: usize = 10_000;
/// The bytes of text the kept spans may hold in all, whatever their count.
pub const MAX_KEPT_BYTES: usize = 256 * 1024 * 1024;

impl SpanRecord {
    /// The bytes of text it holds (what bounds the store's memory with its count).
    pub fn bytes(&self) -> usize {
        let attributes: usize = self
            .attributes
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(16, str::len))
            .sum();
        self.trace_id.len()
            + self.span_id.len()
            + self.parent_span_id.as_ref().map_or(0, String::len)
            + self.name.len()
            + self.service.len()
            + self.error.as_ref().map_or(0, String::len)
            + attributes
            + 64
    }
}

/// The latest spans, at most a fixed number, and how many of each name each service sent.
#[derive(Debug)]
pub struct SpanStore {
    capacity: usize,
    spans: Mutex<VecDeque<SpanRecord>>,
    /// The text the kept spans hold ([`SpanRecord::bytes`]).
    kept_bytes: std::sync::atomic::AtomicUsize,
    /// Spans counted by service, then by name.
    names: Mutex<HashMap<String, HashMap<String, u64>>>,
    received: AtomicU64,
    dropped: AtomicU64,
}

impl SpanStore {
    /// A store keeping the latest `capacity` spans (at least one).
    pub fn new(capacity: usize) -> SpanStore {
        let capacity = capacity.max(1);
        SpanStore {
            capacity,
            spans: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            kept_bytes: std::sync::atomic::AtomicUsize::new(0),
            names: Mutex::new(HashMap::new()),
            received: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Keeps `spans`, dropping the oldest beyond the capacity.
    pub fn add(&self, spans: Vec<SpanRecord>) {
        let n = spans.len() as u64;
        {
            let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
            // Looked up by reference: a span of a name already counted allocates nothing.
            let mut distinct: usize = names.values().map(HashMap::len).sum();
            for span in &spans {
                if let Some(count) = names
                    .get_mut(&span.service)
                    .and_then(|by_name| by_name.get_mut(&span.name))
                {
                    *count += 1;
                } else if distinct < MAX_NAMES {
                    let by_name = names.entry(span.service.clone()).or_default();
                    by_name.insert(span.name.clone(), 1);
                    distinct += 1;
                }
            }
        }
        let mut kept = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        let mut dropped = 0u64;
        let mut bytes = self.kept_bytes.load(Ordering::Relaxed);
        for span in spans {
            bytes += span.bytes();
            kept.push_back(span);
            while kept.len() > self.capacity || (bytes > MAX_KEPT_BYTES && kept.len() > 1) {
                if let Some(old) = kept.pop_front() {
                    bytes -= old.bytes();
                    dropped += 1;
                }
            }
        }
        self.kept_bytes.store(bytes, Ordering::Relaxed);
        drop(kept);
        self.received.fetch_add(n, Ordering::Relaxed);
        self.dropped.fetch_add(dropped, Ordering::Relaxed);
    }

    /// The spans of one trace that are still kept, earliest first.
    pub fn trace(&self, trace_id: &str) -> Vec<SpanRecord> {
        let kept = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        let mut spans: Vec<SpanRecord> = kept
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect();
        drop(kept);
        spans.sort_by_key(|s| (s.start_unix_nanos, s.end_unix_nanos));
        spans
    }

    /// How many spans of each name each service sent, since the start (dropped ones too).
    pub fn name_counts(&self) -> Vec<(String, String, u64)> {
        let names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        names
            .iter()
            .flat_map(|(service, by_name)| {
                by_name
                    .iter()
                    .map(|(name, n)| (service.clone(), name.clone(), *n))
            })
            .collect()
    }

    /// How many spans are kept.
    pub fn len(&self) -> usize {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Spans received since the start, and of those dropped for room.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.received.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace: &str, id: &str, start: u64) -> SpanRecord {
        SpanRecord {
            trace_id: trace.into(),
            span_id: id.into(),
            parent_span_id: None,
            name: "x".into(),
            kind: SpanKind::Internal,
            service: "s".into(),
            start_unix_nanos: start,
            end_unix_nanos: start + 1,
            attributes: BTreeMap::new(),
            error: None,
        }
    }

    #[test]
    fn the_oldest_spans_make_room_and_a_trace_reads_in_time_order() {
        let store = SpanStore::new(3);
        store.add(vec![span("a", "1", 30), span("b", "2", 10)]);
        store.add(vec![span("a", "3", 20), span("a", "4", 5)]);
        assert_eq!(store.len(), 3);
        assert_eq!(store.counts(), (4, 1));
        let ids: Vec<_> = store.trace("a").into_iter().map(|s| s.span_id).collect();
        assert_eq!(ids, ["4", "3"], "span 1 was the oldest kept and went");
        assert!(store.trace("b").len() == 1);
        let mut names = store.name_counts();
        names.sort();
        assert_eq!(names, [("s".to_string(), "x".to_string(), 4)]);
    }
}
