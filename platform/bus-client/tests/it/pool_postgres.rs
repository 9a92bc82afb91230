//! The PostgreSQL pool's round trips, counted by a proxy between the pool and the server:
//! a connection used a moment ago goes to work without a check (sqlx checked it as it came
//! back), one idle for [`POSTGRES_CHECK_AFTER_IDLE`] is checked first, and a connection the
//! server killed fails once, as unavailable, then the pool carries on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use switchyard_kit::Db;
use switchyard_kit::db::{POSTGRES_CHECK_AFTER_IDLE, is_unavailable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Forwards connections to the server and counts the Sync messages clients send: one per
/// statement (Bind, Execute, Sync) and one per check (a lone Sync).
struct SyncCounter {
    syncs: Arc<AtomicUsize>,
    addr: std::net::SocketAddr,
}

impl SyncCounter {
    async fn start(server: &str) -> SyncCounter {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let syncs = Arc::new(AtomicUsize::new(0));
        let (counted, server) = (syncs.clone(), server.to_owned());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = TcpStream::connect(&server).await.expect("server");
                tokio::spawn(relay(client, upstream, counted.clone()));
            }
        });
        SyncCounter { syncs, addr }
    }

    fn count(&self) -> usize {
        self.syncs.load(Ordering::SeqCst)
    }
}

/// Copies both ways; parses the client's side into messages and counts its Syncs. The
/// first messages (SSLRequest, StartupMessage) have no type byte; after the startup, each
/// is a type byte and a length that counts itself.
async fn relay(mut client: TcpStream, mut upstream: TcpStream, syncs: Arc<AtomicUsize>) {
    let (mut from_client, mut to_client) = client.split();
    let (mut from_server, mut to_server) = upstream.split();
    let up = async {
        let (mut buffer, mut started) = (Vec::new(), false);
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = match from_client.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buffer.extend_from_slice(&chunk[..n]);
            loop {
                let header = if started { 5 } else { 4 };
                if buffer.len() < header {
                    break;
                }
                let at = header - 4;
                let len = u32::from_be_bytes([
                    buffer[at],
                    buffer[at + 1],
                    buffer[at + 2],
                    buffer[at + 3],
                ]) as usize;
                let whole = at + len;
                if buffer.len() < whole {
                    break;
                }
                if !started {
                    // StartupMessage: protocol 3.0 (196608) after the length.
                    started = buffer.get(4..8) == Some(&196_608u32.to_be_bytes()[..]);
                } else if buffer[0] == b'S' {
                    syncs.fetch_add(1, Ordering::SeqCst);
                }
                buffer.drain(..whole);
            }
            if to_server.write_all(&chunk[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = tokio::io::copy(&mut from_server, &mut to_client);
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Waits until every connection of the pool is back in it (checked on its way back).
async fn all_back(db: &Db) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while db.pool().num_idle() < db.pool().size() as usize {
        assert!(Instant::now() < deadline, "a connection did not come back");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn select_one(db: &Db) -> Result<i32, sqlx::Error> {
    use sqlx::Row;
    sqlx::query("SELECT 1::INT4")
        .fetch_one(db.pool())
        .await?
        .try_get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_used_a_moment_ago_is_not_checked_again() {
    let Some(database) = switchyard_testkit::postgres::database_or_skip("pool_checks").await else {
        return;
    };
    // postgres://user@host:port/name: the proxy takes the place of host:port.
    let (head, rest) = database.url.split_once('@').expect("a user in the URL");
    let (server, name) = rest.split_once('/').expect("a database in the URL");
    let proxy = SyncCounter::start(server).await;
    let proxied = format!("{head}@{}/{name}", proxy.addr);
    let db = Db::connect(&proxied).await.expect("connect");
    // Warm: the statement is prepared once per connection.
    select_one(&db).await.expect("first");
    all_back(&db).await;
    let start = proxy.count();

    const N: usize = 20;
    for _ in 0..N {
        assert_eq!(select_one(&db).await.expect("select"), 1);
        // (so that the next statement takes the same connection, not a new one)
        all_back(&db).await;
    }
    // Each statement sends one Sync and sqlx checks the connection as it comes back (one
    // more); a check before each use would be a third.
    let used = proxy.count() - start;
    assert_eq!(
        used,
        2 * N,
        "Syncs for {N} statements: was a connection checked before use?"
    );

    // Idle past the threshold: checked before use.
    tokio::time::sleep(POSTGRES_CHECK_AFTER_IDLE + Duration::from_millis(200)).await;
    let before = proxy.count();
    assert_eq!(select_one(&db).await.expect("after idle"), 1);
    all_back(&db).await;
    let after_idle = proxy.count() - before;
    assert_eq!(after_idle, 3, "a check, the statement, the check on return");

    // The server kills the pool's connections: the next use may fail, as unavailable (a
    // transient error: retried, or a 503), and the pool recovers at once.
    let admin = Db::connect(&database.url).await.expect("admin");
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .execute(admin.pool())
    .await
    .expect("terminate");
    let mut failures = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match select_one(&db).await {
            Ok(1) => break,
            Ok(other) => panic!("SELECT 1 gave {other}"),
            Err(e) => {
                assert!(is_unavailable(&e), "not taken as unavailable: {e}");
                failures += 1;
            }
        }
        assert!(Instant::now() < deadline, "the pool did not recover");
    }
    assert!(
        failures <= 8,
        "{failures} failures: more than the pool's connections"
    );
}
