//! The blog's services over real HTTP through the real bus: the contract per route, the
//! whole flow, duplicated and reordered deliveries, restarts, the bus down, bad input.
//!
//! Each test runs once per backend (`embedded::<test>`: SQLite + the HTTP event bus;
//! `production::<test>`: PostgreSQL + NATS JetStream), see `support::backend`.

use crate::per_backend;
use crate::support;

use serde_json::{Value, json};
use support::backend::Backend;
use support::blog::Blog;
use support::eventually;
use support::http::Client;

struct Api {
    client: Client,
}

impl Api {
    fn new() -> Self {
        Api {
            client: Client::default(),
        }
    }

    async fn create_post(&self, blog: &Blog, title: &str) -> String {
        let a = self
            .client
            .post_json(
                &format!("{}/posts/create", blog.url("posts")),
                &json!({"title": title}),
            )
            .await;
        assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
        a.json()["id"].as_str().expect("id").to_string()
    }

    async fn comment(&self, blog: &Blog, post: &str, content: &str) -> Value {
        let a = self
            .client
            .post_json(
                &format!("{}/posts/{post}/comments", blog.url("comments")),
                &json!({"content": content}),
            )
            .await;
        assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
        a.json()
    }

    async fn try_query(&self, blog: &Blog) -> Option<Value> {
        let a = self
            .client
            .try_get(&format!("{}/posts", blog.url("query")))
            .await?;
        (a.status == 200).then(|| a.json())
    }

    /// Waits until every comment in query has left `pending` and there are `comments` of them.
    async fn settled(&self, blog: &Blog, posts: usize, comments: usize) -> Value {
        eventually("the read model to settle", || async {
            let v = self.try_query(blog).await?;
            let map = v.as_object()?;
            let all: Vec<&Value> = map
                .values()
                .flat_map(|p| p["comments"].as_array().into_iter().flatten())
                .collect();
            (map.len() == posts
                && all.len() == comments
                && all.iter().all(|c| c["status"] != "pending"))
            .then_some(v.clone())
        })
        .await
    }

    async fn bus_log(&self, blog: &Blog) -> Vec<Value> {
        blog.events().await
    }
}

fn expected_status(content: &str) -> &'static str {
    if content.contains("orange") {
        "rejected"
    } else {
        "approved"
    }
}

/// Every comment's status is the moderation rule's answer, and nothing is duplicated.
fn assert_consistent(read_model: &Value) {
    let mut seen = std::collections::HashSet::new();
    for (id, post) in read_model.as_object().expect("object") {
        assert_eq!(post["id"], *id);
        for c in post["comments"].as_array().expect("comments") {
            assert!(
                seen.insert(c["id"].as_str().expect("id").to_string()),
                "duplicate comment {c}"
            );
            assert_eq!(
                c["status"],
                expected_status(c["content"].as_str().expect("content")),
                "{c}"
            );
        }
    }
}

per_backend!(
    each_route_answers_the_contract_shapes,
    many_posts_and_comments_converge_with_the_moderation_rule,
    duplicated_and_reordered_deliveries_change_nothing,
    every_service_restarted_mid_flow_keeps_its_state,
    query_catches_up_from_its_position_and_can_be_rebuilt,
    bad_input_gets_a_400_json_error_naming_the_field,
);

