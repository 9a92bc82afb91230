//! The moderation service on its own, over real HTTP on 127.0.0.1: an in-process event bus
//! (SQLite in a temporary directory) delivering `CommentCreated` to it, on SQLite and on
//! PostgreSQL. Each comment is judged once, by the rule, and its verdict published with the
//! comment's trace; events it does not consume, and malformed ones, are answered as the
//! contract says.

use serde_json::{Value, json};
use switchyard_testkit::{OnBus, Running, bus, eventually};

/// The event bus and the moderation service, subscribed to it.
/// The bus and the service.
async fn start(database_url: Option<&str>) -> OnBus {
    let env = switchyard_kit::Env::from_pairs([("BLOCKED_WORDS", "orange,spam")]);
    OnBus::start(
        "moderation",
        Some(switchyard_moderation::CONSUMES),
        Some(|e| switchyard_blog_contract::BlogEvent::from_envelope(e).map(|_| ())),
        database_url,
        |service, listeners| {
            let settings =
                switchyard_moderation::Settings::from_env(&env, service).expect("settings");
            Running::start(listeners, move |l, s| {
                switchyard_moderation::launch(settings, l, s)
            })
        },
    )
    .await
}

fn comment(id: &str, content: &str) -> Value {
    json!({"id": id, "content": content, "postId": "p1", "status": "pending"})
}

/// Every comment is judged by the rule, once, even when delivered again; the verdict
/// carries the comment and the trace of the event that asked for it.
async fn judges_each_comment_once_by_the_rule(database_url: Option<&str>) {
    let stack = start(database_url).await;
    let c = &stack.client;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let created = json!({
        "id": "e-c1",
        "type": "CommentCreated",
        "data": comment("c1", "I like apples"),
        "traceparent": format!("00-{trace}-00f067aa0ba902b7-01"),
    });
    bus::publish(&c.http, &stack.bus.url(), &created).await;
    c.publish(
        Some("e-c2"),
        "CommentCreated",
        comment("c2", "an orange one"),
    )
    .await;
    c.publish(Some("e-c3"), "CommentCreated", comment("c3", "buy SPAM"))
        .await;
    let verdicts = c.wait_events("CommentModerated", 3).await;
    let status = |id: &str| {
        verdicts
            .iter()
            .find(|v| v["data"]["id"] == id)
            .map(|v| v["data"]["status"].clone())
    };
    assert_eq!(status("c1"), Some(json!("approved")));
    assert_eq!(status("c2"), Some(json!("rejected")));
    // The words are matched as written (case-sensitive), as the course's service does.
    assert_eq!(status("c3"), Some(json!("approved")));
    let first = verdicts
        .iter()
        .find(|v| v["data"]["id"] == "c1")
        .expect("c1");
    assert_eq!(first["data"]["content"], "I like apples");
    assert_eq!(first["data"]["postId"], "p1");
    let traceparent = first["traceparent"].as_str().expect("a traceparent");
    assert_eq!(traceparent.split('-').nth(1), Some(trace), "{first}");
    // Delivered again (the bus retries, a second path redelivers): no second verdict.
    let again = c.deliver(created).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    c.publish(Some("e-c4"), "CommentCreated", comment("c4", "last"))
        .await;
    c.wait_events("CommentModerated", 4).await;
    assert_eq!(c.events("CommentModerated").await.len(), 4);
    stack.stop().await;
}

/// What moderation does not consume is acknowledged and ignored; a malformed
/// `CommentCreated` is refused as the contract's 400, and nothing is published for either.
async fn other_and_malformed_events_are_answered_without_a_verdict(database_url: Option<&str>) {
    let stack = start(database_url).await;
    let c = &stack.client;
    let ignored = c
        .deliver(json!({"id": "e-p", "type": "PostCreated", "data": {"id": "p1", "title": "t"}}))
        .await;
    assert_eq!(ignored.status, 200, "{:?}", ignored.body);
    for data in [
        json!({"id": "c1"}),
        json!({"id": "c1", "content": 5, "postId": "p1"}),
        json!({"id": "", "content": "x", "postId": "p1"}),
    ] {
        let a = c
            .deliver(json!({"id": "e-bad", "type": "CommentCreated", "data": data}))
            .await;
        assert_eq!(a.status, 400, "{data}: {:?}", a.body);
        a.assert_json_error();
    }
    c.publish(Some("e-ok"), "CommentCreated", comment("c9", "fine"))
        .await;
    let verdicts = eventually("the one good comment judged", || async {
        let v = c.events("CommentModerated").await;
        (!v.is_empty()).then_some(v)
    })
    .await;
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0]["data"]["id"], "c9");
    stack.stop().await;
}

switchyard_testkit::on_each_database!(
    judges_each_comment_once_by_the_rule,
    other_and_malformed_events_are_answered_without_a_verdict,
);
