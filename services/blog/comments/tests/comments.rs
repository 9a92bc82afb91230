//! The comments service on its own, over real HTTP on 127.0.0.1, with an in-process event
//! bus (SQLite in a temporary directory) delivering `CommentModerated` to it, on SQLite and
//! on PostgreSQL: a comment starts pending and is published, its verdict is applied once and
//! published as `CommentUpdated` in the comment's trace, and bad input gets the contract's
//! 400.

use serde_json::json;
use switchyard_testkit::{OnBus, Running, bus, eventually};

/// The bus and the service.
async fn start(database_url: Option<&str>) -> OnBus {
    OnBus::start(
        "comments",
        Some(switchyard_comments::CONSUMES),
        Some(|e| switchyard_blog_contract::BlogEvent::from_envelope(e).map(|_| ())),
        database_url,
        |settings, listeners| {
            Running::start(listeners, move |l, s| {
                switchyard_comments::launch(settings, l, s)
            })
        },
    )
    .await
}

/// A comment is created pending and published; moderation's verdict, delivered twice, is
/// applied once: the list shows it and one `CommentUpdated` carries the stored content and
/// the verdict's trace.
async fn a_comment_is_created_and_its_verdict_applied_once(database_url: Option<&str>) {
    let stack = start(database_url).await;
    let c = &stack.client;
    let created = c
        .post("/posts/p1/comments", None, &json!({"content": "nice post"}))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body[0]["id"].as_str().expect("id").to_string();
    assert_eq!(
        created.body,
        json!([{"id": id, "content": "nice post", "status": "pending"}])
    );
    let second = c
        .post("/posts/p1/comments", None, &json!({"content": "second"}))
        .await;
    assert_eq!(
        second.body.as_array().map(Vec::len),
        Some(2),
        "every comment, the new one last"
    );
    let published = c.wait_events("CommentCreated", 2).await;
    assert_eq!(
        published[0]["data"],
        json!({"id": id, "content": "nice post", "postId": "p1", "status": "pending"})
    );
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let verdict = json!({
        "id": "e-verdict",
        "type": "CommentModerated",
        // The content moderation carries is not what is stored: the stored one wins.
        "data": {"id": id, "postId": "p1", "status": "approved", "content": "changed"},
        "traceparent": format!("00-{trace}-00f067aa0ba902b7-01"),
    });
    bus::publish(&c.http, &stack.bus.url(), &verdict).await;
    let updated = c.wait_events("CommentUpdated", 1).await;
    assert_eq!(
        updated[0]["data"],
        json!({"id": id, "status": "approved", "postId": "p1", "content": "nice post"})
    );
    let traceparent = updated[0]["traceparent"].as_str().expect("a traceparent");
    assert_eq!(traceparent.split('-').nth(1), Some(trace), "{}", updated[0]);
    eventually("the list to show the verdict", || async {
        let list = c.get("/posts/p1/comments", None).await;
        (list.body[0]["status"] == "approved").then_some(())
    })
    .await;
    // The same verdict again (a redelivery): nothing more is published.
    let again = c.deliver(verdict).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    c.post("/posts/p1/comments", None, &json!({"content": "third"}))
        .await;
    c.wait_events("CommentCreated", 3).await;
    assert_eq!(c.events("CommentUpdated").await.len(), 1);
    stack.stop().await;
}

/// Bad bodies and post ids get the contract's 400; a post never commented lists none.
async fn bad_input_gets_a_400(database_url: Option<&str>) {
    let stack = start(database_url).await;
    let c = &stack.client;
    for (body, message) in [
        (json!({}), "content is required"),
        (json!({"content": ""}), "content must not be empty"),
        (json!({"content": ["x"]}), "content must be a string"),
        (
            json!({"content": "x".repeat(2001)}),
            "content must be at most 2000 characters",
        ),
    ] {
        c.post("/posts/p1/comments", None, &body)
            .await
            .assert_error(400, message, Some("content"));
    }
    c.post("/posts/p1/comments", None, &json!("content"))
        .await
        .assert_error(400, "the body must be a JSON object", None);
    let long = format!("/posts/{}/comments", "p".repeat(129));
    let a = c.post(&long, None, &json!({"content": "x"})).await;
    assert_eq!(a.status, 400, "{:?}", a.body);
    a.assert_json_error();
    let none = c.get("/posts/never/comments", None).await;
    assert_eq!((none.status, none.body), (200, json!([])));
    assert!(c.log().await.is_empty(), "nothing was published");
    stack.stop().await;
}

switchyard_testkit::on_each_database!(
    a_comment_is_created_and_its_verdict_applied_once,
    bad_input_gets_a_400,
);