async fn each_route_answers_the_contract_shapes(backend: Backend) {
    let blog = Blog::start_on(backend).await;
    let api = Api::new();
    let c = &api.client;
    // posts
    let created = c
        .post_json(
            &format!("{}/posts/create", blog.url("posts")),
            &json!({"title": "First"}),
        )
        .await;
    assert_eq!(created.status, 201);
    let post = created.json();
    let id = post["id"].as_str().expect("id").to_string();
    assert_eq!(post, json!({"id": id, "title": "First"}));
    let list = c.get(&format!("{}/posts", blog.url("posts"))).await;
    assert_eq!(
        (list.status, list.json()),
        (200, json!({ id.clone(): {"id": id, "title": "First"} }))
    );
    // comments
    let url = format!("{}/posts/{id}/comments", blog.url("comments"));
    assert_eq!(
        c.get(&format!("{}/posts/unknown/comments", blog.url("comments")))
            .await
            .json(),
        json!([])
    );
    let first = api.comment(&blog, &id, "hello").await;
    let first_id = first[0]["id"].as_str().expect("id").to_string();
    assert_eq!(
        first,
        json!([{"id": first_id, "content": "hello", "status": "pending"}])
    );
    let second = api.comment(&blog, &id, "an orange").await;
    assert_eq!(second.as_array().map(Vec::len), Some(2));
    assert_eq!(second[1]["content"], "an orange");
    assert_eq!(second[1]["status"], "pending");
    let listed = c.get(&url).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json().as_array().map(Vec::len), Some(2));
    // query
    let read = api.settled(&blog, 1, 2).await;
    let second_id = second[1]["id"].as_str().expect("id");
    assert_eq!(
        read,
        json!({ id.clone(): {"id": id, "title": "First", "comments": [
            {"id": first_id, "content": "hello", "status": "approved"},
            {"id": second_id, "content": "an orange", "status": "rejected"}
        ]}})
    );
    // the comments service saw the moderation too
    let listed = c.get(&url).await.json();
    assert_eq!(listed[0]["status"], "approved");
    assert_eq!(listed[1]["status"], "rejected");
    // POST /events on every service answers 200 {} (unknown types are ignored) where the
    // HTTP bus delivers; with NATS there is no such route.
    for s in ["posts", "comments", "query", "moderation"] {
        let a = c
            .post_json(
                &format!("{}/events", blog.url(s)),
                &json!({"type": "Unknown", "data": {}}),
            )
            .await;
        match backend {
            Backend::Embedded => assert_eq!((a.status, a.json()), (200, json!({})), "{s}"),
            Backend::Production => a.assert_error(404, None),
        }
    }
    // The bus log holds the contract's event types with their payloads.
    let log = api.bus_log(&blog).await;
    let types: Vec<&str> = log
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    for t in [
        "PostCreated",
        "CommentCreated",
        "CommentModerated",
        "CommentUpdated",
    ] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    let created = log
        .iter()
        .find(|e| e["type"] == "CommentCreated")
        .expect("CommentCreated");
    assert_eq!(
        created["data"],
        json!({"id": first_id, "content": "hello", "postId": id, "status": "pending"})
    );
    assert!(created["correlationId"].is_string());
    // health and metrics
    for s in blog.http_services() {
        assert_eq!(
            c.get(&format!("{}/healthz", blog.ops_url(s))).await.status,
            200
        );
        let ready = c.get(&format!("{}/readyz", blog.ops_url(s))).await;
        assert_eq!(
            ready.status,
            200,
            "{s}: {}",
            String::from_utf8_lossy(&ready.body)
        );
        let m = c.get(&format!("{}/metrics", blog.ops_url(s))).await;
        assert!(String::from_utf8_lossy(&m.body).contains("switchyard_http_requests_total"));
    }
    blog.shutdown().await;
}

async fn many_posts_and_comments_converge_with_the_moderation_rule(backend: Backend) {
    let blog = Blog::start_on(backend).await;
    let api = Api::new();
    let mut posts = Vec::new();
    for i in 0..20 {
        posts.push(api.create_post(&blog, &format!("post {i}")).await);
    }
    // Comments are posted concurrently, right after their posts: comment events race
    // their post's event to the read model.
    let mut tasks = Vec::new();
    for (i, post) in posts.iter().enumerate() {
        let (api, post, blog_url) = (Api::new(), post.clone(), blog.url("comments"));
        tasks.push(tokio::spawn(async move {
            for j in 0..3 {
                let content = if (i + j) % 4 == 0 {
                    format!("orange {i}-{j}")
                } else {
                    format!("fine {i}-{j}")
                };
                let a = api
                    .client
                    .post_json(
                        &format!("{blog_url}/posts/{post}/comments"),
                        &json!({"content": content}),
                    )
                    .await;
                assert_eq!(a.status, 201);
            }
        }));
    }
    for t in tasks {
        t.await.expect("commenter");
    }
    let read = api.settled(&blog, 20, 60).await;
    assert_consistent(&read);
    // Creation order is kept.
    let keys: Vec<&String> = read.as_object().expect("object").keys().collect();
    assert_eq!(keys, posts.iter().collect::<Vec<_>>());
    blog.shutdown().await;
}

