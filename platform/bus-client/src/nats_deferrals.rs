//! How often, and since when, each event was deferred, across every replica of a consumer.
//!
//! JetStream's delivery count includes deferrals ("not yet": a versioned update whose
//! predecessor has not been applied), which are not failures. A replica that counted only
//! its own deferrals would take another replica's for failures and set an event aside
//! early: with two replicas taking turns, an event deferred for half a minute would look
//! like twenty failed deliveries. So each deferral is also added to a count in a JetStream
//! key-value bucket of the stream (`<stream>_DEFERRALS`, key `<consumer>.<seq>`), which
//! every replica reads when its own view says the limit is reached. The bucket keeps a
//! count an hour; the replica that acknowledges or sets aside an event it deferred itself
//! deletes its count (a count only other replicas made ages out). If the bucket cannot be
//! reached, the replica's own count is used.
//!
//! The count also keeps when the event was first deferred (wall-clock milliseconds), so
//! the deferral limit runs from then, on whichever replica: not from when the event was
//! stored, which after a consumer's downtime would set aside every event of its backlog
//! that had to wait for another at all.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use switchyard_kit::clock::unix_millis;

/// How long the bucket keeps a count: longer than any deferral limit in use.
const KEEP: Duration = Duration::from_secs(3600);
/// Tries of a conflicting increment before giving up on the shared count.
const TRIES: usize = 5;

/// The bucket's name for `stream`.
pub(crate) fn bucket_name(stream: &str) -> String {
    format!("{stream}_DEFERRALS")
}

/// The deferrals of one event: how many, and the first one's wall-clock milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Count {
    count: i64,
    since_ms: i64,
}

/// The deferral counts of one consumer (one replica's view, and the shared one).
pub(crate) struct Deferrals {
    consumer: String,
    local: Mutex<HashMap<u64, Count>>,
}

impl Deferrals {
    pub(crate) fn new(consumer: &str) -> Self {
        Deferrals {
            consumer: consumer.to_string(),
            local: Mutex::new(HashMap::new()),
        }
    }

    fn local(&self) -> MutexGuard<'_, HashMap<u64, Count>> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn key(&self, seq: u64) -> String {
        format!("{}.{seq}", self.consumer)
    }

    /// This replica's count for `seq`.
    pub(crate) fn here(&self, seq: u64) -> i64 {
        self.local().get(&seq).map_or(0, |c| c.count)
    }

    /// The count for `seq` across replicas: the shared count, or this replica's if the
    /// bucket cannot be read (never less than this replica's).
    pub(crate) async fn everywhere(&self, store: Option<&kv::Store>, seq: u64) -> i64 {
        let here = self.here(seq);
        let Some(store) = store else {
            return here;
        };
        match store.get(self.key(seq)).await {
            Ok(Some(value)) => parse(&value, 0).count.max(here),
            Ok(None) => here,
            Err(e) => {
                tracing::debug!(consumer = %self.consumer, seq, error = %e, "deferral count unavailable");
                here
            }
        }
    }

    /// Counts one more deferral of `seq`, here and in the bucket; returns when `seq` was
    /// first deferred (wall-clock milliseconds): the earliest this replica or the bucket
    /// knows of, this deferral's time if it is the first.
    pub(crate) async fn add(&self, store: Option<&kv::Store>, seq: u64) -> i64 {
        let now = unix_millis();
        let here = {
            let mut local = self.local();
            let c = local.entry(seq).or_insert(Count {
                count: 0,
                since_ms: now,
            });
            c.count += 1;
            c.since_ms
        };
        let Some(store) = store else {
            return here;
        };
        let key = self.key(seq);
        for _ in 0..TRIES {
            let (written, since) = match store.entry(key.clone()).await {
                Ok(Some(entry)) => {
                    let before = if entry.operation == kv::Operation::Put {
                        parse(&entry.value, here)
                    } else {
                        Count {
                            count: 0,
                            since_ms: here,
                        }
                    };
                    let after = Count {
                        count: before.count + 1,
                        since_ms: before.since_ms.min(here),
                    };
                    let written = store
                        .update(&key, count_bytes(after), entry.revision)
                        .await
                        .is_ok();
                    (written, after.since_ms)
                }
                Ok(None) => {
                    let first = Count {
                        count: 1,
                        since_ms: here,
                    };
                    (store.create(&key, count_bytes(first)).await.is_ok(), here)
                }
                Err(_) => (false, here),
            };
            if written {
                return since;
            }
        }
        tracing::debug!(consumer = %self.consumer, seq, "could not add to the shared deferral count");
        here
    }

    /// Forgets `seq` (acknowledged or set aside), here and in the bucket.
    pub(crate) async fn forget(&self, store: Option<&kv::Store>, seq: u64) {
        self.local().remove(&seq);
        if let Some(store) = store {
            let _ = store.delete(self.key(seq)).await;
        }
    }
}

/// A bucket value, `<count> <since_ms>`; a value without the time (or an unreadable one)
/// takes `since_ms`.
fn parse(value: &Bytes, since_ms: i64) -> Count {
    let text = std::str::from_utf8(value).unwrap_or_default();
    let mut parts = text.split_whitespace();
    let count = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let since_ms = parts
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(since_ms);
    Count { count, since_ms }
}

fn count_bytes(c: Count) -> Bytes {
    Bytes::from(format!("{} {}", c.count, c.since_ms))
}

/// Opens (or creates) the bucket of `stream`. Its stream is created here, with the
/// key-value conventions (`KV_<bucket>`, subjects `$KV.<bucket>.>`, one value per key),
/// because the client's own bucket creation first asks for the account's limits in a form
/// NATS 2.9 does not answer.
pub(crate) async fn open(
    js: &jetstream::Context,
    stream: &str,
    replicas: usize,
) -> anyhow::Result<kv::Store> {
    let bucket = bucket_name(stream);
    js.get_or_create_stream(jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        description: Some("Switchyard: deferrals per consumer and event".to_string()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age: KEEP,
        storage: jetstream::stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("cannot create bucket {bucket}: {e}"))?;
    js.get_key_value(&bucket)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open bucket {bucket}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse_and_format() {
        let c = Count {
            count: 41,
            since_ms: 1_700_000_000_123,
        };
        assert_eq!(parse(&count_bytes(c), 5), c);
        // A count written without its time (or unreadable) takes the one given.
        assert_eq!(
            parse(&Bytes::from_static(b"3"), 7),
            Count {
                count: 3,
                since_ms: 7
            }
        );
        assert_eq!(
            parse(&Bytes::from_static(b"not a number"), 7),
            Count {
                count: 0,
                since_ms: 7
            }
        );
        assert_eq!(bucket_name("BLOG"), "BLOG_DEFERRALS");
    }

    #[tokio::test]
    async fn here_counts_this_replica_from_its_first_deferral() {
        let d = Deferrals::new("orders-service");
        assert_eq!(d.here(7), 0);
        let first = d.add(None, 7).await;
        let again = d.add(None, 7).await;
        assert_eq!(d.here(7), 2);
        assert_eq!(again, first, "the first deferral's time is kept");
        assert!(unix_millis() - first < 60_000);
        d.forget(None, 7).await;
        assert_eq!(d.here(7), 0);
        assert_eq!(d.key(7), "orders-service.7");
    }
}
