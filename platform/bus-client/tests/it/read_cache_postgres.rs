//! The read cache on PostgreSQL, where replicas of a service share one database: a
//! replica's own write is in its very next read, another replica's commit within
//! milliseconds (its notice), and while the replica cannot hear notices nothing is served
//! from the cache.
//!
//! Needs PostgreSQL (`SWITCHYARD_TEST_POSTGRES_URL`, default postgres://postgres@127.0.0.1:5432):
//! skipped with a message without it, a failure under `CI=true`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::Row;
use switchyard_bus_client::outbox::MESSAGING;
use switchyard_bus_client::read_cache::MAX_AGE;
use switchyard_bus_client::{Outbox, ReadCache};
use switchyard_kit::db::Migration;
use switchyard_kit::{ApiError, Db, Migrations, Shutdown};
use switchyard_testkit::postgres::database_or_skip;

/// One replica: its database pool, its outbox, its cache of `SELECT COUNT(*) FROM items`
/// and how many times that was read from the database.
struct Replica {
    db: Db,
    outbox: Outbox,
    cache: ReadCache<()>,
    reads: AtomicUsize,
}

impl Replica {
    async fn start(url: &str, shutdown: &Shutdown) -> Replica {
        let db = Db::connect(url).await.expect("connect");
        db.migrate("items", &[&MESSAGING, &ITEMS])
            .await
            .expect("migrate");
        Replica {
            outbox: Outbox::new(db.clone()),
            cache: ReadCache::for_database(&db, &["items"], shutdown)
                .await
                .expect("cache"),
            db,
            reads: AtomicUsize::new(0),
        }
    }

    /// The answer, and whether the database was read for it.
    async fn count(&self) -> (i64, bool) {
        self.try_count().await.expect("answer")
    }

    /// [`Replica::count`], or `None` if the database could not be read.
    async fn try_count(&self) -> Option<(i64, bool)> {
        let before = self.reads.load(Ordering::SeqCst);
        let body = self
            .cache
            .answer(&self.outbox, (), async {
                self.reads.fetch_add(1, Ordering::SeqCst);
                let n: i64 = sqlx::query("SELECT COUNT(*) FROM items")
                    .fetch_one(self.db.reader())
                    .await
                    .map_err(ApiError::internal)?
                    .try_get(0)
                    .map_err(ApiError::internal)?;
                Ok::<_, ApiError>(n)
            })
            .await
            .ok()?;
        let n = serde_json::from_slice(&body).expect("a number");
        Some((n, self.reads.load(Ordering::SeqCst) > before))
    }

    /// Adds an item as a change of this replica.
    async fn add(&self) {
        let mut change = self.outbox.begin().await.expect("begin");
        sqlx::query("INSERT INTO items (n) VALUES (1)")
            .execute(&mut *change)
            .await
            .expect("insert");
        change.commit().await.expect("commit");
    }

    /// Waits until a second answer in a row comes from the cache (it listens).
    async fn wait_serving(&self) -> i64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (n, _) = self.count().await;
            let (m, read) = self.count().await;
            if !read {
                assert_eq!(n, m);
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "the cache never served an answer"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

static ITEMS: Migrations = Migrations(&[
    Migration::both(
        2,
        "items",
        "CREATE TABLE items (n INTEGER NOT NULL); CREATE TABLE unheard (n INTEGER NOT NULL)",
    ),
    Migration::postgres_only(
        3,
        "items notify their changes",
        switchyard_bus_client::change_notices!("items"),
    ),
]);

/// A cache whose reads depend on a table that does not notify its changes would serve
/// other replicas' changes late: it refuses to start, naming the table.
#[tokio::test]
async fn a_cache_over_a_table_that_does_not_notify_its_changes_is_refused() {
    let Some(database) = database_or_skip("read_cache_unheard").await else {
        return;
    };
    let shutdown = Shutdown::new();
    let db = Db::connect(&database.url).await.expect("connect");
    db.migrate("items", &[&MESSAGING, &ITEMS])
        .await
        .expect("migrate");
    let refused = ReadCache::<()>::for_database(&db, &["items", "unheard"], &shutdown)
        .await
        .err()
        .expect("refused");
    assert!(refused.to_string().contains("\"unheard\""), "{refused}");
    assert!(!refused.to_string().contains("\"items\""), "{refused}");
    ReadCache::<()>::for_database(&db, &["items"], &shutdown)
        .await
        .expect("items notify");
    shutdown.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_read_their_own_writes_at_once_and_each_others_within_milliseconds() {
    let Some(database) = database_or_skip("read_cache").await else {
        return;
    };
    let shutdown = Shutdown::new();
    let a = Replica::start(&database.url, &shutdown).await;
    let b = Replica::start(&database.url, &shutdown).await;
    assert_eq!(a.wait_serving().await, 0);
    assert_eq!(b.wait_serving().await, 0);
    for round in 1..=10 {
        let (writer, other) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        writer.add().await;
        let committed = Instant::now();
        // The writer's next read: its own write, with no wait at all.
        assert_eq!(writer.count().await.0, round, "the writer's own write");
        // The other's: as soon as the notice comes, well before a kept answer ages out.
        loop {
            if other.count().await.0 == round {
                break;
            }
            assert!(
                committed.elapsed() < MAX_AGE / 2,
                "round {round}: the other replica still answered the old count after {:?}",
                committed.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    // And between changes, both serve from their caches again.
    assert_eq!(a.wait_serving().await, 10);
    assert_eq!(b.wait_serving().await, 10);
    shutdown.trigger();
    shutdown.drain_background(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_hear_notices_reads_the_database_until_it_listens_again() {
    let Some(database) = database_or_skip("read_cache_cut").await else {
        return;
    };
    let shutdown = Shutdown::new();
    let a = Replica::start(&database.url, &shutdown).await;
    let b = Replica::start(&database.url, &shutdown).await;
    a.wait_serving().await;
    b.wait_serving().await;
    // Cut the listening connections and keep them from coming back (the replicas' pools
    // keep theirs), then write from the other replica: its notice reaches no one.
    let name = database.url.rsplit('/').next().expect("a database name");
    let admin = Db::connect(&switchyard_kit::db::with_database(
        &database.url,
        "postgres",
    ))
    .await
    .expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS false"
    )))
    .execute(admin.pool())
    .await
    .expect("refuse connections");
    let cut: i64 = sqlx::query(
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = $1 AND query LIKE 'LISTEN%'",
    )
    .bind(name)
    .fetch_one(admin.pool())
    .await
    .expect("terminate")
    .try_get(0)
    .expect("count");
    assert_eq!(cut, 2, "both replicas' listeners were found");
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.cache.listening() {
        assert!(
            Instant::now() < deadline,
            "the lost listener went unnoticed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    b.add().await;
    // Deaf: every answer is read afresh, so it has the write (a read may also fail: no
    // new connection is let in).
    for _ in 0..3 {
        if let Some(answer) = a.try_count().await {
            assert_eq!(answer, (1, true), "deaf, and still served from the cache");
        }
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS true"
    )))
    .execute(admin.pool())
    .await
    .expect("allow connections");
    // Listening again: served from the cache, with the write.
    assert_eq!(a.wait_serving().await, 1);
    admin.close().await;
    shutdown.trigger();
    shutdown.drain_background(Duration::from_secs(5)).await;
}