async fn duplicated_and_reordered_deliveries_change_nothing(backend: Backend) {
    let blog = Blog::start_on(backend).await;
    let c = Client::default();
    let post = json!({"id": "ev-post", "type": "PostCreated", "data": {"id": "p1", "title": "T"}});
    let created = json!({"id": "ev-c1", "type": "CommentCreated", "data": {"id": "c1", "content": "hi", "postId": "p1", "status": "pending"}});
    let updated = json!({"id": "ev-u1", "type": "CommentUpdated", "data": {"id": "c1", "content": "hi", "postId": "p1", "status": "approved"}});
    let created2 = json!({"id": "ev-c2", "type": "CommentCreated", "data": {"id": "c2", "content": "yo", "postId": "p1", "status": "pending"}});
    // Worst order: the update first, then the creation, then the post; each twice.
    for e in [
        &updated, &updated, &created, &created2, &created, &post, &post, &created2,
    ] {
        blog.deliver("query", e).await;
    }
    let read = c.get(&format!("{}/posts", blog.url("query"))).await.json();
    assert_eq!(
        read,
        json!({"p1": {"id": "p1", "title": "T", "comments": [
            {"id": "c1", "content": "hi", "status": "approved"},
            {"id": "c2", "content": "yo", "status": "pending"}
        ]}})
    );
    // Moderation judges a redelivered comment once; comments applies a redelivered
    // moderation once.
    let post_id = Api::new().create_post(&blog, "real").await;
    let list = Api::new().comment(&blog, &post_id, "ok").await;
    let comment_id = list[0]["id"].as_str().expect("id").to_string();
    let api = Api::new();
    eventually("moderated", || async {
        let v = api.try_query(&blog).await?;
        (v[&post_id]["comments"][0]["status"] == "approved").then_some(())
    })
    .await;
    let log = api.bus_log(&blog).await;
    let cc = log
        .iter()
        .find(|e| e["type"] == "CommentCreated" && e["data"]["id"] == comment_id)
        .expect("created")
        .clone();
    let cm = log
        .iter()
        .find(|e| e["type"] == "CommentModerated" && e["data"]["id"] == comment_id)
        .expect("moderated")
        .clone();
    for _ in 0..3 {
        blog.deliver("moderation", &cc).await;
        blog.deliver("comments", &cm).await;
    }
    // Counted by event id: on NATS the redeliveries above are copies in the stream.
    let log = api.bus_log(&blog).await;
    let count = |t: &str| {
        log.iter()
            .filter(|e| e["type"] == t && e["data"]["id"] == comment_id)
            .map(|e| e["id"].to_string())
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    assert_eq!(count("CommentModerated"), 1);
    assert_eq!(count("CommentUpdated"), 1);
    // A moderation for a comment nobody knows is ignored, not a crash.
    let ghost = json!({"id": "ev-ghost", "type": "CommentModerated", "data": {"id": "nope", "postId": "nope", "status": "approved", "content": "x"}});
    blog.deliver("comments", &ghost).await;
    assert_eq!(
        c.get(&format!("{}/healthz", blog.ops_url("comments")))
            .await
            .status,
        200
    );
    blog.shutdown().await;
}

async fn every_service_restarted_mid_flow_keeps_its_state(backend: Backend) {
    let mut blog = Blog::start_on(backend).await;
    let api = Api::new();
    let mut expected_comments = 0;
    let mut posts = Vec::new();
    // The HTTP event bus too on the embedded backend (NATS restarts: see failures.rs).
    for (round, service) in blog.http_services().iter().enumerate() {
        let post = api.create_post(&blog, &format!("before {service}")).await;
        api.comment(&blog, &post, &format!("orange {round}")).await;
        posts.push(post.clone());
        expected_comments += 1;
        // A crash (task dropped mid-flight) for odd rounds, a graceful stop for even ones.
        if round % 2 == 1 {
            blog.kill(service).await;
        } else {
            blog.stop(service).await;
        }
        // While it is down, the others keep working where they can.
        if *service != "posts" && *service != "comments" {
            api.comment(&blog, &post, &format!("while {service} down"))
                .await;
            expected_comments += 1;
        }
        blog.restart(service).await;
        api.comment(&blog, &post, &format!("after {service}")).await;
        expected_comments += 1;
    }
    let read = api.settled(&blog, posts.len(), expected_comments).await;
    assert_consistent(&read);
    // State kept across restarts: the posts service still lists every post.
    let listed = api
        .client
        .get(&format!("{}/posts", blog.url("posts")))
        .await
        .json();
    assert_eq!(listed.as_object().map(|m| m.len()), Some(posts.len()));
    blog.shutdown().await;
}

/// Embedded only: stopping the shared NATS server would disturb the tests running in
/// parallel; NATS outages are covered, serially, by failures.rs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_answers_201_while_the_bus_is_down_and_the_event_arrives_later() {
    if !Backend::Embedded.enabled() {
        return;
    }
    let mut blog = Blog::start_on(Backend::Embedded).await;
    let api = Api::new();
    blog.stop("event-bus").await;
    let id = api
        .create_post(&blog, "written while the bus is down")
        .await;
    let ready = api
        .client
        .get(&format!("{}/readyz", blog.ops_url("posts")))
        .await;
    // Ready: its database answers (the bus is a detail, and the outbox holds the event).
    assert_eq!(
        ready.status,
        200,
        "{}",
        String::from_utf8_lossy(&ready.body)
    );
    assert_ne!(ready.json()["details"]["bus"], "ok");
    blog.restart("event-bus").await;
    eventually("the post reaches query", || async {
        let v = api.try_query(&blog).await?;
        v.get(&id).map(|_| ())
    })
    .await;
    blog.shutdown().await;
}

