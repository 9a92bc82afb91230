//! The orders service over real HTTP, with an in-process event bus: the original's route
//! and listener tests as behaviour, one live order per ticket under races, the replica of
//! tickets in version order, expirations and payments, and bad input.

mod support;

use serde_json::{Value, json};
use support::{Options, Stack, postgres};
use switchyard_ticketing_contract::{is_object_id, object_id};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

fn ticket_updated(id: &str, version: i64, title: &str, price: f64) -> Value {
    json!({"id": id, "version": version, "title": title, "price": price, "userId": "seller"})
}

fn expiration(order_id: &str) -> Value {
    json!({"orderId": order_id})
}

fn payment(order_id: &str) -> Value {
    json!({"id": object_id(), "orderId": order_id, "stripeId": "ch_test"})
}

/// The `order:cancelled` events of order `id` on the bus.
async fn cancellations_of(stack: &Stack, id: &str) -> Vec<Value> {
    stack
        .events("order:cancelled")
        .await
        .into_iter()
        .filter(|e| e["data"]["id"] == id)
        .collect()
}

/// Publishes a `ticket:created` and waits for its replica: the bus delivers in log order,
/// so every event published before it has been handled by then.
async fn delivered_barrier(stack: &Stack) {
    stack.ticket("barrier", 1.0).await;
}

/// Creates an order and waits for its `order:created` on the bus: everything the service
/// committed before it has been relayed by then (the outbox publishes in commit order).
async fn published_barrier(stack: &Stack) {
    let ticket = stack.ticket("barrier", 1.0).await;
    let order = stack
        .create_order(&stack.cookie(&object_id()), &ticket)
        .await;
    let id = order["id"].clone();
    support::eventually("the barrier order on the bus", || async {
        stack
            .events("order:created")
            .await
            .iter()
            .any(|e| e["data"]["id"] == id)
            .then_some(())
    })
    .await;
}

