//! How often each event was deferred, counted across every replica of a consumer.
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

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;

/// How long the bucket keeps a count: longer than any deferral limit in use.
const KEEP: Duration = Duration::from_secs(3600);
/// Tries of a conflicting increment before giving up on the shared count.
const TRIES: usize = 5;

/// The bucket's name for `stream`.
pub(crate) fn bucket_name(stream: &str) -> String {
    format!("{stream}_DEFERRALS")
}

/// The deferral counts of one consumer (one replica's view, and the shared one).
pub(crate) struct Deferrals {
    consumer: String,
    local: Mutex<HashMap<u64, i64>>,
}

impl Deferrals {
    pub(crate) fn new(consumer: &str) -> Self {
        Deferrals {
            consumer: consumer.to_string(),
            local: Mutex::new(HashMap::new()),
        }
    }

    fn local(&self) -> MutexGuard<'_, HashMap<u64, i64>> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn key(&self, seq: u64) -> String {
        format!("{}.{seq}", self.consumer)
    }

    /// This replica's count for `seq`.
    pub(crate) fn here(&self, seq: u64) -> i64 {
        self.local().get(&seq).copied().unwrap_or(0)
    }

    /// The count for `seq` across replicas: the shared count, or this replica's if the
    /// bucket cannot be read (never less than this replica's).
    pub(crate) async fn everywhere(&self, store: Option<&kv::Store>, seq: u64) -> i64 {
        let here = self.here(seq);
        let Some(store) = store else {
            return here;
        };
        match store.get(self.key(seq)).await {
            Ok(Some(value)) => parse(&value).max(here),
            Ok(None) => here,
            Err(e) => {
                tracing::debug!(consumer = %self.consumer, seq, error = %e, "deferral count unavailable");
                here
            }
        }
    }

    /// Counts one more deferral of `seq`, here and in the bucket.
    pub(crate) async fn add(&self, store: Option<&kv::Store>, seq: u64) {
        *self.local().entry(seq).or_insert(0) += 1;
        let Some(store) = store else {
            return;
        };
        let key = self.key(seq);
        for _ in 0..TRIES {
            let written = match store.entry(key.clone()).await {
                Ok(Some(entry)) => {
                    let count = if entry.operation == kv::Operation::Put {
                        parse(&entry.value)
                    } else {
                        0
                    };
                    store
                        .update(&key, count_bytes(count + 1), entry.revision)
                        .await
                        .is_ok()
                }
                Ok(None) => store.create(&key, count_bytes(1)).await.is_ok(),
                Err(_) => false,
            };
            if written {
                return;
            }
        }
        tracing::debug!(consumer = %self.consumer, seq, "could not add to the shared deferral count");
    }

    /// Forgets `seq` (acknowledged or set aside), here and in the bucket.
    pub(crate) async fn forget(&self, store: Option<&kv::Store>, seq: u64) {
        self.local().remove(&seq);
        if let Some(store) = store {
            let _ = store.delete(self.key(seq)).await;
        }
    }
}

fn parse(value: &Bytes) -> i64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn count_bytes(count: i64) -> Bytes {
    Bytes::from(count.to_string())
}

/// Opens (or creates) the bucket of `stream`. Its stream is created here, with the
/// key-value conventions (`KV_<bucket>`, subjects `$KV.<bucket>.>`, one value per key),
/// because the client's own bucket creation first asks for the account's limits in a form
/// NATS 2.9 does not answer.
pub(crate) async fn open(js: &jetstream::Context, stream: &str) -> anyhow::Result<kv::Store> {
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
        assert_eq!(parse(&count_bytes(41)), 41);
        assert_eq!(parse(&Bytes::from_static(b"not a number")), 0);
        assert_eq!(bucket_name("BLOG"), "BLOG_DEFERRALS");
    }

    #[test]
    fn here_counts_this_replica() {
        let d = Deferrals::new("orders-service");
        assert_eq!(d.here(7), 0);
        *d.local().entry(7).or_insert(0) += 2;
        assert_eq!(d.here(7), 2);
        assert_eq!(d.key(7), "orders-service.7");
    }
}
