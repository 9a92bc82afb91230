//! The outbox relay on PostgreSQL with several replicas sharing one database: each row is
//! published once, in `seq` order, never by two relays at the same time.
//!
//! Needs PostgreSQL (`SWITCHYARD_TEST_POSTGRES_URL`, default postgres://postgres@127.0.0.1:5432):
//! skipped with a message without it, a failure under `CI=true`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use switchyard_bus_client::Outbox;
use switchyard_bus_client::bus::{PublishError, Publisher};
use switchyard_bus_client::outbox::MESSAGING;
use switchyard_events::Envelope;
use switchyard_kit::{Db, Metrics, Shutdown};

fn postgres_url() -> String {
    std::env::var("SWITCHYARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

async fn server_or_skip() -> Option<String> {
    if !production_selected() {
        eprintln!("skipped: the production backend is not in SWITCHYARD_TEST_BACKENDS");
        return None;
    }
    let url = postgres_url();
    let server = switchyard_kit::db::with_database(&url, "postgres");
    match tokio::time::timeout(Duration::from_secs(3), Db::connect(&server)).await {
        Ok(Ok(db)) => {
            db.close().await;
            Some(url)
        }
        _ => {
            switchyard_kit::testing::skip_or_fail(&format!("PostgreSQL not reachable at {url}"));
            None
        }
    }
}

/// Records publishes; counts two relays publishing at the same time. Its first publish
/// holds the relay's lock until the other replicas have demonstrably tried to take it
/// (their lock attempt shows in `pg_stat_activity` after this publish began), so the
/// replicas certainly overlapped in time and the lock was put to the test.
struct Recorder {
    database_url: String,
    published: Mutex<Vec<String>>,
    busy: Mutex<bool>,
    overlaps: Mutex<u32>,
    first: tokio::sync::Mutex<bool>,
    /// Other replicas seen trying the lock while the first publish held it.
    contenders: Mutex<i64>,
}

impl Recorder {
    fn new(database_url: &str) -> Self {
        Recorder {
            database_url: database_url.to_string(),
            published: Mutex::default(),
            busy: Mutex::default(),
            overlaps: Mutex::default(),
            first: tokio::sync::Mutex::new(true),
            contenders: Mutex::default(),
        }
    }

    /// Waits until `others` other connections have tried the lock since now.
    async fn wait_for_contenders(&self, others: i64) {
        use sqlx::Row;
        let observer = Db::connect(&self.database_url)
            .await
            .expect("observer connection");
        let since: String = sqlx::query("SELECT now()::text")
            .fetch_one(observer.pool())
            .await
            .expect("now")
            .get(0);
        let seen = switchyard_kit::wait::until(
            "the other relays to try the lock while it is held",
            Duration::from_secs(20),
            || async {
                // A replica that finds the lock taken runs BEGIN, the lock attempt and
                // ROLLBACK: its connection's last statement is one of those two.
                let n: i64 = sqlx::query(
                    "SELECT COUNT(DISTINCT pid) FROM pg_stat_activity WHERE datname = current_database() \
                     AND (query = 'ROLLBACK' OR query LIKE 'SELECT pg_try_advisory_xact_lock%') \
                     AND state_change > $1::timestamptz AND pid <> pg_backend_pid()",
                )
                .bind(&since)
                .fetch_one(observer.pool())
                .await
                .ok()?
                .get(0);
                (n >= others).then_some(n)
            },
        )
        .await
        .expect("the replicas contended for the relay lock");
        observer.close().await;
        *self.contenders.lock().expect("lock") = seen;
    }
}

impl Publisher for Recorder {
    fn publish<'a>(
        &'a self,
        _event_type: &'a str,
        event_id: &'a str,
        _body: Bytes,
    ) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(async move {
            {
                let mut busy = self.busy.lock().expect("lock");
                if *busy {
                    *self.overlaps.lock().expect("lock") += 1;
                }
                *busy = true;
            }
            let mut first = self.first.lock().await;
            if *first {
                *first = false;
                self.wait_for_contenders(2).await;
            }
            drop(first);
            self.published
                .lock()
                .expect("lock")
                .push(event_id.to_string());
            *self.busy.lock().expect("lock") = false;
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_an_outbox_without_double_publishing() {
    if server_or_skip().await.is_none() {
        return;
    }
    // Dropped with its connections when the test ends, passed or not.
    let Some(database) = switchyard_testkit::postgres::database_or_skip("outbox").await else {
        return;
    };
    let url = database.url.clone();
    let writer = Db::connect(&url).await.expect("connect");
    writer
        .migrate("test", &[&MESSAGING])
        .await
        .expect("migrate");
    let mut sent = Vec::new();
    for n in 0..150 {
        let event = Envelope::new("Tested", serde_json::json!({ "n": n }));
        let mut tx = writer.pool().begin().await.expect("tx");
        Outbox::enqueue(&mut tx, &event).await.expect("enqueue");
        tx.commit().await.expect("commit");
        sent.push(event.id);
    }
    // Three replicas, each with its own pool, relaying the same table.
    let recorder = Arc::new(Recorder::new(&url));
    let shutdown = Shutdown::new();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let db = Db::connect(&url).await.expect("connect");
        let outbox = Outbox::new(db.clone());
        outbox.spawn_relay(recorder.clone(), Metrics::new("test"), &shutdown);
        outbox.wake();
        replicas.push(db);
    }
    let outbox = Outbox::new(writer.clone());
    switchyard_kit::wait::until("the outbox to drain", Duration::from_secs(30), || async {
        (outbox.pending().await.ok()? == 0).then_some(())
    })
    .await
    .expect("drained");
    shutdown.drain_background(Duration::from_secs(5)).await;
    let published = recorder.published.lock().expect("lock").clone();
    let first_difference = published.iter().zip(&sent).position(|(a, b)| a != b);
    assert!(
        published.len() == sent.len() && first_difference.is_none(),
        "each row once, in order: {} published for {} rows, first difference at {first_difference:?}",
        published.len(),
        sent.len()
    );
    assert!(
        *recorder.contenders.lock().expect("lock") >= 2,
        "the other replicas tried the lock while it was held"
    );
    assert_eq!(
        *recorder.overlaps.lock().expect("lock"),
        0,
        "relays overlapped"
    );
    for db in replicas {
        db.close().await;
    }
    writer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_postgres_database_tolerates_concurrent_creation() {
    let Some(server) = server_or_skip().await else {
        return;
    };
    let name = format!("sy_{}_race", switchyard_events::ids::entity_id());
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (server, name) = (server.clone(), name.clone());
            tokio::spawn(async move {
                switchyard_kit::db::ensure_postgres_database(&server, &name).await
            })
        })
        .collect();
    let mut urls = Vec::new();
    for t in tasks {
        urls.push(t.await.expect("task").expect("ensured"));
    }
    assert!(
        urls.iter().all(|u| u.ends_with(&format!("/{name}"))),
        "{urls:?}"
    );
    let db = Db::connect(&urls[0]).await.expect("the new database opens");
    db.ping().await.expect("ping");
    db.close().await;
    // Again: it exists, nothing to do.
    switchyard_kit::db::ensure_postgres_database(&server, &name)
        .await
        .expect("idempotent");
    switchyard_kit::db::drop_postgres_database(&server, &name)
        .await
        .expect("drop");
    assert!(
        switchyard_kit::db::ensure_postgres_database(&server, "bad-name")
            .await
            .is_err()
    );
}

/// Whether `SWITCHYARD_TEST_BACKENDS` (default `embedded,production`) lists `production`.
fn production_selected() -> bool {
    std::env::var("SWITCHYARD_TEST_BACKENDS")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .is_none_or(|v| v.split(',').any(|b| b.trim() == "production"))
}
