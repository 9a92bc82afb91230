//! The posts service on its own, over real HTTP on 127.0.0.1, with an in-process event bus
//! (SQLite in a temporary directory), on SQLite and on PostgreSQL: the contract's routes,
//! its input checks, and each post's `PostCreated` in the bus's log with the request's trace.

use serde_json::{Value, json};
use switchyard_testkit::{OnBus, Running};

/// The bus and the service.
async fn start(database_url: Option<&str>) -> OnBus {
    // Posts acts on no event: the bus delivers it none here.
    OnBus::start(
        "posts",
        None,
        Some(|e| switchyard_blog_contract::BlogEvent::from_envelope(e).map(|_| ())),
        database_url,
        |settings, listeners| {
            Running::start(listeners, move |l, s| {
                switchyard_posts::launch(settings, l, s)
            })
        },
    )
    .await
}

/// `POST /posts/create` answers 201 with the post, `GET /posts` lists it by id, and its
/// `PostCreated` reaches the bus carrying the request's trace.
async fn a_post_is_created_listed_and_published(database_url: Option<&str>) {
    let stack = start(database_url).await;
    let c = &stack.client;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let created = c
        .send(
            reqwest::Method::POST,
            &c.url("/posts/create"),
            None,
            Some(&json!({"title": "First post"})),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().expect("id").to_string();
    assert_eq!(created.body, json!({"id": id, "title": "First post"}));
    // The course's path before the Ingress creates one too.
    let second = c.post("/posts", None, &json!({"title": "Second"})).await;
    assert_eq!(second.status, 201, "{:?}", second.body);
    let listed = c.get("/posts", None).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body[&id], json!({"id": id, "title": "First post"}));
    assert_eq!(listed.body.as_object().map(|m| m.len()), Some(2));
    let events = c.wait_events("PostCreated", 2).await;
    assert_eq!(events[0]["data"], json!({"id": id, "title": "First post"}));
    // A request with a W3C traceparent: its event carries that trace.
    let traced = c
        .http
        .post(c.url("/posts/create"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&json!({"title": "Traced"}))
        .send()
        .await
        .expect("request");
    assert_eq!(traced.status(), 201);
    let events = c.wait_events("PostCreated", 3).await;
    let traceparent = events[2]["traceparent"].as_str().expect("a traceparent");
    assert_eq!(traceparent.split('-').nth(1), Some(trace), "{}", events[2]);
    stack.stop().await;
}

/// Every bad body gets a 400 with the contract's JSON error, and publishes nothing.
async fn bad_input_gets_a_400_and_publishes_nothing(database_url: Option<&str>) {
    let stack = start(database_url).await;
    let c = &stack.client;
    let cases: [(Value, &str, Option<&str>); 6] = [
        (json!({}), "title is required", Some("title")),
        (json!({"title": null}), "title is required", Some("title")),
        (
            json!({"title": "  "}),
            "title must not be empty",
            Some("title"),
        ),
        (json!({"title": 5}), "title must be a string", Some("title")),
        (
            json!({"title": "x".repeat(301)}),
            "title must be at most 300 characters",
            Some("title"),
        ),
        (json!(["title"]), "the body must be a JSON object", None),
    ];
    for (body, message, field) in cases {
        c.post("/posts/create", None, &body)
            .await
            .assert_error(400, message, field);
    }
    let ok = c
        .post("/posts/create", None, &json!({"title": "fine"}))
        .await;
    assert_eq!(ok.status, 201);
    assert_eq!(c.wait_events("PostCreated", 1).await.len(), 1);
    assert_eq!(c.log().await.len(), 1, "only the good post was published");
    stack.stop().await;
}

switchyard_testkit::on_each_database!(
    a_post_is_created_listed_and_published,
    bad_input_gets_a_400_and_publishes_nothing,
);
