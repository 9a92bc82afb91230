//! Failures of the production servers under load (production backend):
//!
//! * the NATS server is stopped and started again while clients keep commenting: nothing is
//!   lost or applied twice, the services recover without a restart, and `/readyz` answers
//!   503 while NATS is down and 200 after;
//! * PostgreSQL connections are terminated again and again while clients keep commenting:
//!   nothing is lost or applied twice, and the pools reconnect.
//!
//! These tests disturb servers shared with every other test, so they run one at a time (a
//! process-wide lock) in their own test binary, and the NATS server is started again at the
//! end even when a test fails. Without the servers they are skipped with a message, except
//! under `CI=true`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection;
use support::backend::{self, Backend};
use support::blog::Blog;
use support::http::Client;
use support::load::{
    Truth, create_comment, create_post, http_client, log_is_exactly_once, matches_truth, read_model,
};
use support::nemesis::{NatsGuard, restart_nats, stop_nats};

/// One disturbing test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SETTLE: Duration = Duration::from_secs(120);
/// Clients commenting until told to stop: round-robin over the posts, through `comments`.
fn spawn_commenters(
    comments: String,
    posts: Vec<String>,
    clients: usize,
    stop: Arc<AtomicBool>,
    created: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<Truth>> {
    (0..clients)
        .map(|c| {
            let (comments, posts, stop, created) = (
                comments.clone(),
                posts.clone(),
                stop.clone(),
                created.clone(),
            );
            tokio::spawn(async move {
                let http = http_client();
                let mut truth = Truth::default();
                let mut n = 0usize;
                while !stop.load(Ordering::Acquire) {
                    let post = &posts[(c + n) % posts.len()];
                    let content = if n.is_multiple_of(3) {
                        format!("orange {c}-{n}")
                    } else {
                        format!("fine {c}-{n}")
                    };
                    create_comment(&http, &comments, post, &content, &mut truth).await;
                    created.fetch_add(1, Ordering::AcqRel);
                    n += 1;
                    // A modest pace (two cores).
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                truth
            })
        })
        .collect()
}

async fn ready_status(client: &Client, url: &str) -> Option<u16> {
    Some(client.try_get(&format!("{url}/readyz")).await?.status)
}

/// Waits for the read model to equal the truth, and checks the bus log.
async fn assert_converged(blog: &Blog, truth: &Truth) {
    let client = Client::default();
    let query = blog.url("query");
    let settled =
        switchyard_kit::wait::until("the read model to equal the truth", SETTLE, || async {
            let read = read_model(&client, &query).await?;
            matches_truth(&read, truth).ok()
        })
        .await;
    if settled.is_err() {
        let why = read_model(&client, &query)
            .await
            .map(|r| matches_truth(&r, truth));
        panic!("the read model never matched the truth: {why:?}");
    }
    let events = blog.events().await;
    if let Err(e) = log_is_exactly_once(&events, truth) {
        panic!("bus log: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_mid_stream_loses_nothing_and_duplicates_nothing() {
    if !Backend::Production.enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let _guard = NatsGuard;
    let blog = Blog::start_on(Backend::Production).await;
    blog.wait_ready().await;
    let client = Client::default();
    let started = Instant::now();
    let http = http_client();
    let mut truth = Truth::default();
    let mut posts = Vec::new();
    for i in 0..5 {
        posts.push(create_post(&http, &blog.url("posts"), &format!("post {i}"), &mut truth).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicUsize::new(0));
    let commenters = spawn_commenters(
        blog.url("comments"),
        posts.clone(),
        2,
        stop.clone(),
        created.clone(),
    );

    // Some traffic flows, then NATS goes away.
    support::eventually("comments to reach the read model", || async {
        let read = read_model(&client, &blog.url("query")).await?;
        let n: usize = read
            .as_object()?
            .values()
            .map(|p| p["comments"].as_array().map_or(0, Vec::len))
            .sum();
        (n >= 10).then_some(())
    })
    .await;
    stop_nats().await;
    let down_at = Instant::now();
    for s in ["posts", "comments", "query", "moderation"] {
        let url = blog.ops_url(s);
        support::eventually("readyz to answer 503 while NATS is down", || async {
            (ready_status(&client, &url).await? == 503).then_some(())
        })
        .await;
    }
    // Writes still succeed while the bus is down (the outbox keeps the events): NATS stays
    // down until the clients got 100 more comments accepted (a few seconds).
    let at_stop = created.load(Ordering::Acquire);
    support::eventually("comments accepted while NATS is down", || async {
        (created.load(Ordering::Acquire) >= at_stop + 100).then_some(())
    })
    .await;
    let while_down = create_post(
        &http,
        &blog.url("posts"),
        "written while NATS is down",
        &mut truth,
    )
    .await;
    create_comment(
        &http,
        &blog.url("comments"),
        &while_down,
        "orange, NATS down",
        &mut truth,
    )
    .await;
    restart_nats().await;
    eprintln!("NATS was down for {:?}", down_at.elapsed());
    for s in ["posts", "comments", "query", "moderation"] {
        let url = blog.ops_url(s);
        support::eventually("readyz to answer 200 once NATS is back", || async {
            (ready_status(&client, &url).await? == 200).then_some(())
        })
        .await;
    }
    eprintln!("ready again {:?} after the restart", down_at.elapsed());
    // Traffic after the restart too.
    let after = create_post(&http, &blog.url("posts"), "after the restart", &mut truth).await;
    create_comment(
        &http,
        &blog.url("comments"),
        &after,
        "fine, after",
        &mut truth,
    )
    .await;
    stop.store(true, Ordering::Release);
    for c in commenters {
        truth.merge(c.await.expect("commenter"));
    }
    eprintln!(
        "{} posts, {} comments; converging",
        truth.posts.len(),
        truth.comments.len()
    );
    assert_converged(&blog, &truth).await;
    eprintln!("converged {:?} after the start", started.elapsed());
    blog.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_terminated_mid_stream_lose_nothing() {
    if !Backend::Production.enabled() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let _guard = NatsGuard;
    let blog = Blog::start_on(Backend::Production).await;
    blog.wait_ready().await;
    let pattern = blog
        .resources
        .as_ref()
        .expect("production resources")
        .database_pattern();
    let admin = switchyard_kit::db::with_database(&backend::postgres_url(), "postgres");
    let started = Instant::now();
    let http = http_client();
    let mut truth = Truth::default();
    let mut posts = Vec::new();
    for i in 0..5 {
        posts.push(create_post(&http, &blog.url("posts"), &format!("post {i}"), &mut truth).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicUsize::new(0));
    let commenters = spawn_commenters(
        blog.url("comments"),
        posts.clone(),
        2,
        stop.clone(),
        created.clone(),
    );

    // Terminate every connection of this test's databases, over and over, during the load.
    let mut conn = sqlx::postgres::PgConnection::connect(&admin)
        .await
        .expect("admin connection");
    let mut terminated = 0i64;
    let until = Instant::now() + Duration::from_secs(4);
    let mut rounds = 0usize;
    while Instant::now() < until {
        let killed = sqlx::query(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname LIKE $1 AND pid <> pg_backend_pid()",
        )
        .bind(&pattern)
        .fetch_one(&mut conn)
        .await
        .and_then(|row| sqlx::Row::try_get::<i64, _>(&row, 0))
        .expect("terminate");
        terminated += killed;
        rounds += 1;
        // Posts are created during the disturbance too.
        if rounds.is_multiple_of(5) {
            posts_during(&blog, &http, &mut truth, rounds).await;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    conn.close().await.ok();
    eprintln!("terminated {terminated} connections in {rounds} rounds");
    assert!(terminated > 0, "no connection was terminated");
    stop.store(true, Ordering::Release);
    for c in commenters {
        truth.merge(c.await.expect("commenter"));
    }
    // The pools reconnected: everything is ready again.
    let client = Client::default();
    for s in ["posts", "comments", "query", "moderation"] {
        let url = blog.ops_url(s);
        let ready = switchyard_kit::wait::until("readyz 200", Duration::from_secs(30), || async {
            (ready_status(&client, &url).await? == 200).then_some(())
        })
        .await;
        if ready.is_err() {
            let a = client.try_get(&format!("{url}/readyz")).await;
            panic!(
                "{s} not ready after the disturbance: {:?}",
                a.map(|a| (a.status, String::from_utf8_lossy(&a.body).into_owned()))
            );
        }
    }
    // What the services stored is the truth the clients were told, or more (a commit whose
    // answer was lost is still a post or a comment): add what their own lists hold.
    let stored = client
        .get(&format!("{}/posts", blog.url("posts")))
        .await
        .json();
    for (id, post) in stored.as_object().expect("posts") {
        let title = post["title"].as_str().expect("title").to_string();
        truth.posts.entry(id.clone()).or_insert(title);
    }
    for post in truth.posts.clone().keys() {
        let list = client
            .get(&format!("{}/posts/{post}/comments", blog.url("comments")))
            .await
            .json();
        for c in list.as_array().expect("array") {
            let id = c["id"].as_str().expect("id").to_string();
            let content = c["content"].as_str().expect("content").to_string();
            truth
                .comments
                .entry(id)
                .or_insert_with(|| (post.clone(), content));
        }
    }
    eprintln!(
        "{} posts, {} comments; converging",
        truth.posts.len(),
        truth.comments.len()
    );
    assert_converged(&blog, &truth).await;
    eprintln!("converged {:?} after the start", started.elapsed());
    blog.shutdown().await;
}

async fn posts_during(blog: &Blog, http: &reqwest::Client, truth: &mut Truth, round: usize) {
    let post = create_post(
        http,
        &blog.url("posts"),
        &format!("during round {round}"),
        truth,
    )
    .await;
    create_comment(http, &blog.url("comments"), &post, "orange during", truth).await;
}
