//! The event tap: the console reads the bus's log as it grows (the same pages a rebuild
//! reads, on either bus), keeps the latest events and hands each new one to the live
//! log's listeners.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use switchyard_bus_client::bus::Bus;
use switchyard_events::Envelope;
use switchyard_kit::Shutdown;
use switchyard_kit::clock::unix_millis;
use tokio::sync::broadcast;

/// Events read per page.
const PAGE: u32 = 500;
/// How often the tail is read when it is caught up.
const POLL: Duration = Duration::from_millis(100);
/// Listeners that fall this far behind miss events (and are told so).
const LIVE_BUFFER: usize = 1024;
/// Characters of an event's data kept for display.
const MAX_DATA_CHARS: usize = 4096;

/// One event as the console saw it on the bus.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// Its position in the bus's log.
    pub seq: i64,
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The ids its data names (`id`, and each `...Id`, one level down too).
    pub entities: Vec<String>,
    pub correlation_id: Option<String>,
    pub trace_id: Option<String>,
    pub occurred_at: Option<String>,
    /// When the console read it (wall-clock milliseconds).
    pub seen_at_ms: i64,
    /// Its data (cut to a few KiB).
    pub data: Value,
}

impl Observed {
    fn of(event: Envelope) -> Observed {
        let mut entities = Vec::new();
        collect_ids(&event.data, 0, &mut entities);
        let text = event.data.to_string();
        let data = if text.chars().count() > MAX_DATA_CHARS {
            Value::String(text.chars().take(MAX_DATA_CHARS).collect::<String>() + "…")
        } else {
            event.data.clone()
        };
        Observed {
            seq: event.seq.unwrap_or(0),
            trace_id: event.trace_context().map(|t| t.trace_id()),
            id: event.id,
            event_type: event.event_type,
            entities,
            correlation_id: event.correlation_id,
            occurred_at: event.occurred_at,
            seen_at_ms: unix_millis(),
            data,
        }
    }

    /// Whether it passes the log's filters (each one that is set must match).
    pub fn matches(&self, filter: &Filter) -> bool {
        filter
            .event_type
            .as_deref()
            .is_none_or(|t| self.event_type == t)
            && filter
                .entity
                .as_deref()
                .is_none_or(|e| self.entities.iter().any(|id| id == e))
            && filter
                .correlation
                .as_deref()
                .is_none_or(|c| self.correlation_id.as_deref() == Some(c))
    }
}

/// The ids an event's data names: `id` and each key ending in `Id`, to two levels.
fn collect_ids(value: &Value, depth: usize, out: &mut Vec<String>) {
    let Value::Object(fields) = value else { return };
    for (key, v) in fields {
        match v {
            Value::String(s) if (key == "id" || key.ends_with("Id")) && !out.contains(s) => {
                out.push(s.clone());
            }
            Value::Object(_) if depth == 0 => collect_ids(v, depth + 1, out),
            _ => {}
        }
    }
}

/// The live log's filters.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Filter {
    #[serde(rename = "type", default)]
    pub event_type: Option<String>,
    #[serde(default)]
    pub entity: Option<String>,
    #[serde(default)]
    pub correlation: Option<String>,
}

impl Filter {
    /// Empty fields are no filter.
    pub fn normalized(self) -> Filter {
        let set = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        Filter {
            event_type: set(self.event_type),
            entity: set(self.entity),
            correlation: set(self.correlation),
        }
    }
}

/// The latest events, and their listeners.
#[derive(Clone)]
pub struct Tap {
    inner: Arc<Inner>,
}

struct Inner {
    capacity: usize,
    kept: Mutex<Kept>,
    live: broadcast::Sender<Arc<Observed>>,
}

#[derive(Default)]
struct Kept {
    events: VecDeque<Arc<Observed>>,
    /// The ids of `events`.
    ids: std::collections::HashSet<String>,
    /// Events seen per type since the console started reading.
    per_type: HashMap<String, u64>,
    /// The last position read.
    after: i64,
    /// Why the last read failed, while it does.
    error: Option<String>,
}

/// What the tap knows of the bus.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TapStatus {
    pub position: i64,
    pub kept: usize,
    pub per_type: HashMap<String, u64>,
    pub error: Option<String>,
}

