//! Failures of the production servers under load (production backend):
//!
//! * the NATS server (the test's own) is SIGKILLed for 20 s and started again while clients
//!   keep commenting: writes are taken throughout, every service stays ready (its database
//!   answers; readiness is not the bus's), nothing is lost or applied twice, and the
//!   services recover without a restart;
//! * PostgreSQL connections are terminated again and again while clients keep commenting:
//!   nothing is lost or applied twice, and the pools reconnect.
//!
//! These tests disturb servers (PostgreSQL is shared with every other test), so they run
//! one at a time (a process-wide lock) in their own test binary. Without the servers they are skipped with a message, except
//! under `CI=true`.

use crate::support;

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
use support::nats_server::NatsServer;

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
async fn nats_killed_for_twenty_seconds_loses_nothing_and_keeps_the_services_ready() {
    if !Backend::Production.enabled() {
        return;
    }
    let _serial = support::faults::ONE_AT_A_TIME.lock().await;
    let mut nats = NatsServer::start(None, &[]).await;
    let blog = Blog::start_on_resources(backend::Resources::on_nats(nats.url())).await;
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

    // Some traffic flows, then NATS is killed.
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
    nats.kill();
    let down_at = Instant::now();
    let services = ["posts", "comments", "query", "moderation"];
    // Every service sees the bus gone, and stays ready: its database answers.
    for s in services {
        let metrics = format!("{}/metrics", blog.ops_url(s));
        support::eventually("the bus seen down", || async {
            let text = String::from_utf8_lossy(&client.try_get(&metrics).await?.body).into_owned();
            text.lines()
                .any(|l| l.starts_with("switchyard_bus_up{") && l.ends_with(" 0"))
                .then_some(())
        })
        .await;
        assert_eq!(
            ready_status(&client, &blog.ops_url(s)).await,
            Some(200),
            "{s}"
        );
    }
    // Writes are taken while the bus is down (the outbox keeps the events).
    let at_kill = created.load(Ordering::Acquire);
    support::eventually("comments accepted while NATS is down", || async {
        (created.load(Ordering::Acquire) >= at_kill + 100).then_some(())
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
    // The outage lasts 20 s; the services stay ready all along.
    tokio::time::sleep_until((down_at + Duration::from_secs(20)).into()).await;
    for s in services {
        assert_eq!(
            ready_status(&client, &blog.ops_url(s)).await,
            Some(200),
            "{s}"
        );
    }
    nats.restart().await;
    eprintln!("NATS was down for {:?}", down_at.elapsed());
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
    let _serial = support::faults::ONE_AT_A_TIME.lock().await;
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

/// Keeps `databases` refusing connections until dropped (also when the test panics).
struct Refusing {
    databases: Vec<String>,
}

impl Refusing {
    /// Makes `databases` refuse new connections and ends every one they have.
    async fn start(databases: Vec<String>) -> Refusing {
        let admin = switchyard_kit::db::with_database(&backend::postgres_url(), "postgres");
        let mut conn = sqlx::postgres::PgConnection::connect(&admin)
            .await
            .expect("admin connection");
        for db in &databases {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS false"
            )))
            .execute(&mut conn)
            .await
            .expect("refuse connections");
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(db)
            .execute(&mut conn)
            .await
            .expect("end the connections");
        }
        conn.close().await.ok();
        Refusing { databases }
    }

    fn allow(databases: &[String]) {
        let databases = databases.to_vec();
        let done = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let admin = switchyard_kit::db::with_database(&backend::postgres_url(), "postgres");
                let Ok(mut conn) = sqlx::postgres::PgConnection::connect(&admin).await else {
                    return;
                };
                for db in &databases {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS true"
                    )))
                    .execute(&mut conn)
                    .await;
                }
                conn.close().await.ok();
            });
        });
        let _ = done.join();
    }
}

impl Drop for Refusing {
    fn drop(&mut self) {
        Refusing::allow(&self.databases);
    }
}