async fn query_catches_up_from_its_position_and_can_be_rebuilt(backend: Backend) {
    let mut blog = Blog::start_on(backend).await;
    let api = Api::new();
    let first = api.create_post(&blog, "one").await;
    api.comment(&blog, &first, "hello").await;
    api.settled(&blog, 1, 1).await;
    blog.stop("query").await;
    let second = api.create_post(&blog, "two").await;
    api.comment(&blog, &second, "orange juice").await;
    blog.restart("query").await;
    let read = api.settled(&blog, 2, 2).await;
    assert_consistent(&read);
    // Rebuild from the whole log with the command, query stopped.
    blog.stop("query").await;
    let mut env = vec![("DATABASE_URL", blog.database_url("query"))];
    env.extend(blog.bus_env());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, stderr) = support::process::run(&["rebuild-query"], &env);
    assert!(status.success(), "{stderr}");
    blog.restart("query").await;
    let rebuilt = api.settled(&blog, 2, 2).await;
    assert_eq!(rebuilt, read);
    blog.shutdown().await;
}

async fn bad_input_gets_a_400_json_error_naming_the_field(backend: Backend) {
    let blog = Blog::start_on(backend).await;
    let c = Client::default();
    let create = format!("{}/posts/create", blog.url("posts"));
    let long_title = "t".repeat(301);
    for (body, field) in [
        (json!({}), "title"),
        (json!({"title": ""}), "title"),
        (json!({"title": "   "}), "title"),
        (json!({"title": 42}), "title"),
        (json!({"title": ["a"]}), "title"),
        (json!({"title": null}), "title"),
        (json!({"title": long_title}), "title"),
    ] {
        c.post_json(&create, &body)
            .await
            .assert_error(400, Some(field));
    }
    c.post_json(&create, &json!("just a string"))
        .await
        .assert_error(400, None);
    c.post_raw(&create, "application/json", "{\"title\":")
        .await
        .assert_error(400, None);
    c.post_raw(&create, "text/plain", "{\"title\":\"x\"}")
        .await
        .assert_error(400, None);
    c.post_raw(&create, "application/x-www-form-urlencoded", "title=x")
        .await
        .assert_error(400, None);
    let comments = format!("{}/posts/p/comments", blog.url("comments"));
    let long_content = "c".repeat(2001);
    for body in [
        json!({}),
        json!({"content": ""}),
        json!({"content": 1}),
        json!({"content": long_content}),
    ] {
        c.post_json(&comments, &body)
            .await
            .assert_error(400, Some("content"));
    }
    c.post_raw(&comments, "application/json", "nope")
        .await
        .assert_error(400, None);
    let long_id = "p".repeat(200);
    c.post_json(
        &format!("{}/posts/{long_id}/comments", blog.url("comments")),
        &json!({"content": "x"}),
    )
    .await
    .assert_error(400, Some("id"));
    // Unknown routes and methods.
    for s in ["posts", "comments", "query", "moderation"] {
        c.get(&format!("{}/nope", blog.url(s)))
            .await
            .assert_error(404, None);
        // Only the HTTP bus delivers over HTTP: with NATS there is no such route.
        let no_get = if backend == Backend::Embedded {
            405
        } else {
            404
        };
        c.get(&format!("{}/events", blog.url(s)))
            .await
            .assert_error(no_get, None);
    }
    if backend == Backend::Embedded {
        // Malformed events are rejected with 400 and crash nothing.
        for s in ["posts", "comments", "query", "moderation"] {
            let url = format!("{}/events", blog.url(s));
            c.post_raw(&url, "application/json", "{")
                .await
                .assert_error(400, None);
            c.post_json(&url, &json!({"data": {}}))
                .await
                .assert_error(400, Some("type"));
        }
        c.post_json(
            &format!("{}/events", blog.url("moderation")),
            &json!({"type": "CommentCreated", "data": {"id": "c", "postId": "p"}}),
        )
        .await
        .assert_error(400, Some("data.content"));
        c.post_json(
            &format!("{}/events", blog.url("query")),
            &json!({"type": "PostCreated", "data": {"id": "p"}}),
        )
        .await
        .assert_error(400, Some("data.title"));
        c.post_json(
            &format!("{}/events", blog.url("comments")),
            &json!({"type": "CommentModerated", "data": "x"}),
        )
        .await
        .assert_error(400, Some("data.data"));
    }
    // Nothing went down.
    for s in blog.http_services() {
        assert_eq!(
            c.get(&format!("{}/healthz", blog.ops_url(s))).await.status,
            200,
            "{s}"
        );
    }
    // Markup is data, stored and returned as is.
    let xss = "<img src=x onerror=alert(1)>";
    let a = c.post_json(&create, &json!({"title": xss})).await;
    assert_eq!(a.json()["title"], xss);
    blog.shutdown().await;
}
