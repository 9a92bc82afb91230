//! The ticketing app's services together, through real HTTP, on both backends: the
//! original's route and listener tests as behaviour across services, and where the original
//! could sell a ticket twice, pay an order twice or lose a timer, that ours does not.

use crate::per_backend;
use crate::support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::backend::Backend;
use support::http::{Answer, Client};
use support::ticketing::Ticketing;

per_backend!(
    a_ticket_is_sold_reserved_paid_and_complete_across_the_services,
    a_request_s_trace_follows_its_events_across_the_services,
    a_cancellation_that_overtakes_its_creation_leaves_the_ticket_for_sale,
    orders_following_each_other_on_a_ticket_leave_it_with_the_live_one,
    twenty_buyers_racing_for_one_ticket_get_exactly_one_order,
    ten_concurrent_updates_of_one_ticket_get_consecutive_versions,
    concurrent_payments_of_one_order_charge_once,
    an_unpaid_order_expires_and_its_ticket_is_for_sale_again,
    timers_survive_the_expiration_service_being_killed,
    redelivered_and_reordered_events_change_nothing,
    bad_input_on_every_route_gets_a_4xx_json_error,
    a_huge_request_id_on_every_write_keeps_its_events,
    a_forged_event_on_any_port_changes_nothing,
    readiness_is_the_own_database_while_the_bus_is_away,
    a_dead_letter_is_listed_shown_and_replayed_once,
    a_payment_answered_201_is_final_around_the_expiry,
);

const ALL: &[&str] = &["auth", "tickets", "orders", "expiration", "payments"];

/// A signed-in user: its id and cookie.
struct User {
    id: String,
    cookie: String,
}

