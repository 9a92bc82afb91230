//! The query service on its own, over real HTTP on 127.0.0.1, with an in-process event bus
//! (SQLite in a temporary directory) delivering the blog's events to it, on SQLite and on
//! PostgreSQL: the read model converges whatever the order and repetition of its events,
//! and other or malformed events change nothing.

use serde_json::{Value, json};
use switchyard_testkit::{OnBus, Running, eventually};

/// The bus and the service.
async fn start(database_url: Option<&str>) -> OnBus {
    OnBus::start(
        "query",
        Some(switchyard_query::CONSUMES),
        Some(|e| switchyard_blog_contract::BlogEvent::from_envelope(e).map(|_| ())),
        database_url,
        |settings, listeners| {
            Running::start(listeners, move |l, s| {
                switchyard_query::launch(settings, l, s)
            })
        },
    )
    .await
}

/// Waits until `GET /posts` is `expected`.
async fn wait_posts(stack: &OnBus, expected: &Value) {
    eventually("the read model to converge", || async {
        let posts = stack.client.get("/posts", None).await;
        (posts.status == 200 && &posts.body == expected).then_some(())
    })
    .await;
}

fn comment(id: &str, post: &str, content: &str, status: &str) -> Value {
    json!({"id": id, "postId": post, "content": content, "status": status})
}

/// A comment before its post, an update before its creation, and every event delivered
/// twice: the read model ends as if they had come in order, once each.
async fn the_read_model_converges_whatever_the_order(database_url: Option<&str>) {
    let stack = start(database_url).await;
    let c = &stack.client;
    c.publish(
        Some("e1"),
        "CommentCreated",
        comment("c1", "p1", "first", "pending"),
    )
    .await;
    c.publish(
        Some("e2"),
        "CommentUpdated",
        comment("c2", "p1", "second", "rejected"),
    )
    .await;
    c.publish(
        Some("e3"),
        "PostCreated",
        json!({"id": "p1", "title": "Hello"}),
    )
    .await;
    c.publish(
        Some("e4"),
        "CommentCreated",
        comment("c2", "p1", "second", "pending"),
    )
    .await;
    c.publish(
        Some("e5"),
        "CommentUpdated",
        comment("c1", "p1", "first", "approved"),
    )
    .await;
    c.publish(
        Some("e6"),
        "PostCreated",
        json!({"id": "p2", "title": "Empty"}),
    )
    .await;
    let expected = json!({
        "p1": {"id": "p1", "title": "Hello", "comments": [
            {"id": "c1", "content": "first", "status": "approved"},
            {"id": "c2", "content": "second", "status": "rejected"},
        ]},
        "p2": {"id": "p2", "title": "Empty", "comments": []},
    });
    wait_posts(&stack, &expected).await;
    // Every event again, straight to the service as a redelivery: nothing changes.
    for (id, event_type, data) in [
        (
            "e1",
            "CommentCreated",
            comment("c1", "p1", "first", "pending"),
        ),
        ("e3", "PostCreated", json!({"id": "p1", "title": "Hello"})),
        (
            "e4",
            "CommentCreated",
            comment("c2", "p1", "second", "pending"),
        ),
    ] {
        let a = c
            .deliver(json!({"id": id, "type": event_type, "data": data}))
            .await;
        assert_eq!(a.status, 200, "{:?}", a.body);
    }
    c.publish(
        Some("e7"),
        "PostCreated",
        json!({"id": "p3", "title": "Last"}),
    )
    .await;
    let mut after = expected.clone();
    after["p3"] = json!({"id": "p3", "title": "Last", "comments": []});
    wait_posts(&stack, &after).await;
    stack.stop().await;
}

/// An event query does not consume is acknowledged and changes nothing; a malformed one is
/// refused with the contract's 400 and changes nothing.
async fn other_and_malformed_events_change_nothing(database_url: Option<&str>) {
    let stack = start(database_url).await;
    let c = &stack.client;
    c.publish(
        Some("e1"),
        "PostCreated",
        json!({"id": "p1", "title": "Hello"}),
    )
    .await;
    let expected = json!({"p1": {"id": "p1", "title": "Hello", "comments": []}});
    wait_posts(&stack, &expected).await;
    let other = c
        .deliver(json!({"id": "e-m", "type": "CommentModerated", "data": comment("c1", "p1", "x", "approved")}))
        .await;
    assert_eq!(other.status, 200, "{:?}", other.body);
    for data in [
        json!({"id": "p2"}),
        json!({"id": 5, "title": "t"}),
        json!([]),
    ] {
        let a = c
            .deliver(json!({"id": "e-bad", "type": "PostCreated", "data": data}))
            .await;
        assert_eq!(a.status, 400, "{data}: {:?}", a.body);
        a.assert_json_error();
    }
    let posts = c.get("/posts", None).await;
    assert_eq!(posts.body, expected);
    stack.stop().await;
}

switchyard_testkit::on_each_database!(
    the_read_model_converges_whatever_the_order,
    other_and_malformed_events_change_nothing,
);
