//! GitTix's steps through a gateway (`up ticketing`'s), for the tests that need a ticket
//! for sale or an order: signing up, selling, ordering; and where `up` put an app's
//! processes.

use reqwest::Method;
use serde_json::{Value, json};

use super::http::Client;

/// Signs up `email` at `base`; its session cookie (`session=...`).
pub async fn signed_up(c: &Client, base: &str, email: &str) -> String {
    let a = c
        .with_cookie(
            Method::POST,
            &format!("{base}/api/users/signup"),
            None,
            Some(&json!({"email": email, "password": "password"})),
        )
        .await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    a.set_cookies
        .iter()
        .find_map(|c| c.split(';').next().filter(|c| c.starts_with("session=")))
        .expect("a session cookie")
        .to_string()
}

/// Sells a ticket titled `title` at 20 as `cookie`'s user; its id.
pub async fn ticket_for_sale(c: &Client, base: &str, cookie: &str, title: &str) -> String {
    let ticket = c
        .with_cookie(
            Method::POST,
            &format!("{base}/api/tickets"),
            Some(cookie),
            Some(&json!({"title": title, "price": 20})),
        )
        .await
        .json();
    ticket["id"].as_str().expect("a ticket id").to_string()
}

/// Orders `ticket` as `cookie`'s user, with `headers`, until orders knows the ticket (404
/// before its replica has it); the order.
pub async fn order(
    c: &Client,
    base: &str,
    cookie: &str,
    ticket: &str,
    headers: &[(&str, &str)],
) -> Value {
    super::eventually("the order placed", || async {
        let a = c
            .with_headers(
                Method::POST,
                &format!("{base}/api/orders"),
                Some(cookie),
                Some(&json!({"ticketId": ticket})),
                headers,
            )
            .await;
        (a.status == 201).then(|| a.json())
    })
    .await
}

/// The local port of `app`'s process of `kind` under `offset` (its first of that kind).
pub fn port_of(app: &str, kind: switchyard_registry::Kind, offset: u16) -> u16 {
    switchyard_registry::app(app)
        .expect("an app")
        .of_kind(kind)
        .next()
        .expect("a process of that kind")
        .local_port
        + offset
}

/// `up`'s arguments for `app` on PostgreSQL and NATS: a database for each of its services
/// that has one, and the stream of `resources`.
pub async fn production_up_args(app: &str, resources: &super::backend::Resources) -> Vec<String> {
    let services: Vec<&str> = switchyard_registry::app(app)
        .expect("an app")
        .services
        .iter()
        .filter(|s| s.database)
        .map(|s| s.name)
        .collect();
    super::faults::production_args(resources, &services).await
}
