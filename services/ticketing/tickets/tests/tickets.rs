//! The tickets service over real HTTP, with an in-process event bus: the original's route
//! and listener tests as behaviour, optimistic concurrency, and bad input.

mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::{Options, Stack, postgres};
use switchyard_ticketing_contract::{is_object_id, object_id};

fn order_created(order_id: &str, ticket_id: &str) -> Value {
    json!({
        "id": order_id,
        "version": 0,
        "status": "created",
        "userId": object_id(),
        "expiresAt": "2030-01-01T00:15:00.000Z",
        "ticket": {"id": ticket_id, "price": 20},
    })
}

fn order_cancelled(order_id: &str, ticket_id: &str) -> Value {
    json!({"id": order_id, "version": 1, "ticket": {"id": ticket_id}})
}

/// The `ticket:updated` events of ticket `id` on the bus.
async fn updates_of(stack: &Stack, id: &str) -> Vec<Value> {
    stack
        .events("ticket:updated")
        .await
        .into_iter()
        .filter(|e| e["data"]["id"] == id)
        .collect()
}

/// Creates a ticket and waits for its `ticket:created` on the bus: everything the service
/// committed before it has been relayed by then (the outbox publishes in commit order).
async fn barrier(stack: &Stack) {
    let user = stack.cookie(&object_id());
    let t = stack.create_ticket(&user, "barrier", 1.0).await;
    let id = t["id"].clone();
    support::eventually("the barrier ticket on the bus", || async {
        stack
            .events("ticket:created")
            .await
            .iter()
            .any(|e| e["data"]["id"] == id)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_ticket_needs_a_user_and_a_valid_title_and_price() {
    let stack = Stack::start().await;
    let body = json!({"title": "concert", "price": 20});
    stack
        .post("/api/tickets", None, &body)
        .await
        .assert_error(401, "Not authorized", None);
    let user_id = object_id();
    let user = stack.cookie(&user_id);
    for (bad, field, message) in [
        (
            json!({"title": "", "price": 10}),
            "title",
            "Title is required",
        ),
        (json!({"price": 10}), "title", "Title is required"),
        (
            json!({"title": "t", "price": -10}),
            "price",
            "Price must be greater than 0",
        ),
        (
            json!({"title": "t"}),
            "price",
            "Price must be greater than 0",
        ),
    ] {
        stack
            .post("/api/tickets", Some(&user), &bad)
            .await
            .assert_error(400, message, Some(field));
    }
    let both = stack
        .post(
            "/api/tickets",
            Some(&user),
            &json!({"title": "", "price": 0}),
        )
        .await;
    both.assert_error(400, "Title is required", Some("title"));
    assert_eq!(both.error_fields(), ["title", "price"]);
    assert_eq!(stack.get("/api/tickets", None).await.body, json!([]));

    let created = stack.post("/api/tickets", Some(&user), &body).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let ticket = created.body;
    let id = ticket["id"].as_str().expect("id").to_string();
    assert!(is_object_id(&id), "{id}");
    assert_eq!(
        ticket,
        json!({"id": id, "title": "concert", "price": 20, "userId": user_id, "version": 0})
    );
    assert!(ticket.get("orderId").is_none());
    assert_eq!(stack.get("/api/tickets", None).await.body, json!([ticket]));

    let events = stack.wait_events("ticket:created", 1).await;
    assert_eq!(events.len(), 1);
    let data = &events[0]["data"];
    assert_eq!(data["id"], id.as_str());
    assert_eq!(data["version"], 0);
    assert_eq!(data["title"], "concert");
    assert_eq!(data["price"].as_f64(), Some(20.0));
    assert_eq!(data["userId"], user_id.as_str());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn showing_a_ticket() {
    let stack = Stack::start().await;
    stack
        .get(&format!("/api/tickets/{}", object_id()), None)
        .await
        .assert_error(404, "Not Found", None);
    let user = stack.cookie(&object_id());
    let ticket = stack.create_ticket(&user, "concert", 20.5).await;
    let shown = stack
        .get(
            &format!("/api/tickets/{}", ticket["id"].as_str().expect("id")),
            None,
        )
        .await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.body, ticket);
    assert_eq!(shown.body["price"], json!(20.5));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_lists_the_unreserved_tickets_in_creation_order() {
    let stack = Stack::start().await;
    let user = stack.cookie(&object_id());
    let a = stack.create_ticket(&user, "a", 1.0).await;
    let b = stack.create_ticket(&user, "b", 2.0).await;
    let c = stack.create_ticket(&user, "c", 3.0).await;
    let b_id = b["id"].as_str().expect("id");
    stack
        .publish(None, "order:created", order_created(&object_id(), b_id))
        .await;
    stack
        .wait_ticket(b_id, "b reserved", |t| t.get("orderId").is_some())
        .await;
    let listed = stack.get("/api/tickets", None).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body, json!([a, c]));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updating_checks_in_the_contract_order_then_bumps_the_version() {
    let stack = Stack::start().await;
    let owner_id = object_id();
    let owner = stack.cookie(&owner_id);
    let other = stack.cookie(&object_id());
    let valid = json!({"title": "new title", "price": 100});
    let invalid = json!({"title": "", "price": -1});
    let unknown = format!("/api/tickets/{}", object_id());

    // 401 signed out, before anything else.
    stack
        .put(&unknown, None, &invalid)
        .await
        .assert_error(401, "Not authorized", None);
    // 400 validation, before 404.
    let a = stack.put(&unknown, Some(&owner), &invalid).await;
    a.assert_error(400, "Title is required", Some("title"));
    assert_eq!(a.error_fields(), ["title", "price"]);
    // 404 unknown.
    stack
        .put(&unknown, Some(&owner), &valid)
        .await
        .assert_error(404, "Not Found", None);

    let ticket = stack.create_ticket(&owner, "concert", 20.0).await;
    let id = ticket["id"].as_str().expect("id").to_string();
    let path = format!("/api/tickets/{id}");
    // 401 not the owner.
    stack
        .put(&path, Some(&other), &valid)
        .await
        .assert_error(401, "Not authorized", None);
    // Invalid input from the owner changes nothing.
    stack
        .put(&path, Some(&owner), &json!({"title": "x", "price": -10}))
        .await
        .assert_error(400, "Price must be greater than 0", Some("price"));

    // 200 with the next version, and ticket:updated.
    let updated = stack.put(&path, Some(&owner), &valid).await;
    assert_eq!(updated.status, 200, "{:?}", updated.body);
    assert_eq!(
        updated.body,
        json!({"id": id, "title": "new title", "price": 100, "userId": owner_id, "version": 1})
    );
    assert_eq!(stack.get(&path, None).await.body, updated.body);
    let events = stack.wait_events("ticket:updated", 1).await;
    let data = &events[0]["data"];
    assert_eq!(
        (&data["id"], &data["version"], &data["title"]),
        (&json!(id), &json!(1), &json!("new title"))
    );
    assert_eq!(data["price"].as_f64(), Some(100.0));
    assert!(data.get("orderId").is_none());

    // Reserved: 400 even for another user (the reservation is checked before the owner).
    stack
        .publish(None, "order:created", order_created(&object_id(), &id))
        .await;
    stack
        .wait_ticket(&id, "reserved", |t| t.get("orderId").is_some())
        .await;
    for user in [&owner, &other] {
        stack.put(&path, Some(user), &valid).await.assert_error(
            400,
            "Cannot edit a reserved ticket",
            None,
        );
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_reserve_and_free_tickets_through_the_bus() {
    let stack = Stack::start().await;
    let user = stack.cookie(&object_id());
    let ticket = stack.create_ticket(&user, "concert", 20.0).await;
    let id = ticket["id"].as_str().expect("id").to_string();
    let (order_a, order_b) = (object_id(), object_id());

    // order:created sets orderId, bumps the version, publishes ticket:updated with it.
    stack
        .publish(
            Some("created-a"),
            "order:created",
            order_created(&order_a, &id),
        )
        .await;
    let reserved = stack
        .wait_ticket(&id, "reserved by a", |t| t["orderId"] == order_a.as_str())
        .await;
    assert_eq!(reserved["version"], 1);
    let updates = stack.wait_events("ticket:updated", 1).await;
    assert_eq!(updates[0]["data"]["orderId"], order_a.as_str());
    assert_eq!(updates[0]["data"]["version"], 1);
    assert_eq!(updates[0]["data"]["title"], "concert");

    // order:cancelled of the holding order clears it.
    stack
        .publish(None, "order:cancelled", order_cancelled(&order_a, &id))
        .await;
    let freed = stack
        .wait_ticket(&id, "freed", |t| {
            t.get("orderId").is_none() && t["version"] == 2
        })
        .await;
    assert_eq!(freed["title"], "concert");
    let updates = stack.wait_events("ticket:updated", 2).await;
    assert_eq!(updates[1]["data"]["version"], 2);
    assert!(updates[1]["data"].get("orderId").is_none());

    // Reserved by b; a late cancellation of a changes nothing.
    stack
        .publish(None, "order:created", order_created(&order_b, &id))
        .await;
    stack
        .wait_ticket(&id, "reserved by b", |t| t["orderId"] == order_b.as_str())
        .await;
    stack
        .publish(None, "order:cancelled", order_cancelled(&order_a, &id))
        .await;
    // The bus delivers in log order: once an event published after it has been handled,
    // the stale cancellation has been too.
    let other = stack.create_ticket(&user, "other", 5.0).await;
    let other_id = other["id"].as_str().expect("id").to_string();
    stack
        .publish(
            None,
            "order:created",
            order_created(&object_id(), &other_id),
        )
        .await;
    stack
        .wait_ticket(&other_id, "barrier handled", |t| t.get("orderId").is_some())
        .await;
    let after = stack.get(&format!("/api/tickets/{id}"), None).await.body;
    assert_eq!(after["orderId"], order_b.as_str());
    assert_eq!(after["version"], 3);

    // A redelivery of an event already handled changes nothing and publishes nothing.
    let redelivered = stack
        .deliver(json!({
            "id": "created-a",
            "type": "order:created",
            "data": order_created(&order_a, &id),
        }))
        .await;
    assert_eq!((redelivered.status, redelivered.body), (200, json!({})));
    barrier(&stack).await;
    assert_eq!(
        stack.get(&format!("/api/tickets/{id}"), None).await.body,
        after
    );
    let versions: Vec<Value> = updates_of(&stack, &id)
        .await
        .iter()
        .map(|e| e["data"]["version"].clone())
        .collect();
    assert_eq!(versions, [json!(1), json!(2), json!(3)]);
    stack.stop().await;
}

/// Handlers run several events at once on NATS, so one order's events can come after
/// another's. A creation that finds the ticket held by another order waits (425) for the
/// cancellation that must come first, whichever of the two orders it belongs to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_finding_the_ticket_held_waits_for_the_cancellation() {
    let stack = Stack::start().await;
    creation_waits_for_the_cancellation(&stack).await;
    stack.stop().await;
    let Some(database) = postgres::database_or_skip("tickets_held").await else {
        return;
    };
    let stack = Stack::start_with(Options {
        database_url: Some(database.url.clone()),
        replicas: 1,
    })
    .await;
    creation_waits_for_the_cancellation(&stack).await;
    stack.stop().await;
}

async fn creation_waits_for_the_cancellation(stack: &Stack) {
    let user = stack.cookie(&object_id());
    let ticket = stack.create_ticket(&user, "concert", 20.0).await;
    let id = ticket["id"].as_str().expect("id").to_string();
    let (older, newer, newest) = (object_id(), object_id(), object_id());
    let deliver = |event_type: &str, data: Value| {
        stack.deliver(json!({"id": object_id(), "type": event_type, "data": data}))
    };
    let holder = || async {
        let t = stack.get(&format!("/api/tickets/{id}"), None).await.body;
        (t.get("orderId").cloned(), t["version"].clone())
    };

    // The newer order's creation first, then the older order's, late.
    let a = deliver("order:created", order_created(&newer, &id)).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let late = deliver("order:created", order_created(&older, &id)).await;
    late.assert_json_error();
    assert_eq!(late.status, 425, "{:?}", late.body);
    assert_eq!(holder().await, (Some(json!(newer)), json!(1)));
    // The older order's cancellation, then its creation once more: turned away.
    let a = deliver("order:cancelled", order_cancelled(&older, &id)).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let again = deliver("order:created", order_created(&older, &id)).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(holder().await, (Some(json!(newer)), json!(1)));

    // A newest order's creation before the holder's cancellation: it waits, then holds.
    let early = deliver("order:created", order_created(&newest, &id)).await;
    assert_eq!(early.status, 425, "{:?}", early.body);
    assert_eq!(holder().await, (Some(json!(newer)), json!(1)));
    let a = deliver("order:cancelled", order_cancelled(&newer, &id)).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(holder().await, (None, json!(2)));
    let again = deliver("order:created", order_created(&newest, &id)).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(holder().await, (Some(json!(newest)), json!(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_for_unknown_tickets_are_refused_and_other_subjects_ignored() {
    let stack = Stack::start().await;
    let a = stack
        .deliver(
            json!({"type": "order:created", "data": order_created(&object_id(), &object_id())}),
        )
        .await;
    a.assert_json_error();
    assert_eq!(a.status, 400);
    let a = stack
        .deliver(
            json!({"type": "order:cancelled", "data": order_cancelled(&object_id(), &object_id())}),
        )
        .await;
    assert_eq!(a.status, 400, "{:?}", a.body);
    // A malformed payload of a subject it consumes.
    let a = stack
        .deliver(json!({"type": "order:created", "data": {"id": "o"}}))
        .await;
    a.assert_json_error();
    // A subject it does not consume.
    let a = stack
        .deliver(json!({"type": "ticket:created", "data": {"anything": 1}}))
        .await;
    assert_eq!((a.status, a.body), (200, json!({})));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_updates_all_apply_with_consecutive_versions() {
    let stack = Stack::start().await;
    concurrent_updates(&stack, 10).await;
    stack.stop().await;
}

/// `n` concurrent PUTs of one ticket, spread over the replicas: every one succeeds, each
/// with its own version, 1 to `n`, and each version is published once.
async fn concurrent_updates(stack: &Stack, n: usize) {
    let owner = stack.cookie(&object_id());
    let ticket = stack.create_ticket(&owner, "concert", 20.0).await;
    let id = ticket["id"].as_str().expect("id").to_string();
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = format!(
            "{}/api/tickets/{id}",
            stack.tickets[i % stack.tickets.len()].url()
        );
        let (http, owner) = (stack.http.clone(), owner.clone());
        tasks.push(tokio::spawn(async move {
            let r = http
                .put(&url)
                .header("cookie", owner)
                .json(&json!({"title": format!("title {i}"), "price": 10 + i}))
                .send()
                .await
                .expect("request");
            let status = r.status().as_u16();
            let body: Value = r.json().await.expect("json");
            (status, body)
        }));
    }
    let mut versions = BTreeSet::new();
    for task in tasks {
        let (status, body) = task.await.expect("task");
        assert_eq!(status, 200, "{body}");
        assert!(versions.insert(body["version"].as_i64().expect("version")));
    }
    let expected: BTreeSet<i64> = (1..=i64::try_from(n).expect("n")).collect();
    assert_eq!(versions, expected);
    let last = stack.get(&format!("/api/tickets/{id}"), None).await.body;
    assert_eq!(last["version"], json!(n));
    let events = support::eventually("every update on the bus", || async {
        let events = updates_of(stack, &id).await;
        (events.len() >= n).then_some(events)
    })
    .await;
    let published: Vec<i64> = events
        .iter()
        .map(|e| e["data"]["version"].as_i64().expect("version"))
        .collect();
    assert_eq!(published, expected.into_iter().collect::<Vec<_>>());
    // The last event is the state the ticket was left in.
    assert_eq!(events[n - 1]["data"]["title"], last["title"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_postgres_database_never_lose_an_update() {
    let Some(database) = postgres::database_or_skip("tickets_occ").await else {
        return;
    };
    let stack = Stack::start_with(Options {
        database_url: Some(database.url.clone()),
        replicas: 3,
    })
    .await;
    concurrent_updates(&stack, 12).await;
    // The listener path on PostgreSQL too.
    let user = stack.cookie(&object_id());
    let ticket = stack.create_ticket(&user, "pg", 3.0).await;
    let id = ticket["id"].as_str().expect("id").to_string();
    let order = object_id();
    stack
        .publish(None, "order:created", order_created(&order, &id))
        .await;
    stack
        .wait_ticket(&id, "reserved on postgres", |t| {
            t["orderId"] == order.as_str()
        })
        .await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_json_4xx_never_a_5xx() {
    let stack = Stack::start().await;
    let user = stack.cookie(&object_id());
    let ticket = stack.create_ticket(&user, "concert", 20.0).await;
    let path = format!("/api/tickets/{}", ticket["id"].as_str().expect("id"));
    let post = reqwest::Method::POST;
    let put = reqwest::Method::PUT;

    // Wrong types: every field reported.
    for body in [
        json!({"title": 5, "price": "abc"}),
        json!({"title": ["x"], "price": {"n": 1}}),
        json!({"title": null, "price": null}),
        json!([]),
        json!("concert"),
        json!(null),
        json!({"title": "t", "price": "1e400"}),
    ] {
        for (method, p) in [(post.clone(), "/api/tickets"), (put.clone(), path.as_str())] {
            let a = stack
                .send(method, &stack.url(p), Some(&user), Some(&body))
                .await;
            a.assert_json_error();
            assert_eq!(a.status, 400, "{body}: {:?}", a.body);
        }
    }
    // Missing body, wrong content type, malformed JSON, too deep, too large.
    let deep: &'static [u8] = Box::leak(
        format!("{}{}", "[".repeat(200), "]".repeat(200))
            .into_bytes()
            .into_boxed_slice(),
    );
    let large: &'static [u8] = Box::leak(
        format!("{{\"title\": \"{}\", \"price\": 1}}", "x".repeat(70 * 1024))
            .into_bytes()
            .into_boxed_slice(),
    );
    for (content_type, body) in [
        (None, &b""[..]),
        (Some("application/json"), &b""[..]),
        (Some("text/plain"), &br#"{"title": "t", "price": 1}"#[..]),
        (Some("application/json"), &b"{\"title\": "[..]),
        (Some("application/json"), &b"\xff\xfe"[..]),
        (Some("application/json"), deep),
        (Some("application/json"), large),
    ] {
        for (method, p) in [(post.clone(), "/api/tickets"), (put.clone(), path.as_str())] {
            let a = stack
                .send_raw(method, &stack.url(p), Some(&user), content_type, body)
                .await;
            a.assert_json_error();
        }
    }
    // Ids that are not entity ids name no ticket.
    for id in [
        "zzz",
        "5f1b2c3d4e5f6a7b8c9d0e1",
        "5f1b2c3d4e5f6a7b8c9d0e1g",
        "%20",
        "..%2F",
    ] {
        let p = format!("/api/tickets/{id}");
        stack
            .get(&p, None)
            .await
            .assert_error(404, "Not Found", None);
        stack
            .put(&p, Some(&user), &json!({"title": "t", "price": 1}))
            .await
            .assert_error(404, "Not Found", None);
    }
    // Unknown routes and methods.
    stack
        .get("/api/tickets/a/b", None)
        .await
        .assert_error(404, "Not Found", None);
    let a = stack
        .send(
            reqwest::Method::DELETE,
            &stack.url(&path),
            Some(&user),
            None,
        )
        .await;
    assert_eq!(a.status, 405);
    a.assert_json_error();
    // A cookie that is not a session is "signed out".
    stack
        .post(
            "/api/tickets",
            Some("session=garbage"),
            &json!({"title": "t", "price": 1}),
        )
        .await
        .assert_error(401, "Not authorized", None);
    // Nothing of that changed the ticket.
    assert_eq!(stack.get(&path, None).await.body, ticket);
    stack.stop().await;
}

/// `switchyard republish tickets` writes each ticket's whole state, at its version and
/// marked as a snapshot, through the service's outbox; the running service publishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republishing_publishes_every_tickets_state_as_a_snapshot() {
    let stack = Stack::start().await;
    let cookie = stack.cookie(&object_id());
    let first = stack.create_ticket(&cookie, "one", 10.0).await;
    let second = stack.create_ticket(&cookie, "two", 20.0).await;
    let id = first["id"].as_str().expect("id").to_string();
    let a = stack
        .put(
            &format!("/api/tickets/{id}"),
            Some(&cookie),
            &json!({"title": "one, edited", "price": 11}),
        )
        .await;
    assert_eq!(a.status, 200);
    let common = switchyard_testkit::Replicas::config("tickets", stack.dir.path(), 0, None);
    let db = switchyard_kit::Db::connect(&common.database_url)
        .await
        .expect("the tickets database");
    let written = switchyard_tickets::republish(&db, None)
        .await
        .expect("republished");
    assert_eq!(written, 2);
    db.close().await;
    let snapshots = support::eventually("both snapshots on the bus", || async {
        let snapshots: Vec<Value> = stack
            .events("ticket:updated")
            .await
            .into_iter()
            .filter(|e| e["snapshot"] == true)
            .collect();
        (snapshots.len() == 2).then_some(snapshots)
    })
    .await;
    assert_eq!(snapshots[0]["data"]["id"], id.as_str());
    assert_eq!(snapshots[0]["data"]["title"], "one, edited");
    assert_eq!(snapshots[0]["data"]["version"], 1);
    assert_eq!(snapshots[1]["data"]["id"], second["id"]);
    assert_eq!(snapshots[1]["data"]["version"], 0);
    stack.stop().await;
}
