//! Scale-out on the production backend: two replicas of every service, each pair sharing one
//! PostgreSQL database and one durable NATS consumer. Posts and comments are created
//! concurrently through both replicas; every event must take effect exactly once, and either
//! query replica must serve the ground truth.

use crate::support;

use std::time::Duration;

use support::backend::Backend;
use support::blog::Blog;
use support::http::Client;
use support::load::{
    Truth, counter_sum, create_comment, create_post, http_client, log_is_exactly_once,
    matches_truth, read_model,
};

const POSTS: usize = 30;
const COMMENTS_PER_POST: usize = 3;
/// Concurrent clients (the machine has two cores: keep it modest).
const CLIENTS: usize = 6;
const SETTLE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_each_service_apply_every_event_exactly_once() {
    if !Backend::Production.enabled() {
        return;
    }
    let mut blog = Blog::start_on(Backend::Production).await;
    let posts = [blog.url("posts"), blog.add_replica("posts").await];
    let comments = [blog.url("comments"), blog.add_replica("comments").await];
    let queries = [blog.url("query"), blog.add_replica("query").await];
    blog.add_replica("moderation").await;
    let client = Client::default();
    blog.wait_ready().await;

    // Each client creates its share of the posts, alternating the replicas, and comments on
    // each right away, also through both replicas.
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (posts, comments) = (posts.clone(), comments.clone());
        tasks.push(tokio::spawn(async move {
            let http = http_client();
            let mut truth = Truth::default();
            for i in (c..POSTS).step_by(CLIENTS) {
                let post =
                    create_post(&http, &posts[i % 2], &format!("post {i}"), &mut truth).await;
                for j in 0..COMMENTS_PER_POST {
                    let content = if (i + j) % 4 == 0 {
                        format!("orange {i}-{j}")
                    } else {
                        format!("fine {i}-{j}")
                    };
                    create_comment(&http, &comments[(i + j) % 2], &post, &content, &mut truth)
                        .await;
                }
            }
            truth
        }));
    }
    let mut truth = Truth::default();
    for t in tasks {
        truth.merge(t.await.expect("client"));
    }
    assert_eq!(truth.posts.len(), POSTS);
    assert_eq!(truth.comments.len(), POSTS * COMMENTS_PER_POST);
    eprintln!(
        "created {POSTS} posts and {} comments in {:?}",
        truth.comments.len(),
        started.elapsed()
    );

    // Either query replica serves the ground truth.
    for query in &queries {
        let outcome =
            switchyard_kit::wait::until("the read model to equal the truth", SETTLE, || async {
                let read = read_model(&client, query).await?;
                matches_truth(&read, &truth).ok()
            })
            .await;
        if outcome.is_err() {
            let read = read_model(&client, query).await;
            let why = read.map(|r| matches_truth(&r, &truth));
            panic!("{query} never matched the truth: {why:?}");
        }
    }
    eprintln!("read models settled after {:?}", started.elapsed());

    // The comments service (both replicas) has every comment once, with its final status.
    for (i, post) in truth.posts.keys().enumerate() {
        let list = client
            .get(&format!("{}/posts/{post}/comments", comments[i % 2]))
            .await
            .json();
        let list = list.as_array().expect("array");
        assert_eq!(list.len(), COMMENTS_PER_POST, "{post}: {list:?}");
        for c in list {
            let (_, content) = &truth.comments[c["id"].as_str().expect("id")];
            assert_eq!(c["status"], support::load::expected_status(content), "{c}");
        }
    }

    // The log: each event once (no duplicate CommentModerated or CommentUpdated).
    let events = blog.events().await;
    if let Err(e) = log_is_exactly_once(&events, &truth) {
        panic!("bus log: {e}");
    }

    // Exactly once in effect: across the two replicas of each consumer, each event was
    // applied once (the other deliveries, if any, were recognised as duplicates).
    let mut applied = [0.0; 3];
    let ops = |service| blog.all_ops_urls(service);
    for (k, (urls, label)) in [
        (ops("moderation"), "type=\"CommentCreated\""),
        (ops("comments"), "type=\"CommentModerated\""),
        (ops("query"), "type=\"CommentUpdated\""),
    ]
    .into_iter()
    .enumerate()
    {
        let mut per_replica = Vec::new();
        for url in urls.iter() {
            let text = String::from_utf8_lossy(&client.get(&format!("{url}/metrics")).await.body)
                .into_owned();
            let n = counter_sum(
                &text,
                "switchyard_events_consumed_total",
                &[label, "outcome=\"applied\""],
            );
            per_replica.push(n);
            applied[k] += n;
        }
        eprintln!("{label} applied per replica: {per_replica:?}");
    }
    let comments_total = (POSTS * COMMENTS_PER_POST) as f64;
    assert_eq!(
        applied, [comments_total; 3],
        "applied once each, all replicas together"
    );
    blog.shutdown().await;
}