async fn signup(c: &Client, t: &Ticketing, email: &str) -> User {
    let a = c
        .post_json(
            &format!("{}/api/users/signup", t.url("auth")),
            &json!({"email": email, "password": "password"}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    let cookie = a
        .set_cookies
        .iter()
        .find(|c| c.starts_with("session="))
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_string();
    User {
        id: a.json()["id"].as_str().expect("id").to_string(),
        cookie,
    }
}

async fn call(
    c: &Client,
    method: Method,
    url: &str,
    user: Option<&User>,
    body: Option<Value>,
) -> Answer {
    c.with_cookie(method, url, user.map(|u| u.cookie.as_str()), body.as_ref())
        .await
}

async fn sell(c: &Client, t: &Ticketing, user: &User, title: &str, price: f64) -> Value {
    let a = call(
        c,
        Method::POST,
        &format!("{}/api/tickets", t.url("tickets")),
        Some(user),
        Some(json!({"title": title, "price": price})),
    )
    .await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    a.json()
}

async fn place_order(c: &Client, t: &Ticketing, buyer: &User, ticket_id: &str) -> Answer {
    call(
        c,
        Method::POST,
        &format!("{}/api/orders", t.url("orders")),
        Some(buyer),
        Some(json!({"ticketId": ticket_id})),
    )
    .await
}

/// Orders the ticket once its replica knows it; returns the order.
async fn buy(c: &Client, t: &Ticketing, buyer: &User, ticket_id: &str) -> Value {
    let a = support::eventually("the order to be created", || async {
        let a = place_order(c, t, buyer, ticket_id).await;
        (a.status != 404).then_some(a)
    })
    .await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    a.json()
}

async fn get_json(c: &Client, url: &str, user: Option<&User>) -> (u16, Value) {
    let a = call(c, Method::GET, url, user, None).await;
    let v = if a.body.is_empty() {
        Value::Null
    } else {
        a.json()
    };
    (a.status, v)
}

async fn order_status(c: &Client, t: &Ticketing, buyer: &User, order_id: &str) -> String {
    let (_, v) = get_json(
        c,
        &format!("{}/api/orders/{order_id}", t.url("orders")),
        Some(buyer),
    )
    .await;
    v["status"].as_str().unwrap_or("").to_string()
}

async fn eventually_status(c: &Client, t: &Ticketing, buyer: &User, order_id: &str, want: &str) {
    support::eventually(&format!("order {order_id} to be {want}"), || async {
        (order_status(c, t, buyer, order_id).await == want).then_some(())
    })
    .await;
}

async fn listed(c: &Client, t: &Ticketing, ticket_id: &str) -> bool {
    let (_, v) = get_json(c, &format!("{}/api/tickets", t.url("tickets")), None).await;
    v.as_array()
        .is_some_and(|a| a.iter().any(|x| x["id"] == ticket_id))
}

/// How many `order:*` events the tickets service has handled (applied, ignored or
/// recognised as duplicates), from its metrics: deferred and failed attempts do not count.
async fn order_events_handled(c: &Client, t: &Ticketing) -> usize {
    let metrics = format!("{}/metrics", t.ops_url("tickets"));
    let text = String::from_utf8_lossy(&c.get(&metrics).await.body).into_owned();
    let handled: f64 = text
        .lines()
        .filter(|l| l.starts_with("switchyard_events_consumed_total{") && l.contains("order:"))
        .filter(|l| !l.contains("\"deferred\"") && !l.contains("\"failed\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    handled as usize
}

/// Pays with the test provider's `tok_visa` once payments knows the order.
async fn pay(c: &Client, t: &Ticketing, buyer: &User, order_id: &str, token: &str) -> Answer {
    support::eventually("payments to know the order", || async {
        let a = call(
            c,
            Method::POST,
            &format!("{}/api/payments", t.url("payments")),
            Some(buyer),
            Some(json!({"token": token, "orderId": order_id})),
        )
        .await;
        (a.status != 404).then_some(a)
    })
    .await
}

/// The trace id of an event as the bus holds it (`traceparent`), if it carries one.
fn trace_of(event: &Value) -> Option<String> {
    let header = event["traceparent"].as_str()?;
    let parts: Vec<&str> = header.split('-').collect();
    (parts.len() == 4 && parts[1].len() == 32).then(|| parts[1].to_string())
}

/// A request's W3C trace context travels in the events it causes, stored with them at
/// commit, and on through what consumers publish in turn: `POST /api/orders` sent with a
/// `traceparent` gives its `order:created`, and the `ticket:updated` tickets publishes on
/// applying it, that trace; a request without one starts a trace of its own.
async fn a_request_s_trace_follows_its_events_across_the_services(backend: Backend) {
    let t = Ticketing::start_on(backend, ALL).await;
    let c = Client::default();
    let seller = signup(&c, &t, "seller@test.com").await;
    let buyer = signup(&c, &t, "buyer@test.com").await;
    let ticket = sell(&c, &t, &seller, "concert", 20.0).await;
    let ticket_id = ticket["id"].as_str().expect("id").to_string();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    let order = support::eventually("the order to be created", || async {
        let a = c
            .with_headers(
                Method::POST,
                &format!("{}/api/orders", t.url("orders")),
                Some(&buyer.cookie),
                Some(&json!({ "ticketId": ticket_id })),
                &[("traceparent", traceparent.as_str())],
            )
            .await;
        (a.status != 404).then_some(a)
    })
    .await;
    assert_eq!(
        order.status,
        201,
        "{}",
        String::from_utf8_lossy(&order.body)
    );
    let order_id = order.json()["id"].as_str().expect("id").to_string();
    let events = support::eventually("the reservation's ticket:updated", || async {
        let events = t.events().await;
        events
            .iter()
            .any(|e| e["type"] == "ticket:updated" && e["data"]["orderId"] == order_id.as_str())
            .then_some(events)
    })
    .await;
    let created = events
        .iter()
        .find(|e| e["type"] == "ticket:created" && e["data"]["id"] == ticket_id.as_str())
        .expect("ticket:created");
    let own = trace_of(created).expect("a request without a traceparent starts a trace");
    assert_ne!(own, trace);
    let ordered = events
        .iter()
        .find(|e| e["type"] == "order:created" && e["data"]["id"] == order_id.as_str())
        .expect("order:created");
    assert_eq!(trace_of(ordered).as_deref(), Some(trace), "{ordered}");
    // The event's own span is a child of the request's, not the caller's span itself.
    assert_ne!(ordered["traceparent"], traceparent.as_str());
    let reserved = events
        .iter()
        .find(|e| e["type"] == "ticket:updated" && e["data"]["orderId"] == order_id.as_str())
        .expect("ticket:updated");
    assert_eq!(trace_of(reserved).as_deref(), Some(trace), "{reserved}");
    t.shutdown().await;
}

async fn a_ticket_is_sold_reserved_paid_and_complete_across_the_services(backend: Backend) {
    let t = Ticketing::start_on(backend, ALL).await;
    let c = Client::default();
    let seller = signup(&c, &t, "seller@test.com").await;
    let buyer = signup(&c, &t, "buyer@test.com").await;
    let ticket = sell(&c, &t, &seller, "concert", 20.0).await;
    let ticket_id = ticket["id"].as_str().expect("id").to_string();
    assert_eq!(ticket["version"], 0);
    assert_eq!(ticket["userId"], seller.id.as_str());
    assert!(listed(&c, &t, &ticket_id).await);
    let order = buy(&c, &t, &buyer, &ticket_id).await;
    assert_eq!(order["status"], "created");
    assert_eq!(order["ticket"]["id"], ticket_id.as_str());
    assert_eq!(order["userId"], buyer.id.as_str());
    let order_id = order["id"].as_str().expect("id").to_string();
    // tickets applies order:created: the ticket is reserved, no longer listed, version 1.
    support::eventually("the ticket to be reserved", || async {
        let (_, v) = get_json(
            &c,
            &format!("{}/api/tickets/{ticket_id}", t.url("tickets")),
            None,
        )
        .await;
        (v["orderId"] == order_id.as_str() && v["version"] == 1).then_some(())
    })
    .await;
    assert!(!listed(&c, &t, &ticket_id).await);
    // A reserved ticket cannot be edited, nor ordered again.
    let a = call(
        &c,
        Method::PUT,
        &format!("{}/api/tickets/{ticket_id}", t.url("tickets")),
        Some(&seller),
        Some(json!({"title": "new", "price": 30})),
    )
    .await;
    a.assert_error(400, None);
    assert_eq!(
        a.json()["errors"][0]["message"],
        "Cannot edit a reserved ticket"
    );
    let other = signup(&c, &t, "other@test.com").await;
    let a = place_order(&c, &t, &other, &ticket_id).await;
    a.assert_error(400, None);
    assert_eq!(
        a.json()["errors"][0]["message"],
        "Ticket is already reserved"
    );
    // Someone else's order: 401; the buyer's list has it.
    let (status, _) = get_json(
        &c,
        &format!("{}/api/orders/{order_id}", t.url("orders")),
        Some(&other),
    )
    .await;
    assert_eq!(status, 401);
    let (_, mine) = get_json(&c, &format!("{}/api/orders", t.url("orders")), Some(&buyer)).await;
    assert_eq!(mine.as_array().map(Vec::len), Some(1));
    assert_eq!(mine[0]["ticket"]["title"], "concert");
    // Paying: a declined card first (the order stays payable), then tok_visa.
    let a = pay(&c, &t, &buyer, &order_id, "tok_chargeDeclined").await;
    a.assert_error(400, None);
    assert!(
        a.json()["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("declined")),
        "{}",
        a.json()
    );
    let a = pay(&c, &t, &buyer, &order_id, "tok_visa").await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    assert!(a.json()["id"].is_string());
    eventually_status(&c, &t, &buyer, &order_id, "complete").await;
    // Paid once: a second payment is refused; a complete order cannot be cancelled and its
    // expiry (were it to come) would not cancel it.
    let a = pay(&c, &t, &buyer, &order_id, "tok_visa").await;
    a.assert_error(400, None);
    let a = call(
        &c,
        Method::DELETE,
        &format!("{}/api/orders/{order_id}", t.url("orders")),
        Some(&buyer),
        None,
    )
    .await;
    a.assert_error(400, None);
    assert_eq!(order_status(&c, &t, &buyer, &order_id).await, "complete");
    // Cancelling another order frees its ticket.
    let second = sell(&c, &t, &seller, "play", 5.0).await;
    let second_id = second["id"].as_str().expect("id").to_string();
    let o = buy(&c, &t, &buyer, &second_id).await;
    let o_id = o["id"].as_str().expect("id").to_string();
    support::eventually("the second ticket reserved", || async {
        (!listed(&c, &t, &second_id).await).then_some(())
    })
    .await;
    let a = call(
        &c,
        Method::DELETE,
        &format!("{}/api/orders/{o_id}", t.url("orders")),
        Some(&buyer),
        None,
    )
    .await;
    assert_eq!(a.status, 204);
    eventually_status(&c, &t, &buyer, &o_id, "cancelled").await;
    support::eventually("the cancelled order's ticket for sale again", || async {
        listed(&c, &t, &second_id).await.then_some(())
    })
    .await;
    // A payment for the cancelled order is refused.
    let a = pay(&c, &t, &buyer, &o_id, "tok_visa").await;
    a.assert_error(400, None);
    assert_eq!(
        a.json()["errors"][0]["message"],
        "Cannot pay for an cancelled order"
    );
    t.shutdown().await;
}

async fn a_cancellation_that_overtakes_its_creation_leaves_the_ticket_for_sale(backend: Backend) {
    let t = Ticketing::start_on(backend, &["auth", "tickets"]).await;
    let c = Client::default();
    let seller = signup(&c, &t, "seller@test.com").await;
    let ticket = sell(&c, &t, &seller, "reordered", 12.0).await;
    let id = ticket["id"].as_str().expect("id").to_string();
    let order_id = uuid_like();
    // On a bus that hands events to several handlers at once the cancellation can be
    // applied first: the creation that follows must not reserve the ticket.
    t.publish(json!({"type": "order:cancelled", "data": {"id": order_id, "version": 1, "ticket": {"id": id}}}))
        .await;
    t.publish(json!({"type": "order:created", "data": {
        "id": order_id, "version": 0, "status": "created", "userId": "u",
        "expiresAt": "2099-01-01T00:00:00.000Z", "ticket": {"id": id, "price": 12}
    }}))
    .await;
    // A sentinel event handled after both (the HTTP bus delivers in order; on NATS wait
    // for the tickets' inbox to have seen the three).
    support::eventually("tickets to handle both events", || async {
        (order_events_handled(&c, &t).await >= 2).then_some(())
    })
    .await;
    let (_, v) = get_json(&c, &format!("{}/api/tickets/{id}", t.url("tickets")), None).await;
    assert!(v.get("orderId").is_none_or(Value::is_null), "{v}");
    assert!(listed(&c, &t, &id).await);
    t.shutdown().await;
}

/// On each of many tickets, an order placed and cancelled, then another placed. On NATS
/// several handlers take events at once, so the three can be applied in any order: there
/// they are published in the hardest one, the newer order's creation first, then the older
/// order's creation and its cancellation. The HTTP bus delivers in log order, so on it they
/// go in the order the orders service publishes them. Every ticket must end held by its
/// live order and off the index.
async fn orders_following_each_other_on_a_ticket_leave_it_with_the_live_one(backend: Backend) {
    let t = Ticketing::start_on(backend, &["auth", "tickets"]).await;
    let c = Client::default();
    let seller = signup(&c, &t, "seller@test.com").await;
    let mut tickets = Vec::new();
    for n in 0..24 {
        let ticket = sell(&c, &t, &seller, &format!("burst {n}"), 10.0).await;
        tickets.push(ticket["id"].as_str().expect("id").to_string());
    }
    let created = |order: &str, ticket: &str| {
        json!({"type": "order:created", "data": {
            "id": order, "version": 0, "status": "created", "userId": "u",
            "expiresAt": "2099-01-01T00:00:00.000Z", "ticket": {"id": ticket, "price": 10}
        }})
    };
    let mut live = Vec::new();
    let mut events = Vec::new();
    for ticket in &tickets {
        let (gone, kept) = (uuid_like(), uuid_like());
        let cancelled = json!({"type": "order:cancelled", "data": {
            "id": gone, "version": 1, "ticket": {"id": ticket}
        }});
        match backend {
            Backend::Embedded => {
                events.extend([created(&gone, ticket), cancelled, created(&kept, ticket)]);
            }
            Backend::Production => {
                events.extend([created(&kept, ticket), created(&gone, ticket), cancelled]);
            }
        }
        live.push(kept);
    }
    let published = events.len();
    t.publish_all(events).await;
    // Every event handled (deferrals come back and count once handled).
    support::eventually("tickets to handle every order event", || async {
        (order_events_handled(&c, &t).await >= published).then_some(())
    })
    .await;
    let mut wrong = Vec::new();
    for (ticket, order) in tickets.iter().zip(&live) {
        let (_, v) = get_json(
            &c,
            &format!("{}/api/tickets/{ticket}", t.url("tickets")),
            None,
        )
        .await;
        if v["orderId"] != order.as_str() || listed(&c, &t, ticket).await {
            wrong.push(format!(
                "{ticket}: orderId {} (live order {order})",
                v["orderId"]
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "tickets not held by their live order: {wrong:#?}"
    );
    t.shutdown().await;
}

async fn twenty_buyers_racing_for_one_ticket_get_exactly_one_order(backend: Backend) {
    let t = Ticketing::start_on(backend, &["auth", "tickets", "orders"]).await;
    let c = Client::default();
    let seller = signup(&c, &t, "seller@test.com").await;
    let ticket = sell(&c, &t, &seller, "final", 99.0).await;
    let ticket_id = ticket["id"].as_str().expect("id").to_string();
    let mut buyers = Vec::new();
    for i in 0..20 {
        buyers.push(signup(&c, &t, &format!("buyer{i}@test.com")).await);
    }
    support::eventually("the replica to know the ticket", || async {
        replica_knows(&c, &t, &ticket_id).await.then_some(())
    })
    .await;
    let tasks: Vec<_> = buyers
        .into_iter()
        .map(|b| {
            let (c, url, id) = (
                c.clone(),
                format!("{}/api/orders", t.url("orders")),
                ticket_id.clone(),
            );
            tokio::spawn(async move {
                c.with_cookie(
                    Method::POST,
                    &url,
                    Some(&b.cookie),
                    Some(&json!({"ticketId": id})),
                )
                .await
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        let a = task.await.expect("buyer");
        match a.status {
            201 => created += 1,
            400 => assert_eq!(
                a.json()["errors"][0]["message"],
                "Ticket is already reserved"
            ),
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&a.body)),
        }
    }
    assert_eq!(created, 1, "exactly one order for one ticket");
    t.shutdown().await;
}

fn uuid_like() -> String {
    switchyard_ticketing_contract::object_id()
}

/// Whether orders' replica has the ticket: an order of it by a throwaway user answers
/// anything but 404, and is cancelled at once if it was created.
async fn replica_knows(c: &Client, t: &Ticketing, ticket_id: &str) -> bool {
    // Reading orders' replica without ordering: GET /api/orders lists only orders, so use
    // the cheapest honest probe, an order by a fresh user that is cancelled right away.
    let probe = signup(c, t, &format!("probe-{}@test.com", uuid_like())).await;
    let a = place_order(c, t, &probe, ticket_id).await;
    match a.status {
        404 => false,
        201 => {
            let id = a.json()["id"].as_str().unwrap_or("").to_string();
            let d = call(
                c,
                Method::DELETE,
                &format!("{}/api/orders/{id}", t.url("orders")),
                Some(&probe),
                None,
            )
            .await;
            assert_eq!(d.status, 204);
            true
        }
        _ => true,
    }
}

async fn ten_concurrent_updates_of_one_ticket_get_consecutive_versions(backend: Backend) {
    let t = Ticketing::start_on(backend, &["auth", "tickets"]).await;
    let c = Client::default();
    let seller = signup(&c, &t, "seller@test.com").await;
    let ticket = sell(&c, &t, &seller, "v0", 10.0).await;
    let id = ticket["id"].as_str().expect("id").to_string();
    let tasks: Vec<_> = (1..=10)
        .map(|n| {
            let (c, url, cookie) = (
                c.clone(),
                format!("{}/api/tickets/{id}", t.url("tickets")),
                seller.cookie.clone(),
            );
            tokio::spawn(async move {
                c.with_cookie(
                    Method::PUT,
                    &url,
                    Some(&cookie),
                    Some(&json!({"title": format!("v{n}"), "price": 10 + n})),
                )
                .await
            })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        let a = task.await.expect("put");
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        versions.push(a.json()["version"].as_i64().expect("version"));
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=10).collect::<Vec<i64>>(), "no update lost");
    let (_, v) = get_json(&c, &format!("{}/api/tickets/{id}", t.url("tickets")), None).await;
    assert_eq!(v["version"], 10);
    t.shutdown().await;
}

async fn concurrent_payments_of_one_order_charge_once(backend: Backend) {
    let t = Ticketing::start_on(backend, &["auth", "tickets", "orders", "payments"]).await;
    let c = Client::default();
    let seller = signup(&c, &t, "seller@test.com").await;
    let buyer = signup(&c, &t, "buyer@test.com").await;
    let ticket = sell(&c, &t, &seller, "show", 42.0).await;
    let order = buy(&c, &t, &buyer, ticket["id"].as_str().expect("id")).await;
    let order_id = order["id"].as_str().expect("id").to_string();
    // Payments knows the order once a payment of it answers anything but 404: probe with
    // a token the provider refuses (the order stays payable).
    let probe = pay(&c, &t, &buyer, &order_id, "tok_chargeDeclined").await;
    assert_eq!(probe.status, 400);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (c, url, cookie, id) = (
                c.clone(),
                format!("{}/api/payments", t.url("payments")),
                buyer.cookie.clone(),
                order_id.clone(),
            );
            tokio::spawn(async move {
                c.with_cookie(
                    Method::POST,
                    &url,
                    Some(&cookie),
                    Some(&json!({"token": "tok_visa", "orderId": id})),
                )
                .await
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        let a = task.await.expect("payment");
        match a.status {
            201 => created += 1,
            400 => {}
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&a.body)),
        }
    }
    assert_eq!(created, 1, "one successful payment per order");
    eventually_status(&c, &t, &buyer, &order_id, "complete").await;
    t.shutdown().await;
}

async fn an_unpaid_order_expires_and_its_ticket_is_for_sale_again(backend: Backend) {
    let t = Ticketing::start_with(
        backend,
        &["auth", "tickets", "orders", "expiration", "payments"],
        Duration::from_secs(2),
    )
    .await;
    let c = Client::default();
    let seller = signup(&c, &t, "seller@test.com").await;
    let buyer = signup(&c, &t, "buyer@test.com").await;
    let ticket = sell(&c, &t, &seller, "soon", 15.0).await;
    let ticket_id = ticket["id"].as_str().expect("id").to_string();
    let order = buy(&c, &t, &buyer, &ticket_id).await;
    let order_id = order["id"].as_str().expect("id").to_string();
    let expires = order["expiresAt"].as_str().expect("expiresAt").to_string();
    assert!(expires.ends_with('Z'), "{expires}");
    eventually_status(&c, &t, &buyer, &order_id, "cancelled").await;
    support::eventually("the ticket for sale again", || async {
        listed(&c, &t, &ticket_id).await.then_some(())
    })
    .await;
    // Paying the expired order is refused.
    let a = pay(&c, &t, &buyer, &order_id, "tok_visa").await;
    a.assert_error(400, None);
    t.shutdown().await;
}

async fn timers_survive_the_expiration_service_being_killed(backend: Backend) {
    // Payments decides the expiries the timers fire.
    let mut t = Ticketing::start_with(
        backend,
        &["auth", "tickets", "orders", "expiration", "payments"],
        Duration::from_secs(3),
    )
    .await;
    let c = Client::default();
    let seller = signup(&c, &t, "seller@test.com").await;
    let buyer = signup(&c, &t, "buyer@test.com").await;
    let mut orders = Vec::new();
    for i in 0..3 {
        let ticket = sell(&c, &t, &seller, &format!("t{i}"), 1.0 + f64::from(i)).await;
        let order = buy(&c, &t, &buyer, ticket["id"].as_str().expect("id")).await;
        orders.push(order["id"].as_str().expect("id").to_string());
    }
    // Once expiration has stored the three timers, kill it before they are due.
    let metrics = format!("{}/metrics", t.ops_url("expiration"));
    support::eventually("expiration to store the timers", || async {
        let text = String::from_utf8_lossy(&c.get(&metrics).await.body).into_owned();
        let applied: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("switchyard_events_consumed_total{")
                    && l.contains("order:created")
                    && l.contains("outcome=\"applied\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        (applied >= 3.0).then_some(())
    })
    .await;
    t.kill("expiration").await;
    // Down until past the last due time (the orders' own expiresAt); back up: every timer
    // fires.
    let mut latest = std::time::SystemTime::now();
    for id in &orders {
        let (_, v) = get_json(
            &c,
            &format!("{}/api/orders/{id}", t.url("orders")),
            Some(&buyer),
        )
        .await;
        let at = v["expiresAt"].as_str().expect("expiresAt");
        let due = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
            .expect("RFC 3339");
        latest = latest.max(std::time::SystemTime::from(due));
    }
    if let Ok(left) = latest.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left + Duration::from_millis(200)).await;
    }
    for id in &orders {
        assert_eq!(
            order_status(&c, &t, &buyer, id).await,
            "created",
            "nothing fires while expiration is down"
        );
    }
    t.restart("expiration").await;
    for id in &orders {
        eventually_status(&c, &t, &buyer, id, "cancelled").await;
    }
    t.shutdown().await;
}

async fn redelivered_and_reordered_events_change_nothing(backend: Backend) {
    let t = Ticketing::start_on(backend, &["auth", "tickets", "orders"]).await;
    let c = Client::default();
    let seller = signup(&c, &t, "seller@test.com").await;
    let ticket = sell(&c, &t, &seller, "original", 10.0).await;
    let id = ticket["id"].as_str().expect("id").to_string();
    // Two updates published by tickets (v1, v2), then the same events again, out of order,
    // straight onto the bus: orders' replica ends at v2, applied once each.
    for n in 1..=2 {
        let a = call(
            &c,
            Method::PUT,
            &format!("{}/api/tickets/{id}", t.url("tickets")),
            Some(&seller),
            Some(json!({"title": format!("v{n}"), "price": 10 + n})),
        )
        .await;
        assert_eq!(a.status, 200);
    }
    // The outbox relay publishes after the commit: wait until both are on the bus.
    let updates: Vec<Value> = support::eventually("both updates on the bus", || async {
        let updates: Vec<Value> = t
            .events()
            .await
            .into_iter()
            .filter(|e| e["type"] == "ticket:updated" && e["data"]["id"] == id.as_str())
            .collect();
        (updates.len() == 2).then_some(updates)
    })
    .await;
    // Redeliver: v2 first, then v1, then v2 again, with their ids (duplicates) and without
    // (new ids: the version check alone must keep the replica right).
    for e in [&updates[1], &updates[0], &updates[1]] {
        t.publish(e.clone()).await;
        let mut fresh = e.clone();
        if let Some(m) = fresh.as_object_mut() {
            m.remove("id");
            m.remove("seq");
        }
        t.publish(fresh).await;
    }
    // The replica has v2's title and price: an order of the ticket shows them.
    let buyer = signup(&c, &t, "buyer@test.com").await;
    let order = buy(&c, &t, &buyer, &id).await;
    support::eventually("the replica at v2", || async {
        let (_, v) = get_json(
            &c,
            &format!(
                "{}/api/orders/{}",
                t.url("orders"),
                order["id"].as_str().unwrap_or("")
            ),
            Some(&buyer),
        )
        .await;
        (v["ticket"]["title"] == "v2" && v["ticket"]["version"] == 2).then_some(())
    })
    .await;
    t.shutdown().await;
}

async fn bad_input_on_every_route_gets_a_4xx_json_error(backend: Backend) {
    let t = Ticketing::start_on(backend, &["auth", "tickets", "orders", "payments"]).await;
    let c = Client::default();
    let user = signup(&c, &t, "user@test.com").await;
    let bodies = [
        None,
        Some(json!(null)),
        Some(json!([])),
        Some(json!("text")),
        Some(json!({})),
        Some(json!({"title": 5, "price": "x", "ticketId": 7, "token": [], "orderId": {}})),
        Some(
            json!({"title": "", "price": -1, "ticketId": "not-an-id", "token": "", "orderId": ""}),
        ),
        Some(json!({"title": "x".repeat(5000), "price": 1e300, "ticketId": "g".repeat(24)})),
    ];
    let routes = [
        (Method::POST, format!("{}/api/tickets", t.url("tickets"))),
        (
            Method::PUT,
            format!("{}/api/tickets/{}", t.url("tickets"), uuid_like()),
        ),
        (Method::PUT, format!("{}/api/tickets/%00", t.url("tickets"))),
        (
            Method::GET,
            format!("{}/api/tickets/..%2f..", t.url("tickets")),
        ),
        (Method::POST, format!("{}/api/orders", t.url("orders"))),
        (
            Method::GET,
            format!("{}/api/orders/{}", t.url("orders"), "x".repeat(300)),
        ),
        (
            Method::DELETE,
            format!("{}/api/orders/nope", t.url("orders")),
        ),
        (Method::POST, format!("{}/api/payments", t.url("payments"))),
        (Method::PATCH, format!("{}/api/tickets", t.url("tickets"))),
    ];
    for (method, url) in &routes {
        for signed_in in [false, true] {
            for body in &bodies {
                let a = call(
                    &c,
                    method.clone(),
                    url,
                    signed_in.then_some(&user),
                    body.clone(),
                )
                .await;
                assert!(
                    (400..500).contains(&a.status),
                    "{method} {url} {body:?}: {} {}",
                    a.status,
                    String::from_utf8_lossy(&a.body)
                );
                a.assert_error(a.status, None);
            }
        }
    }
    t.shutdown().await;
}

/// A client's `X-Request-Id` becomes the `correlationId` of the events its request causes.
/// A 70,000-character one used to make `order:created` too large for the bus, which
/// refused it, and the relay set it aside for good: the ticket was never reserved, no
/// timer was set, payments never learned of the order. Now a long or odd id is replaced,
/// never echoed, and every write keeps its effects everywhere.
async fn a_huge_request_id_on_every_write_keeps_its_events(backend: Backend) {
    let t = Ticketing::start_on(backend, ALL).await;
    let c = Client::default();
    let huge = "x".repeat(70_000);
    let with_huge = [("x-request-id", huge.as_str())];
    let seller = signup(&c, &t, "huge-seller@test.com").await;
    let buyer = signup(&c, &t, "huge-buyer@test.com").await;
    let answered_id = |a: &Answer| {
        let id = a.request_id.clone().expect("an x-request-id answered");
        assert!(id.len() <= 128 && id != huge, "the huge id is not echoed");
    };
    // Selling and editing.
    let tickets = format!("{}/api/tickets", t.url("tickets"));
    let mut ticket_ids = Vec::new();
    for title in ["huge id one", "huge id two"] {
        let a = c
            .with_headers(
                Method::POST,
                &tickets,
                Some(&seller.cookie),
                Some(&json!({"title": title, "price": 20})),
                &with_huge,
            )
            .await;
        assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
        answered_id(&a);
        let id = a.json()["id"].as_str().expect("id").to_string();
        let a = c
            .with_headers(
                Method::PUT,
                &format!("{tickets}/{id}"),
                Some(&seller.cookie),
                Some(&json!({"title": format!("{title}, edited"), "price": 25})),
                &with_huge,
            )
            .await;
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        answered_id(&a);
        ticket_ids.push(id);
    }
    // Ordering: the ticket is reserved, payments learns of the order, it can be paid.
    let orders = format!("{}/api/orders", t.url("orders"));
    let order = support::eventually("the order placed with a huge id", || async {
        let a = c
            .with_headers(
                Method::POST,
                &orders,
                Some(&buyer.cookie),
                Some(&json!({"ticketId": ticket_ids[0]})),
                &with_huge,
            )
            .await;
        (a.status != 404).then_some(a)
    })
    .await;
    assert_eq!(
        order.status,
        201,
        "{}",
        String::from_utf8_lossy(&order.body)
    );
    answered_id(&order);
    let order_id = order.json()["id"].as_str().expect("id").to_string();
    support::eventually("the ticket reserved by the order", || async {
        let (_, ticket) = get_json(&c, &format!("{tickets}/{}", ticket_ids[0]), None).await;
        (ticket["orderId"] == order_id.as_str()).then_some(())
    })
    .await;
    let paid = pay(&c, &t, &buyer, &order_id, "tok_visa").await;
    assert_eq!(paid.status, 201, "{}", String::from_utf8_lossy(&paid.body));
    eventually_status(&c, &t, &buyer, &order_id, "complete").await;
    // Cancelling: the ticket is for sale again.
    let second = buy(&c, &t, &buyer, &ticket_ids[1]).await;
    let second_id = second["id"].as_str().expect("id").to_string();
    support::eventually("the second ticket reserved", || async {
        (!listed(&c, &t, &ticket_ids[1]).await).then_some(())
    })
    .await;
    let a = c
        .with_headers(
            Method::DELETE,
            &format!("{orders}/{second_id}"),
            Some(&buyer.cookie),
            None,
            &with_huge,
        )
        .await;
    assert_eq!(a.status, 204, "{}", String::from_utf8_lossy(&a.body));
    answered_id(&a);
    support::eventually("the cancelled order's ticket for sale again", || async {
        listed(&c, &t, &ticket_ids[1]).await.then_some(())
    })
    .await;
    // Every event carries a short correlation id.
    for event in t.events().await {
        let correlation = event["correlationId"].as_str().unwrap_or("");
        assert!(
            correlation.len() <= 128,
            "{}",
            &correlation[..200.min(correlation.len())]
        );
    }
    t.shutdown().await;
}

/// A `payment:created` nobody paid for, posted to the `/events` of every service (and to
/// the bus on the embedded backend), changes nothing: 401 where deliveries must carry the
/// bus's secret, 404 where there is no such route (every service with NATS).
async fn a_forged_event_on_any_port_changes_nothing(backend: Backend) {
    let t = Ticketing::start_on(backend, ALL).await;
    let c = Client::default();
    let seller = signup(&c, &t, "forge-seller@test.com").await;
    let buyer = signup(&c, &t, "forge-buyer@test.com").await;
    let ticket = sell(&c, &t, &seller, "forged", 20.0).await;
    let order = buy(&c, &t, &buyer, ticket["id"].as_str().expect("id")).await;
    let order_id = order["id"].as_str().expect("id").to_string();
    let forged = json!({
        "id": uuid_like(),
        "type": "payment:created",
        "data": {"id": "0123456789abcdef01234567", "orderId": order_id, "stripeId": "ch_forged"},
    });
    let expected = match backend {
        Backend::Embedded => 401,
        Backend::Production => 404,
    };
    for service in ["tickets", "orders", "payments", "expiration"] {
        let a = c
            .post_json(&format!("{}/events", t.url(service)), &forged)
            .await;
        assert_eq!(
            a.status,
            expected,
            "{service}: {}",
            String::from_utf8_lossy(&a.body)
        );
        // Also with a made-up secret.
        let a = c
            .with_headers(
                Method::POST,
                &format!("{}/events", t.url(service)),
                None,
                Some(&forged),
                &[(
                    "authorization",
                    "Bearer not-the-bus-secret-0123456789abcdef",
                )],
            )
            .await;
        assert_eq!(a.status, expected, "{service}");
    }
    if backend == Backend::Embedded {
        let bus = format!("{}/events", t.url("event-bus"));
        let a = c.post_json(&bus, &forged).await;
        a.assert_error(401, None);
        // Nor can the log be read without the secret.
        assert_eq!(c.get(&bus).await.status, 401);
    }
    // The order is as it was: not paid.
    assert_eq!(order_status(&c, &t, &buyer, &order_id).await, "created");
    let events = t.events().await;
    assert!(
        !events.iter().any(|e| e["type"] == "payment:created"),
        "nothing reached the bus"
    );
    t.shutdown().await;
}

/// While the bus is away, every service whose database answers stays ready (and says
/// where the bus is in `/readyz`'s details and `switchyard_bus_up`), writes are taken,
/// and their events arrive once the bus is back.
async fn readiness_is_the_own_database_while_the_bus_is_away(backend: Backend) {
    let services = ["auth", "tickets", "orders", "payments"];
    let mut nats = None;
    let mut t = match backend {
        Backend::Embedded => Ticketing::start_on(backend, &services).await,
        Backend::Production => {
            let server = support::nats_server::NatsServer::start(None, &[]).await;
            let resources = support::backend::Resources::on_nats(server.url());
            nats = Some(server);
            Ticketing::start_opts(
                backend,
                &services,
                support::ticketing::Options {
                    resources: Some(resources),
                    ..Default::default()
                },
            )
            .await
        }
    };
    let c = Client::default();
    let seller = signup(&c, &t, "ready-seller@test.com").await;
    let buyer = signup(&c, &t, "ready-buyer@test.com").await;
    let before = sell(&c, &t, &seller, "before", 10.0).await;
    buy(&c, &t, &buyer, before["id"].as_str().expect("id")).await;
    // The bus goes away (SIGKILL of our NATS server; the in-process bus is stopped, which
    // closes its connections, where an aborted task would leave them answering).
    match nats.as_mut() {
        Some(server) => server.kill(),
        None => t.stop("event-bus").await,
    }
    for service in ["tickets", "orders", "payments"] {
        let metrics = format!("{}/metrics", t.ops_url(service));
        support::eventually(&format!("{service} to see the bus down"), || async {
            let text = String::from_utf8_lossy(&c.get(&metrics).await.body).into_owned();
            text.lines()
                .any(|l| l.starts_with("switchyard_bus_up{") && l.ends_with(" 0"))
                .then_some(())
        })
        .await;
        let ready = c.get(&format!("{}/readyz", t.ops_url(service))).await;
        assert_eq!(
            ready.status,
            200,
            "{service} is ready on its own database: {}",
            String::from_utf8_lossy(&ready.body)
        );
        let details = ready.json();
        assert_eq!(details["checks"]["database"], "ok");
        assert_ne!(details["details"]["bus"], "ok", "{details}");
    }
    // Writes go on.
    let during = sell(&c, &t, &seller, "while the bus is away", 15.0).await;
    let during_id = during["id"].as_str().expect("id").to_string();
    match nats.as_mut() {
        Some(server) => server.restart().await,
        None => t.restart("event-bus").await,
    }
    // Its event arrives: orders can order the ticket.
    let order = buy(&c, &t, &buyer, &during_id).await;
    assert_eq!(order["ticket"]["title"], "while the bus is away");
    t.shutdown().await;
}

/// An event a consumer gave up on (here: an update of a ticket its replica does not know,
/// deferred past the limit) is listed by `switchyard dead-letters`, shown with its event,
/// and replayed once the gap is filled; a second replay finds nothing.
async fn a_dead_letter_is_listed_shown_and_replayed_once(backend: Backend) {
    let t = Ticketing::start_opts(
        backend,
        &["orders"],
        support::ticketing::Options {
            defer_limit: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await;
    let ticket = "0123456789abcdef0123abcd";
    let update = json!({"type": "ticket:updated", "data": {
        "id": ticket, "version": 1, "title": "dead letter", "price": 12, "userId": "seller"
    }});
    t.publish(update).await;
    let bus = t.bus_config();
    let mut env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", t.database_url("orders")),
        ("EVENT_BUS_URL", bus.url.clone()),
        ("BUS_STREAM", bus.stream.clone()),
        ("BUS_SUBJECT_PREFIX", bus.subject_prefix.clone()),
        ("RUST_LOG", "warn".to_string()),
    ];
    if backend == Backend::Embedded {
        env.push(("EVENT_BUS_OPS_URL", t.ops_url("event-bus")));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let cli = |args: &[&str]| {
        let mut all = vec!["dead-letters", "orders"];
        all.extend_from_slice(args);
        let (status, out, err) = support::process::run_output(&all, &env);
        assert!(status.success(), "{all:?}: {err}");
        out
    };
    let listed = support::eventually("the update dead-lettered", || async {
        let list: Value = serde_json::from_str(&cli(&["list", "--json"])).ok()?;
        let list = list.as_array()?.clone();
        (list.len() == 1).then_some(list)
    })
    .await;
    assert_eq!(listed[0]["type"], "ticket:updated");
    assert_eq!(listed[0]["place"], "consumer");
    let id = listed[0]["id"].as_str().expect("id").to_string();
    let shown: Value = serde_json::from_str(&cli(&["show", &id])).expect("json");
    assert_eq!(shown["event"]["data"]["title"], "dead letter");
    // The gap is filled, then the dead letter replayed: the replica reaches version 1.
    t.publish(json!({"type": "ticket:created", "data": {
        "id": ticket, "version": 0, "title": "created", "price": 10, "userId": "seller"
    }}))
    .await;
    assert!(cli(&["replay", &id]).contains("replayed"));
    let db = switchyard_kit::Db::connect(&t.database_url("orders"))
        .await
        .expect("orders database");
    support::eventually("the replayed update applied", || async {
        let row: (String, i64) = sqlx::query_as("SELECT title, version FROM tickets WHERE id = $1")
            .bind(ticket)
            .fetch_optional(db.reader())
            .await
            .ok()??;
        (row == ("dead letter".to_string(), 1)).then_some(())
    })
    .await;
    assert!(cli(&["replay", &id]).contains("nothing to replay"));
    assert_eq!(cli(&["list"]).trim(), "ticketing/orders: no dead letters");
    db.close().await;
    t.shutdown().await;
}

/// With NATS users (`switchyard nats-users`), each service publishes its own events and
/// pulls its own durable only: the app works end to end, and a service that tries to
/// publish another's event, or to pull another's deliveries, is refused by the server.
/// The console, as its own user (the production overlays'), shows the log and every
/// consumer without one permission violation, and can publish nothing: its replay is
/// refused before it tries, and an event it forges is refused by the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_users_let_each_service_publish_only_its_own_events() {
    if !Backend::Production.enabled() {
        return;
    }
    if !support::nats_server::NatsServer::available() {
        switchyard_kit::testing::skip_or_fail("nats-server is not installed");
        return;
    }
    let mut resources = support::backend::Resources::on_nats(String::new());
    let (status, config, err) = support::process::run_output(
        &[
            "nats-users",
            "ticketing",
            "--stream",
            &resources.stream,
            "--subject-prefix",
            &resources.prefix,
        ],
        &[],
    );
    assert!(status.success(), "{err}");
    let mut passwords = std::collections::HashMap::new();
    let mut env = Vec::new();
    for user in [
        "operator",
        "tickets",
        "orders",
        "expiration",
        "payments",
        "console",
    ] {
        let password = format!("pw{}", uuid_like().replace('-', ""));
        env.push((
            switchyard_bus_client::nats_users::password_variable(user),
            password.clone(),
        ));
        passwords.insert(user.to_string(), password);
    }
    for (k, _) in &env {
        assert!(
            config.contains(&format!("${k}")),
            "{k} missing from\n{config}"
        );
    }
    let server = support::nats_server::NatsServer::start(Some(&config), &env).await;
    resources.nats = server.url();
    resources.nats_users = Some(passwords.clone());
    let stream = resources.stream.clone();
    let prefix = resources.prefix.clone();
    let t = Ticketing::start_opts(
        Backend::Production,
        ALL,
        support::ticketing::Options {
            resources: Some(resources),
            ..Default::default()
        },
    )
    .await;
    // The whole purchase works with every service as its own user.
    let c = Client::default();
    let seller = signup(&c, &t, "users-seller@test.com").await;
    let buyer = signup(&c, &t, "users-buyer@test.com").await;
    let ticket = sell(&c, &t, &seller, "users", 20.0).await;
    let order = buy(&c, &t, &buyer, ticket["id"].as_str().expect("id")).await;
    let order_id = order["id"].as_str().expect("id").to_string();
    let paid = pay(&c, &t, &buyer, &order_id, "tok_visa").await;
    assert_eq!(paid.status, 201, "{}", String::from_utf8_lossy(&paid.body));
    eventually_status(&c, &t, &buyer, &order_id, "complete").await;
    the_console_reads_as_its_own_user_and_writes_nothing(
        &c, &server, &stream, &prefix, &passwords, &order_id,
    )
    .await;
    // Orders may not publish a payment, nor pull payments' deliveries.
    let as_orders = switchyard_bus_client::bus::NatsCredentials {
        user: "orders".into(),
        password: passwords["orders"].clone(),
    };
    let orders_bus = switchyard_bus_client::NatsBus::connect_as(
        &server.url(),
        &stream,
        &prefix,
        Some(&as_orders),
    )
    .await
    .expect("connect as orders");
    let forged = switchyard_events::Envelope::new(
        "payment:created",
        json!({"id": "0123456789abcdef01234567", "orderId": order_id, "stripeId": "ch_forged"}),
    );
    let refused = orders_bus
        .publish_raw(
            orders_bus.subject_for("payment:created"),
            Some(&forged.id),
            bytes::Bytes::from(forged.to_bytes()),
            &[],
        )
        .await;
    assert!(refused.is_err(), "orders published a payment");
    let stolen = async {
        let stream = orders_bus.jetstream().get_stream(&stream).await?;
        let consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer("payments-service").await?;
        let mut batch = consumer
            .batch()
            .max_messages(1)
            .expires(Duration::from_secs(1))
            .messages()
            .await?;
        use futures_util::StreamExt;
        batch.next().await.transpose()?;
        Ok::<_, async_nats::Error>(())
    }
    .await;
    assert!(stolen.is_err(), "orders pulled from payments' durable");
    // Orders may publish its own events, and nothing forged reached the stream.
    orders_bus
        .publish_raw(
            orders_bus.subject_for("order:cancelled"),
            None,
            bytes::Bytes::from_static(b"{\"type\":\"order:cancelled\",\"data\":{}}"),
            &[],
        )
        .await
        .expect("orders publishes its own subject");
    let events = t.events().await;
    assert!(!events.iter().any(|e| e["data"]["stripeId"] == "ch_forged"));
    t.shutdown().await;
}

/// `switchyard serve ticketing/console` as NATS user `console`, as the prod overlay runs it.
async fn the_console_reads_as_its_own_user_and_writes_nothing(
    c: &Client,
    server: &support::nats_server::NatsServer,
    stream: &str,
    prefix: &str,
    passwords: &std::collections::HashMap<String, String>,
    order_id: &str,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut console = support::process::Proc::serve(
        "ticketing/console",
        support::process::free_port(),
        dir.path(),
        &[
            ("EVENT_BUS_URL", server.url()),
            ("BUS_STREAM", stream.to_string()),
            ("BUS_SUBJECT_PREFIX", prefix.to_string()),
            ("NATS_USER", "console".to_string()),
            ("NATS_PASSWORD", passwords["console"].clone()),
            ("CONSOLE_REPLAY", "false".to_string()),
            ("OTEL_SDK_DISABLED", "true".to_string()),
        ],
    );
    console.wait_ready(c).await;
    let url = console.url();
    support::console_view::wait_for_the_order(c, &url, order_id).await;
    let consumers = support::console_view::wait_for_every_position(c, &url).await;
    assert_eq!(
        consumers["consumers"].as_array().map(Vec::len),
        Some(4),
        "{consumers}"
    );
    let letters = c
        .get(&format!("{url}/api/consumers/payments/dead-letters"))
        .await;
    assert_eq!(
        letters.status,
        200,
        "{}",
        String::from_utf8_lossy(&letters.body)
    );
    let replay = c
        .with_headers(
            Method::POST,
            &format!("{url}/api/consumers/payments/dead-letters/1/replay"),
            None,
            None,
            &[("x-switchyard-console", "replay")],
        )
        .await;
    assert_eq!(replay.status, 403);
    assert!(
        String::from_utf8_lossy(&replay.body).contains("operator"),
        "{}",
        String::from_utf8_lossy(&replay.body)
    );
    let violations = || -> Vec<String> {
        server
            .log()
            .lines()
            .filter(|l| l.contains("Violation") && l.contains("User \"console\""))
            .map(str::to_string)
            .collect()
    };
    assert!(violations().is_empty(), "{:#?}", violations());
    // Its user publishes nothing: an event it forges is refused by the server.
    let as_console = switchyard_bus_client::bus::NatsCredentials {
        user: "console".into(),
        password: passwords["console"].clone(),
    };
    let console_bus = switchyard_bus_client::NatsBus::connect_as(
        &server.url(),
        stream,
        prefix,
        Some(&as_console),
    )
    .await
    .expect("connect as the console")
    .watching(true);
    let forged = switchyard_events::Envelope::new(
        "ticket:updated",
        json!({"id": "0123456789abcdef01234567", "version": 99, "title": "x", "price": 1, "userId": "u"}),
    );
    let refused = console_bus
        .publish_raw(
            console_bus.subject_for("ticket:updated"),
            Some(&forged.id),
            bytes::Bytes::from(forged.to_bytes()),
            &[],
        )
        .await;
    assert!(refused.is_err(), "the console published an event");
    // ...and the server logged it: the log read above does show the console's violations.
    support::eventually("the refusal in the server's log", || async {
        (!violations().is_empty()).then_some(())
    })
    .await;
    let _ = console.terminate();
}

/// When each order is paid, relative to its `expiresAt` (ms), and what came of it.
struct Timed {
    order: String,
    /// 1 for the wave whose expiry the paused bus holds back.
    wave: usize,
    at_ms: i64,
    answer: u16,
}

/// Hundreds of orders, each paid at a moment from 0.5 s before to 1.3 s after its
/// `expiresAt` (and some halfway through their window), while half of them see the bus
/// paused across their expiry. Payments decides paid or expired once per order, so every
/// payment answered 201 ends complete, every order ends complete or cancelled, and the
/// ones paid halfway are answered 201.
async fn a_payment_answered_201_is_final_around_the_expiry(backend: Backend) {
    let window = Duration::from_secs(8);
    let mut nats = None;
    let resources = match backend {
        Backend::Production => {
            let server = support::nats_server::NatsServer::start(None, &[]).await;
            let r = support::backend::Resources::on_nats(server.url());
            nats = Some(server);
            Some(r)
        }
        Backend::Embedded => None,
    };
    let mut payments = switchyard_payments::provider::ProviderConfig::test();
    // No margin: payments are tried up to the very expiry, so some race it.
    payments.expiry_margin = Duration::ZERO;
    let t = Ticketing::start_opts(
        backend,
        ALL,
        support::ticketing::Options {
            expiration_window: window,
            resources,
            payments,
            ..Default::default()
        },
    )
    .await;
    let c = Client::default();
    let seller = signup(&c, &t, "final-seller@test.com").await;
    let buyer = signup(&c, &t, "final-buyer@test.com").await;
    let total = 200usize;
    // Two waves of orders: the second sees the bus paused across its expiry.
    let mut waves: Vec<Vec<Value>> = vec![Vec::new(), Vec::new()];
    for (w, wave) in waves.iter_mut().enumerate() {
        let mut made = tokio::task::JoinSet::new();
        for i in 0..total / 2 {
            let (c, seller_cookie, buyer_cookie) =
                (c.clone(), seller.cookie.clone(), buyer.cookie.clone());
            let (tickets, orders) = (
                format!("{}/api/tickets", t.url("tickets")),
                format!("{}/api/orders", t.url("orders")),
            );
            made.spawn(async move {
                let ticket = c
                    .with_cookie(
                        Method::POST,
                        &tickets,
                        Some(&seller_cookie),
                        Some(&json!({"title": format!("w{w}-{i}"), "price": 10})),
                    )
                    .await
                    .json();
                let id = ticket["id"].as_str().expect("id").to_string();
                support::eventually("an order placed", || async {
                    let a = c
                        .with_cookie(
                            Method::POST,
                            &orders,
                            Some(&buyer_cookie),
                            Some(&json!({"ticketId": id})),
                        )
                        .await;
                    (a.status == 201).then(|| a.json())
                })
                .await
            });
        }
        while let Some(order) = made.join_next().await {
            wave.push(order.expect("order"));
        }
    }
    // Each order paid once: a tenth halfway through the window, the others from 0.5 s
    // before to 1.3 s after the expiry.
    let mut paying = tokio::task::JoinSet::new();
    let buyer = std::sync::Arc::new(buyer);
    let t = std::sync::Arc::new(tokio::sync::Mutex::new(t));
    let urls = {
        let t = t.lock().await;
        (t.url("payments"), t.url("orders"))
    };
    // Within each wave the moments run from 0.5 s before to 1.3 s after the expiry, so the
    // paused wave also has payments racing an expiry that the bus holds back.
    let per_wave = total / 2;
    for (n, (wave, order)) in waves
        .iter()
        .enumerate()
        .flat_map(|(w, orders)| orders.iter().map(move |o| (w, o)))
        .enumerate()
    {
        let i = n % per_wave;
        let offset_ms = if i.is_multiple_of(10) {
            -(i64::try_from(window.as_millis()).unwrap_or(0) / 2)
        } else {
            -500 + i64::try_from(i * 1800 / per_wave).unwrap_or(0)
        };
        let (c, buyer, order, payments_url) =
            (c.clone(), buyer.clone(), order.clone(), urls.0.clone());
        paying.spawn(async move {
            let id = order["id"].as_str().expect("id").to_string();
            let expires = time::OffsetDateTime::parse(
                order["expiresAt"].as_str().expect("expiresAt"),
                &time::format_description::well_known::Rfc3339,
            )
            .expect("RFC 3339");
            let wait =
                expires + time::Duration::milliseconds(offset_ms) - time::OffsetDateTime::now_utc();
            if wait.is_positive() {
                tokio::time::sleep(wait.unsigned_abs()).await;
            }
            let a = c
                .with_cookie(
                    Method::POST,
                    &format!("{payments_url}/api/payments"),
                    Some(&buyer.cookie),
                    Some(&json!({"token": "tok_visa", "orderId": id})),
                )
                .await;
            Timed {
                order: id,
                wave,
                at_ms: offset_ms,
                answer: a.status,
            }
        });
    }
    // The bus paused across the second wave's expiry: from 1 s before its earliest to 2 s
    // after its latest.
    let expiry = |o: &Value| {
        time::OffsetDateTime::parse(
            o["expiresAt"].as_str().expect("expiresAt"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("RFC 3339")
    };
    let first = waves[1].iter().map(expiry).min().expect("orders");
    let last = waves[1].iter().map(expiry).max().expect("orders");
    let until = |at: time::OffsetDateTime| {
        let d = at - time::OffsetDateTime::now_utc();
        if d.is_positive() {
            d.unsigned_abs()
        } else {
            Duration::ZERO
        }
    };
    tokio::time::sleep(until(first - time::Duration::seconds(1))).await;
    match nats.as_mut() {
        Some(server) => server.kill(),
        None => t.lock().await.stop("event-bus").await,
    }
    tokio::time::sleep(until(last + time::Duration::seconds(2))).await;
    match nats.as_mut() {
        Some(server) => server.restart().await,
        None => t.lock().await.restart("event-bus").await,
    }
    let mut results = Vec::new();
    while let Some(done) = paying.join_next().await {
        results.push(done.expect("payment"));
    }
    // Every order ends complete or cancelled; every 201 complete; halfway ones 201.
    let orders_url = urls.1;
    let status_of = |id: String| {
        let (c, cookie, url) = (c.clone(), buyer.cookie.clone(), orders_url.clone());
        async move {
            let a = c
                .with_cookie(
                    Method::GET,
                    &format!("{url}/api/orders/{id}"),
                    Some(&cookie),
                    None,
                )
                .await;
            a.json()["status"].as_str().unwrap_or_default().to_string()
        }
    };
    let mut paid = 0;
    let mut paid_near_expiry = [0usize; 2];
    for r in &results {
        let halfway = r.at_ms < -1000;
        if halfway {
            assert_eq!(
                r.answer, 201,
                "order {} paid halfway: {}",
                r.order, r.answer
            );
        }
        let want_complete = r.answer == 201;
        let end = support::eventually(&format!("order {} to end", r.order), || async {
            let status = status_of(r.order.clone()).await;
            (status == "complete" || status == "cancelled").then_some(status)
        })
        .await;
        if want_complete {
            paid += 1;
            if r.at_ms > -1000 {
                paid_near_expiry[r.wave] += 1;
            }
            assert_eq!(
                end, "complete",
                "order {} was answered 201 {} ms from its expiry, then {end}",
                r.order, r.at_ms
            );
        } else {
            assert!(
                matches!(r.answer, 400),
                "order {}: {} {} ms from its expiry",
                r.order,
                r.answer,
                r.at_ms
            );
        }
    }
    eprintln!(
        "{paid} of {} payments answered 201, each final",
        results.len()
    );
    // Both waves, the paused one too, had payments racing their expiry that went through
    // (and were final, as checked above).
    assert!(
        paid_near_expiry.iter().all(|&n| n > 0),
        "payments near the expiry answered 201 per wave: {paid_near_expiry:?}"
    );
    let t = std::sync::Arc::try_unwrap(t)
        .ok()
        .expect("one owner")
        .into_inner();
    t.shutdown().await;
}

/// Payments never falls back to a provider that charges nothing: named `stripe` (as the
/// production overlay names it) without `STRIPE_KEY`, or not named at all, it refuses to
/// start and says which variable is missing.
#[test]
fn payments_refuses_to_start_without_a_named_provider_or_without_stripes_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().display().to_string();
    let key = "a-session-key-of-thirty-two-bytes-or-more";
    let base = [
        ("DATA_DIR", data.as_str()),
        ("JWT_KEY", key),
        ("JWT_REQUIRE_EXP", "true"),
        ("PORT", "0"),
        ("OPS_PORT", "0"),
    ];
    for (extra, missing) in [
        (&[("PAYMENT_PROVIDER", "stripe")][..], "STRIPE_KEY"),
        (&[][..], "PAYMENT_PROVIDER"),
    ] {
        let env: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
        let (status, stderr) = support::process::run(&["serve", "ticketing/payments"], &env);
        assert!(!status.success(), "payments started with {extra:?}");
        assert!(stderr.contains(missing), "{extra:?}: {stderr}");
    }
}