fn seconds_from_now(expires_at: &str) -> f64 {
    let at = OffsetDateTime::parse(expires_at, &Rfc3339).expect("RFC 3339");
    (at - OffsetDateTime::now_utc()).as_seconds_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_an_order_reserves_the_ticket_and_publishes_order_created() {
    let stack = Stack::start().await;
    let ticket = stack.ticket("concert", 20.0).await;
    stack
        .post("/api/orders", None, &json!({"ticketId": ticket}))
        .await
        .assert_error(401, "Not authorized", None);
    let user_id = object_id();
    let user = stack.cookie(&user_id);
    for bad in [
        json!({}),
        json!({"ticketId": ""}),
        json!({"ticketId": "abc"}),
        json!({"ticketId": 42}),
    ] {
        stack
            .post("/api/orders", Some(&user), &bad)
            .await
            .assert_error(400, "TicketId must be provided", Some("ticketId"));
    }
    stack
        .order(&user, &object_id())
        .await
        .assert_error(404, "Not Found", None);

    let created = stack.order(&user, &ticket).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let order = created.body;
    let id = order["id"].as_str().expect("id").to_string();
    assert!(is_object_id(&id), "{id}");
    let expires_at = order["expiresAt"].as_str().expect("expiresAt").to_string();
    assert!(expires_at.ends_with('Z'), "{expires_at}");
    let left = seconds_from_now(&expires_at);
    assert!((890.0..=901.0).contains(&left), "{left}");
    assert_eq!(
        order,
        json!({
            "id": id,
            "userId": user_id,
            "status": "created",
            "expiresAt": expires_at,
            "ticket": {"id": ticket, "title": "concert", "price": 20, "version": 0},
            "version": 0,
        })
    );
    let events = stack.wait_events("order:created", 1).await;
    let data = &events[0]["data"];
    assert_eq!(data["ticket"]["price"].as_f64(), Some(20.0));
    assert_eq!(
        data,
        &json!({
            "id": id,
            "version": 0,
            "status": "created",
            "userId": user_id,
            "expiresAt": expires_at,
            "ticket": {"id": ticket, "price": data["ticket"]["price"]},
        })
    );

    // Reserved: for anyone, this user included.
    for who in [stack.cookie(&object_id()), user.clone()] {
        stack
            .order(&who, &ticket)
            .await
            .assert_error(400, "Ticket is already reserved", None);
    }
    // Once the order is cancelled, the ticket can be ordered again.
    assert_eq!(
        stack
            .delete(&format!("/api/orders/{id}"), Some(&user))
            .await
            .status,
        204
    );
    let again = stack.order(&stack.cookie(&object_id()), &ticket).await;
    assert_eq!(again.status, 201, "{:?}", again.body);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_comes_from_expiration_window_seconds() {
    let stack = Stack::start_with(Options {
        env: vec![("EXPIRATION_WINDOW_SECONDS", "60")],
        ..Options::default()
    })
    .await;
    let ticket = stack.ticket("concert", 20.0).await;
    let order = stack
        .create_order(&stack.cookie(&object_id()), &ticket)
        .await;
    let left = seconds_from_now(order["expiresAt"].as_str().expect("expiresAt"));
    assert!((50.0..=61.0).contains(&left), "{left}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_lists_only_the_users_orders_with_their_tickets() {
    let stack = Stack::start().await;
    let (one, two) = (stack.cookie(&object_id()), stack.cookie(&object_id()));
    let (t1, t2, t3) = (
        stack.ticket("one", 1.0).await,
        stack.ticket("two", 2.5).await,
        stack.ticket("three", 3.0).await,
    );
    let o1 = stack.create_order(&one, &t1).await;
    let o2 = stack.create_order(&two, &t2).await;
    let o3 = stack.create_order(&two, &t3).await;
    stack
        .get("/api/orders", None)
        .await
        .assert_error(401, "Not authorized", None);
    let listed = stack.get("/api/orders", Some(&two)).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body, json!([o2, o3]));
    assert_eq!(listed.body[0]["ticket"]["title"], "two");
    assert_eq!(listed.body[0]["ticket"]["price"], json!(2.5));
    assert_eq!(stack.get("/api/orders", Some(&one)).await.body, json!([o1]));
    assert_eq!(
        stack
            .get("/api/orders", Some(&stack.cookie(&object_id())))
            .await
            .body,
        json!([])
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn showing_an_order_is_for_its_owner() {
    let stack = Stack::start().await;
    let user = stack.cookie(&object_id());
    let ticket = stack.ticket("concert", 20.0).await;
    let order = stack.create_order(&user, &ticket).await;
    let path = format!("/api/orders/{}", order["id"].as_str().expect("id"));
    stack
        .get(&path, None)
        .await
        .assert_error(401, "Not authorized", None);
    stack
        .get(&format!("/api/orders/{}", object_id()), Some(&user))
        .await
        .assert_error(404, "Not Found", None);
    stack
        .get(&path, Some(&stack.cookie(&object_id())))
        .await
        .assert_error(401, "Not authorized", None);
    let shown = stack.get(&path, Some(&user)).await;
    assert_eq!((shown.status, &shown.body), (200, &order));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_order() {
    let stack = Stack::start().await;
    let user = stack.cookie(&object_id());
    let ticket = stack.ticket("concert", 20.0).await;
    let order = stack.create_order(&user, &ticket).await;
    let id = order["id"].as_str().expect("id").to_string();
    let path = format!("/api/orders/{id}");
    stack
        .delete(&path, None)
        .await
        .assert_error(401, "Not authorized", None);
    stack
        .delete(&format!("/api/orders/{}", object_id()), Some(&user))
        .await
        .assert_error(404, "Not Found", None);
    stack
        .delete(&path, Some(&stack.cookie(&object_id())))
        .await
        .assert_error(401, "Not authorized", None);

    let deleted = stack.delete(&path, Some(&user)).await;
    assert_eq!((deleted.status, &deleted.body), (204, &Value::Null));
    let shown = stack.get(&path, Some(&user)).await.body;
    assert_eq!(
        (&shown["status"], &shown["version"]),
        (&json!("cancelled"), &json!(1))
    );
    let events = stack.wait_events("order:cancelled", 1).await;
    assert_eq!(
        events[0]["data"],
        json!({"id": id, "version": 1, "ticket": {"id": ticket}})
    );

    // Again: 204, and no second event.
    assert_eq!(stack.delete(&path, Some(&user)).await.status, 204);
    published_barrier(&stack).await;
    assert_eq!(cancellations_of(&stack, &id).await.len(), 1);
    assert_eq!(stack.get(&path, Some(&user)).await.body, shown);

    // A paid order cannot be cancelled.
    let ticket = stack.ticket("paid", 5.0).await;
    let paid = stack.create_order(&user, &ticket).await;
    let paid_id = paid["id"].as_str().expect("id").to_string();
    stack
        .publish(None, "payment:created", payment(&paid_id))
        .await;
    stack
        .wait_order(&user, &paid_id, "paid", |o| o["status"] == "complete")
        .await;
    stack
        .delete(&format!("/api/orders/{paid_id}"), Some(&user))
        .await
        .assert_error(400, "Cannot cancel a complete order", None);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_buyers_racing_for_one_ticket_get_one_order() {
    let stack = Stack::start().await;
    race(&stack, 20).await;
    stack.stop().await;
}

/// `n` users order one ticket at the same moment, spread over the replicas: exactly one
/// order is created, every other buyer is told the ticket is reserved.
async fn race(stack: &Stack, n: usize) {
    let ticket = stack.ticket("popular", 50.0).await;
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = format!("{}/api/orders", stack.orders[i % stack.orders.len()].url());
        let (http, cookie) = (stack.http.clone(), stack.cookie(&object_id()));
        let ticket = ticket.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(&url)
                .header("cookie", cookie)
                .json(&json!({"ticketId": ticket}))
                .send()
                .await
                .expect("request");
            let status = r.status().as_u16();
            let body: Value = r.json().await.expect("json");
            (status, body)
        }));
    }
    let mut created = 0;
    for task in tasks {
        let (status, body) = task.await.expect("task");
        match status {
            201 => created += 1,
            400 => assert_eq!(body["errors"][0]["message"], "Ticket is already reserved"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(created, 1);
    let count: i64 = {
        use sqlx::Row;
        sqlx::query("SELECT COUNT(*) FROM orders WHERE ticket_id = $1")
            .bind(&ticket)
            .fetch_one(stack.db.reader())
            .await
            .expect("count")
            .try_get(0)
            .expect("count")
    };
    assert_eq!(count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_postgres_database_create_one_order_per_ticket() {
    let Some(database) = postgres::database_or_skip("orders_race").await else {
        return;
    };
    let stack = Stack::start_with(Options {
        database_url: Some(database.url.clone()),
        replicas: 3,
        ..Options::default()
    })
    .await;
    race(&stack, 24).await;
    // The replica and the handlers on PostgreSQL too.
    let ticket = stack.ticket("pg", 3.0).await;
    stack
        .publish(
            None,
            "ticket:updated",
            ticket_updated(&ticket, 1, "pg v1", 4.0),
        )
        .await;
    assert_eq!(
        stack.wait_replica(&ticket, 1).await,
        ("pg v1".to_string(), 4.0, 1)
    );
    let user = stack.cookie(&object_id());
    let order = stack.create_order(&user, &ticket).await;
    let id = order["id"].as_str().expect("id").to_string();
    stack
        .publish(None, "payment:expired", expiration(&id))
        .await;
    stack
        .wait_order(&user, &id, "expired", |o| o["status"] == "cancelled")
        .await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_applies_ticket_versions_in_order() {
    let stack = Stack::start().await;
    let id = stack.ticket("concert", 20.0).await;
    assert_eq!(
        stack.replica(&id).await,
        Some(("concert".to_string(), 20.0, 0))
    );
    stack
        .publish(
            Some("upd-1"),
            "ticket:updated",
            ticket_updated(&id, 1, "v1", 21.0),
        )
        .await;
    stack
        .publish(None, "ticket:updated", ticket_updated(&id, 2, "v2", 22.5))
        .await;
    assert_eq!(
        stack.wait_replica(&id, 2).await,
        ("v2".to_string(), 22.5, 2)
    );
    // An order shows the replica's state.
    let order = stack.create_order(&stack.cookie(&object_id()), &id).await;
    assert_eq!(
        order["ticket"],
        json!({"id": id, "title": "v2", "price": 22.5, "version": 2})
    );

    // An older version (a new event carrying it) and a redelivered one change nothing.
    let a = stack
        .deliver(json!({"type": "ticket:updated", "data": ticket_updated(&id, 1, "old", 1.0)}))
        .await;
    assert_eq!((a.status, a.body), (200, json!({})));
    let a = stack
        .deliver(json!({"id": "upd-1", "type": "ticket:updated", "data": ticket_updated(&id, 1, "v1", 21.0)}))
        .await;
    assert_eq!((a.status, a.body), (200, json!({})));
    // A duplicate ticket:created does not reset it.
    let a = stack
        .deliver(json!({"type": "ticket:created", "data": {"id": id, "version": 0, "title": "again", "price": 1, "userId": "seller"}}))
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(stack.replica(&id).await, Some(("v2".to_string(), 22.5, 2)));

    // A gap, or a ticket not replicated yet: not yet (425), nothing applied.
    for data in [
        ticket_updated(&id, 4, "v4", 1.0),
        ticket_updated(&object_id(), 1, "unknown", 1.0),
    ] {
        let a = stack
            .deliver(json!({"type": "ticket:updated", "data": data}))
            .await;
        assert_eq!(a.status, 425, "{:?}", a.body);
        a.assert_json_error();
    }
    assert_eq!(stack.replica(&id).await, Some(("v2".to_string(), 22.5, 2)));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_overtakes_its_predecessor_waits_for_it() {
    let mut stack = Stack::start().await;
    let id = stack.ticket("concert", 20.0).await;
    let v2 = ticket_updated(&id, 2, "v2", 22.0);
    // Delivered before v1: "not yet", and not recorded as handled.
    let a = stack
        .deliver(json!({"id": "v2-event", "type": "ticket:updated", "data": v2}))
        .await;
    assert_eq!(a.status, 425, "{:?}", a.body);
    // The same event through a second path, which keeps redelivering it...
    let second = stack.second_bus().await;
    stack
        .publish_to(&second, Some("v2-event"), "ticket:updated", v2)
        .await;
    support::eventually("the second path to be told \"not yet\"", || async {
        (stack.consumed("deferred").await >= 2).then_some(())
    })
    .await;
    assert_eq!(
        stack.replica(&id).await,
        Some(("concert".to_string(), 20.0, 0))
    );
    // ...until v1 arrives through the first.
    stack
        .publish(None, "ticket:updated", ticket_updated(&id, 1, "v1", 21.0))
        .await;
    assert_eq!(
        stack.wait_replica(&id, 2).await,
        ("v2".to_string(), 22.0, 2)
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_expiry_verdict_cancels_only_an_order_that_is_not_paid_or_cancelled() {
    let stack = Stack::start().await;
    let user = stack.cookie(&object_id());

    // A created order: cancelled, order:cancelled published.
    let ticket = stack.ticket("concert", 20.0).await;
    let order = stack.create_order(&user, &ticket).await;
    let id = order["id"].as_str().expect("id").to_string();
    stack
        .publish(Some("exp-1"), "payment:expired", expiration(&id))
        .await;
    let expired = stack
        .wait_order(&user, &id, "expired", |o| o["status"] == "cancelled")
        .await;
    assert_eq!(expired["version"], 1);
    let events = support::eventually("order:cancelled", || async {
        let events = cancellations_of(&stack, &id).await;
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(
        events[0]["data"],
        json!({"id": id, "version": 1, "ticket": {"id": ticket}})
    );

    // Redelivered, and expired again: nothing more.
    let a = stack
        .deliver(json!({"id": "exp-1", "type": "payment:expired", "data": expiration(&id)}))
        .await;
    assert_eq!((a.status, a.body), (200, json!({})));
    stack
        .publish(None, "payment:expired", expiration(&id))
        .await;

    // A new order holds the ticket now; the first order's late expiration leaves it alone.
    let next = stack.create_order(&user, &ticket).await;
    let next_id = next["id"].as_str().expect("id").to_string();
    stack
        .publish(None, "payment:expired", expiration(&id))
        .await;

    // A paid order does not expire.
    let paid_ticket = stack.ticket("paid", 5.0).await;
    let paid = stack.create_order(&user, &paid_ticket).await;
    let paid_id = paid["id"].as_str().expect("id").to_string();
    stack
        .publish(None, "payment:created", payment(&paid_id))
        .await;
    stack
        .publish(None, "payment:expired", expiration(&paid_id))
        .await;

    delivered_barrier(&stack).await;
    published_barrier(&stack).await;
    assert_eq!(
        stack
            .get(&format!("/api/orders/{id}"), Some(&user))
            .await
            .body,
        expired
    );
    let next_now = stack
        .get(&format!("/api/orders/{next_id}"), Some(&user))
        .await
        .body;
    assert_eq!(
        (&next_now["status"], &next_now["version"]),
        (&json!("created"), &json!(0))
    );
    stack
        .order(&stack.cookie(&object_id()), &ticket)
        .await
        .assert_error(400, "Ticket is already reserved", None);
    let paid_now = stack
        .get(&format!("/api/orders/{paid_id}"), Some(&user))
        .await
        .body;
    assert_eq!(
        (&paid_now["status"], &paid_now["version"]),
        (&json!("complete"), &json!(1))
    );
    assert_eq!(cancellations_of(&stack, &id).await.len(), 1);
    assert!(cancellations_of(&stack, &next_id).await.is_empty());
    assert!(cancellations_of(&stack, &paid_id).await.is_empty());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_completes_an_order_but_not_a_cancelled_one() {
    let stack = Stack::start().await;
    let user = stack.cookie(&object_id());
    let ticket = stack.ticket("concert", 20.0).await;
    let order = stack.create_order(&user, &ticket).await;
    let id = order["id"].as_str().expect("id").to_string();
    let pay = payment(&id);
    stack
        .publish(Some("pay-1"), "payment:created", pay.clone())
        .await;
    let paid = stack
        .wait_order(&user, &id, "paid", |o| o["status"] == "complete")
        .await;
    assert_eq!(paid["version"], 1);
    // Redelivered: nothing changes.
    let a = stack
        .deliver(json!({"id": "pay-1", "type": "payment:created", "data": pay}))
        .await;
    assert_eq!((a.status, a.body), (200, json!({})));
    assert_eq!(
        stack
            .get(&format!("/api/orders/{id}"), Some(&user))
            .await
            .body,
        paid
    );

    // A payment for a cancelled order changes nothing.
    let other_ticket = stack.ticket("other", 5.0).await;
    let cancelled = stack.create_order(&user, &other_ticket).await;
    let cancelled_id = cancelled["id"].as_str().expect("id").to_string();
    let path = format!("/api/orders/{cancelled_id}");
    assert_eq!(stack.delete(&path, Some(&user)).await.status, 204);
    stack
        .publish(None, "payment:created", payment(&cancelled_id))
        .await;
    delivered_barrier(&stack).await;
    let now = stack.get(&path, Some(&user)).await.body;
    assert_eq!(
        (&now["status"], &now["version"]),
        (&json!("cancelled"), &json!(1))
    );

    // Events about orders this service never created are refused, not retried.
    for (event_type, data) in [
        ("payment:created", payment(&object_id())),
        ("payment:expired", expiration(&object_id())),
    ] {
        let a = stack
            .deliver(json!({"type": event_type, "data": data}))
            .await;
        assert_eq!(a.status, 400, "{:?}", a.body);
        a.assert_json_error();
    }
    // Subjects it does not consume are acknowledged and ignored.
    let a = stack
        .deliver(json!({"type": "order:created", "data": {"x": 1}}))
        .await;
    assert_eq!((a.status, a.body), (200, json!({})));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_json_4xx_never_a_5xx() {
    let stack = Stack::start().await;
    let user = stack.cookie(&object_id());
    let ticket = stack.ticket("concert", 20.0).await;
    let order = stack.create_order(&user, &ticket).await;
    let path = format!("/api/orders/{}", order["id"].as_str().expect("id"));

    for body in [
        json!({"ticketId": ["x"]}),
        json!({"ticketId": {"id": ticket}}),
        json!({"ticketId": null}),
        json!({"ticketId": true}),
        json!({"ticketId": format!("{ticket} ")}),
        json!({"ticketId": "x".repeat(10_000)}),
    ] {
        stack
            .post("/api/orders", Some(&user), &body)
            .await
            .assert_error(400, "TicketId must be provided", Some("ticketId"));
    }
    for body in [json!([]), json!("ticket"), json!(null)] {
        stack
            .post("/api/orders", Some(&user), &body)
            .await
            .assert_error(400, "the body must be a JSON object", None);
    }
    let deep: &'static [u8] = Box::leak(
        format!("{}{}", "[".repeat(200), "]".repeat(200))
            .into_bytes()
            .into_boxed_slice(),
    );
    let large: &'static [u8] = Box::leak(
        format!("{{\"ticketId\": \"{}\"}}", "x".repeat(70 * 1024))
            .into_bytes()
            .into_boxed_slice(),
    );
    for (content_type, body) in [
        (None, &b""[..]),
        (Some("application/json"), &b""[..]),
        (
            Some("text/plain"),
            &br#"{"ticketId": "5f1b2c3d4e5f6a7b8c9d0e1f"}"#[..],
        ),
        (Some("application/json"), &b"{\"ticketId\": "[..]),
        (Some("application/json"), &b"\xff\xfe"[..]),
        (Some("application/json"), deep),
        (Some("application/json"), large),
    ] {
        let a = stack
            .send_raw(
                reqwest::Method::POST,
                &stack.url("/api/orders"),
                Some(&user),
                content_type,
                body,
            )
            .await;
        a.assert_json_error();
    }
    for id in [
        "zzz",
        "5f1b2c3d4e5f6a7b8c9d0e1",
        "5f1b2c3d4e5f6a7b8c9d0e1g",
        "%20",
        "..%2F",
    ] {
        let p = format!("/api/orders/{id}");
        stack
            .get(&p, Some(&user))
            .await
            .assert_error(404, "Not Found", None);
        stack
            .delete(&p, Some(&user))
            .await
            .assert_error(404, "Not Found", None);
    }
    stack
        .get("/api/orders/a/b", Some(&user))
        .await
        .assert_error(404, "Not Found", None);
    let a = stack
        .send(
            reqwest::Method::PUT,
            &stack.url(&path),
            Some(&user),
            Some(&json!({})),
        )
        .await;
    assert_eq!(a.status, 405);
    a.assert_json_error();
    stack
        .get("/api/orders", Some("session=garbage"))
        .await
        .assert_error(401, "Not authorized", None);
    // Malformed events are refused with the JSON error body.
    for event in [
        json!({"type": "ticket:created", "data": {"id": "t"}}),
        json!({"type": "ticket:updated", "data": {"id": "t", "version": -1, "title": "x", "price": 1, "userId": "u"}}),
        json!({"type": "payment:expired", "data": {}}),
        json!({"type": "payment:created", "data": []}),
        json!({"data": {}}),
        json!([]),
    ] {
        stack.deliver(event).await.assert_json_error();
    }
    // Nothing of that changed the order.
    assert_eq!(stack.get(&path, Some(&user)).await.body, order);
    // The bus refuses a malformed payload at the door (the contract check).
    let a = stack
        .send(
            reqwest::Method::POST,
            &format!("{}/events", stack.bus.url()),
            None,
            Some(&json!({"type": "payment:expired", "data": {"orderId": 5}})),
        )
        .await;
    assert_eq!(a.status, 400);
    stack.stop().await;
}

/// Tickets republishes a ticket's whole state (`switchyard republish tickets`) when a
/// replica may have lost an update: the replica takes it when it is newer, skipping the
/// versions it never got, and ignores an older or equal one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republished_ticket_state_skips_the_versions_that_were_lost() {
    let stack = Stack::start().await;
    let id = stack.ticket("concert", 20.0).await;
    // Versions 1 and 2 were lost; the snapshot at version 3 is taken.
    let a = stack
        .deliver(json!({"type": "ticket:updated", "snapshot": true, "data": ticket_updated(&id, 3, "v3", 23.0)}))
        .await;
    assert_eq!((a.status, a.body), (200, json!({})));
    assert_eq!(stack.replica(&id).await, Some(("v3".to_string(), 23.0, 3)));
    // An older snapshot, or the lost versions arriving late, change nothing.
    for event in [
        json!({"type": "ticket:updated", "snapshot": true, "data": ticket_updated(&id, 2, "old", 1.0)}),
        json!({"type": "ticket:updated", "data": ticket_updated(&id, 2, "old", 1.0)}),
    ] {
        let a = stack.deliver(event).await;
        assert_eq!((a.status, a.body), (200, json!({})));
    }
    assert_eq!(stack.replica(&id).await, Some(("v3".to_string(), 23.0, 3)));
    // A snapshot of a ticket the replica never heard of creates it.
    let unknown = object_id();
    let a = stack
        .deliver(json!({"type": "ticket:updated", "snapshot": true, "data": ticket_updated(&unknown, 5, "found", 9.0)}))
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        stack.replica(&unknown).await,
        Some(("found".to_string(), 9.0, 5))
    );
    stack.stop().await;
}

/// An order shows the title and price it was placed at (and is charged that price): the
/// seller editing the ticket before tickets has reserved it changes the replica, not the
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_keeps_the_title_and_price_it_was_placed_at() {
    let stack = Stack::start().await;
    let user = stack.cookie(&object_id());
    let id = stack.ticket("concert", 20.0).await;
    let order = stack.create_order(&user, &id).await;
    let order_id = order["id"].as_str().expect("id").to_string();
    assert_eq!(order["ticket"]["price"], 20);
    stack
        .publish(
            None,
            "ticket:updated",
            ticket_updated(&id, 1, "renamed", 99.0),
        )
        .await;
    assert_eq!(
        stack.wait_replica(&id, 1).await,
        ("renamed".to_string(), 99.0, 1)
    );
    let shown = stack
        .get(&format!("/api/orders/{order_id}"), Some(&user))
        .await
        .body;
    assert_eq!(shown["ticket"]["title"], "concert");
    assert_eq!(shown["ticket"]["price"], 20);
    let listed = stack.get("/api/orders", Some(&user)).await.body;
    assert_eq!(listed[0]["ticket"]["title"], "concert");
    let created = stack.events("order:created").await;
    let event = created
        .iter()
        .find(|e| e["data"]["id"] == order_id.as_str())
        .expect("order:created");
    assert_eq!(
        event["data"]["ticket"]["price"], 20.0,
        "charged what was shown"
    );
    stack.stop().await;
}