impl Tap {
    /// Starts reading `bus` from its first event, keeping the latest `capacity`.
    pub fn start(bus: Bus, capacity: usize, shutdown: &Shutdown) -> Tap {
        let tap = Tap::new(capacity);
        let reader = tap.clone();
        let stop = shutdown.background_token();
        shutdown.spawn("console-tap", async move {
            loop {
                let after = reader.position();
                // Read under an unsampled trace: the bus makes no span of each poll.
                let reading = switchyard_kit::trace_context::scope(
                    switchyard_events::TraceContext::unsampled(),
                    bus.page(after, PAGE),
                );
                let wait = match reading.await {
                    Ok(events) => {
                        let full = events.len() == PAGE as usize;
                        reader.take(events);
                        if full { Duration::ZERO } else { POLL }
                    }
                    Err(e) => {
                        reader.failed(e.to_string());
                        Duration::from_secs(1)
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => return,
                }
            }
        });
        tap
    }

    fn new(capacity: usize) -> Tap {
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        Tap {
            inner: Arc::new(Inner {
                capacity: capacity.max(1),
                kept: Mutex::new(Kept::default()),
                live,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.inner
            .kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn position(&self) -> i64 {
        self.lock().after
    }

    fn failed(&self, why: String) {
        let mut kept = self.lock();
        if kept.error.is_none() {
            tracing::warn!(error = %why, "the console cannot read the bus; retrying");
        }
        kept.error = Some(why);
    }

    /// Keeps a page of events read after the current position.
    fn take(&self, events: Vec<Envelope>) {
        let mut fresh = Vec::with_capacity(events.len());
        {
            let mut kept = self.lock();
            if kept.error.take().is_some() {
                tracing::info!("the console reads the bus again");
            }
            for event in events {
                kept.after = kept.after.max(event.seq.unwrap_or(0));
                // A dead letter replayed on NATS is a copy of its event in the stream: shown
                // once.
                if kept.ids.contains(&event.id) {
                    continue;
                }
                let observed = Arc::new(Observed::of(event));
                *kept
                    .per_type
                    .entry(observed.event_type.clone())
                    .or_default() += 1;
                if kept.events.len() == self.inner.capacity
                    && let Some(old) = kept.events.pop_front()
                {
                    kept.ids.remove(&old.id);
                }
                kept.ids.insert(observed.id.clone());
                kept.events.push_back(observed.clone());
                fresh.push(observed);
            }
        }
        for observed in fresh {
            // No listener is fine.
            let _ = self.inner.live.send(observed);
        }
    }

    /// New events as they are read.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Observed>> {
        self.inner.live.subscribe()
    }

    /// The latest `limit` events that pass `filter`, oldest first.
    pub fn recent(&self, filter: &Filter, limit: usize) -> Vec<Arc<Observed>> {
        let kept = self.lock();
        let mut out: Vec<Arc<Observed>> = kept
            .events
            .iter()
            .rev()
            .filter(|e| e.matches(filter))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// The kept event `id`.
    pub fn find(&self, id: &str) -> Option<Arc<Observed>> {
        self.lock()
            .events
            .iter()
            .rev()
            .find(|e| e.id == id)
            .cloned()
    }

    pub fn status(&self) -> TapStatus {
        let kept = self.lock();
        TapStatus {
            position: kept.after,
            kept: kept.events.len(),
            per_type: kept.per_type.clone(),
            error: kept.error.clone(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// `event` as the tap would keep it.
    pub fn observed(event: Envelope) -> Observed {
        Observed::of(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(seq: i64, t: &str, data: Value) -> Envelope {
        let mut e = Envelope::new(t, data);
        e.seq = Some(seq);
        e
    }

    #[test]
    fn the_latest_events_are_kept_and_filtered_by_type_entity_and_correlation() {
        let tap = Tap::new(2);
        let mut live = tap.subscribe();
        let mut third = event(
            3,
            "order:created",
            json!({"id": "o1", "ticket": {"id": "t1"}}),
        );
        third.correlation_id = Some("req-1".into());
        tap.take(vec![
            event(1, "ticket:created", json!({"id": "t1"})),
            event(2, "ticket:updated", json!({"id": "t1", "orderId": "o1"})),
            third,
        ]);
        assert_eq!(tap.position(), 3);
        assert_eq!(tap.status().kept, 2, "the oldest went");
        assert_eq!(tap.status().per_type["ticket:created"], 1);
        let all = Filter::default();
        assert_eq!(tap.recent(&all, 10).len(), 2);
        let by_entity = Filter {
            entity: Some("t1".into()),
            ..Filter::default()
        };
        let seqs: Vec<i64> = tap.recent(&by_entity, 10).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [2, 3], "t1 is the ticket of the order too");
        let by_both = Filter {
            event_type: Some("order:created".into()),
            correlation: Some("req-1".into()),
            entity: Some("o1".into()),
        };
        assert_eq!(tap.recent(&by_both, 10).len(), 1);
        let none = Filter {
            correlation: Some("other".into()),
            ..Filter::default()
        };
        assert!(tap.recent(&none, 10).is_empty());
        assert_eq!(live.try_recv().map(|e| e.seq).ok(), Some(1));
        assert!(tap.find("missing").is_none());
    }
}