/// The tickets, expiration and payments databases refuse connections for 150 s while
/// buyers place orders (orders' database answers). The consumers of those services retry
/// their events for as long as it takes (on NATS that used to spend `max_deliver` in about
/// two minutes and dead-letter them). Afterwards every order has reserved its ticket and
/// either can be paid and is, or expired while the databases were away and is cancelled
/// with its ticket for sale again; nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_refusing_connections_for_150_seconds_lose_no_event() {
    use support::ticketing::{Options, Ticketing};
    if !Backend::Production.enabled() {
        return;
    }
    let _serial = support::faults::ONE_AT_A_TIME.lock().await;
    let outage = Duration::from_secs(
        std::env::var("OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(150),
    );
    let window = Duration::from_secs(60);
    let t = Ticketing::start_opts(
        Backend::Production,
        &["tickets", "orders", "expiration", "payments"],
        Options {
            expiration_window: window,
            ..Options::default()
        },
    )
    .await;
    let client = Client::default();
    let seller = Ticketing::cookie_for("5eed5eed5eed5eed5eed5eed", "seller@test.com");
    let buyer = Ticketing::cookie_for("b0b0b0b0b0b0b0b0b0b0b0b0", "buyer@test.com");
    let tickets_url = format!("{}/api/tickets", t.url("tickets"));
    let orders_url = format!("{}/api/orders", t.url("orders"));
    // Tickets for sale, known to orders, before the outage.
    let n = 12;
    let mut tickets = Vec::new();
    for i in 0..n {
        let a = client
            .with_cookie(
                reqwest::Method::POST,
                &tickets_url,
                Some(&seller),
                Some(&serde_json::json!({"title": format!("outage {i}"), "price": 10})),
            )
            .await;
        assert_eq!(a.status, 201);
        tickets.push(a.json()["id"].as_str().expect("id").to_string());
    }
    // ...known to orders: on the bus before tickets' database goes away (a ticket still in
    // its outbox would reach orders only after the outage).
    support::eventually("every ticket on the bus before the outage", || async {
        let on_bus = t
            .events()
            .await
            .iter()
            .filter(|e| {
                e["type"] == "ticket:created"
                    && e["data"]["id"]
                        .as_str()
                        .is_some_and(|id| tickets.iter().any(|t| t == id))
            })
            .count();
        (on_bus == tickets.len()).then_some(())
    })
    .await;
    let resources = t.resources.as_ref().expect("production resources");
    let refusing = Refusing::start(
        ["tickets", "expiration", "payments"]
            .iter()
            .map(|s| resources.database_name(s))
            .collect(),
    )
    .await;
    let down_at = Instant::now();
    // Orders placed all through the outage, each answered 201.
    let mut orders: Vec<(String, String, Instant)> = Vec::new();
    for (i, ticket) in tickets.iter().enumerate() {
        let at = down_at + outage * u32::try_from(i).unwrap_or(0) / u32::try_from(n).unwrap_or(1);
        tokio::time::sleep_until(at.into()).await;
        let a = support::eventually("an order placed during the outage", || async {
            let a = client
                .with_cookie(
                    reqwest::Method::POST,
                    &orders_url,
                    Some(&buyer),
                    Some(&serde_json::json!({"ticketId": ticket})),
                )
                .await;
            (a.status != 404).then_some(a)
        })
        .await;
        assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
        orders.push((
            a.json()["id"].as_str().expect("id").to_string(),
            ticket.clone(),
            Instant::now(),
        ));
    }
    tokio::time::sleep_until((down_at + outage).into()).await;
    drop(refusing);
    eprintln!(
        "the databases refused connections for {:?}",
        down_at.elapsed()
    );
    // Orders still within their window are paid; the others expired meanwhile.
    let order_status = |id: String| {
        let (client, buyer, url) = (client.clone(), buyer.clone(), orders_url.clone());
        async move {
            let a = client
                .with_cookie(
                    reqwest::Method::GET,
                    &format!("{url}/{id}"),
                    Some(&buyer),
                    None,
                )
                .await;
            a.json()["status"].as_str().unwrap_or_default().to_string()
        }
    };
    // Decided now, at the end of the outage, and the payable ones handled first: orders
    // still 20 s or more from their expiry are paid, the others must expire.
    let mut decided: Vec<(String, String, bool)> = orders
        .iter()
        .map(|(order, ticket, placed)| {
            let payable = placed.elapsed() + Duration::from_secs(20) < window;
            (order.clone(), ticket.clone(), payable)
        })
        .collect();
    decided.sort_by_key(|(_, _, payable)| !*payable);
    let mut paid = 0;
    let mut expired = 0;
    for (order, ticket, payable) in &decided {
        let payable = *payable;
        if payable {
            let a = support::eventually("payments to know the order", || async {
                let a = client
                    .with_cookie(
                        reqwest::Method::POST,
                        &format!("{}/api/payments", t.url("payments")),
                        Some(&buyer),
                        Some(&serde_json::json!({"token": "tok_visa", "orderId": order})),
                    )
                    .await;
                (a.status != 404 && a.status != 503).then_some(a)
            })
            .await;
            assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
            support::eventually("the paid order complete", || async {
                (order_status(order.clone()).await == "complete").then_some(())
            })
            .await;
            paid += 1;
        } else {
            support::eventually("the order expired", || async {
                (order_status(order.clone()).await == "cancelled").then_some(())
            })
            .await;
            expired += 1;
        }
        // Its ticket: reserved by the paid order, for sale again after an expiry.
        let url = format!("{tickets_url}/{ticket}");
        support::eventually("the ticket to agree with its order", || async {
            let ticket = client.get(&url).await.json();
            let holder = ticket["orderId"].as_str().unwrap_or_default().to_string();
            let agrees = if payable {
                holder == *order
            } else {
                holder.is_empty()
            };
            agrees.then_some(())
        })
        .await;
    }
    eprintln!("{paid} orders paid, {expired} expired during the outage");
    assert!(paid > 0 && expired > 0, "both outcomes were tried");
    // Nothing was dead-lettered.
    let bus = t.bus_config().connect().await.expect("bus");
    let switchyard_bus_client::bus::Bus::Nats(nats) = bus else {
        panic!("the production backend is NATS");
    };
    for group in [
        "tickets-service",
        "expiration-service",
        "payments-service",
        "orders-service",
    ] {
        assert_eq!(
            nats.dead_letter_count(group).await.expect("dead letters"),
            0,
            "{group} dead-lettered events"
        );
    }
    t.shutdown().await;
}
