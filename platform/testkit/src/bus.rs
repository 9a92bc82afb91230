//! The event bus in this process (its log in SQLite in a directory of the test's), and
//! publishing to it and reading its log over HTTP.

use std::path::Path;

use serde_json::{Value, json};
use switchyard_event_bus::{PayloadCheck, Settings, Subscriber};
use switchyard_kit::server::Listeners;

use crate::{Answer, Running};

/// The event bus on `listeners`, its log in `dir`, delivering to `subscribers`;
/// `payload_check` is the app's contract, checking payloads at the door as in production.
pub fn start_on(
    listeners: Listeners,
    dir: &Path,
    subscribers: Vec<Subscriber>,
    payload_check: Option<PayloadCheck>,
) -> Running {
    let mut settings = Settings::for_test(dir, subscribers);
    settings.payload_check = payload_check;
    Running::start(listeners, move |l, s| {
        switchyard_event_bus::launch(settings, l, s)
    })
}

/// [`start_on`] on ports of its own.
pub async fn start(
    dir: &Path,
    subscribers: Vec<Subscriber>,
    payload_check: Option<PayloadCheck>,
) -> Running {
    start_on(crate::listeners(0).await, dir, subscribers, payload_check)
}

/// A subscriber at `url` taking only `types`.
pub fn subscriber(name: &str, url: &str, types: &[&str]) -> Subscriber {
    Subscriber::new(name, url).only(types.iter().copied())
}

/// The event `{"type", "data"}`, with `id` when given (the bus gives one otherwise).
pub fn event(id: Option<&str>, event_type: &str, data: Value) -> Value {
    let mut event = json!({"type": event_type, "data": data});
    if let Some(id) = id {
        event["id"] = json!(id);
    }
    event
}

/// Publishes `event` through the bus at `bus_url`; fails the test unless it is taken.
pub async fn publish(http: &reqwest::Client, bus_url: &str, event: &Value) {
    let response = http
        .post(format!("{bus_url}/events"))
        .json(event)
        .send()
        .await
        .expect("publish");
    let a = Answer::read(response).await;
    assert_eq!(a.status, 200, "the bus refused {event}: {:?}", a.body);
}

/// The log of the bus at `bus_url`, oldest first.
pub async fn log(http: &reqwest::Client, bus_url: &str) -> Vec<Value> {
    let response = http
        .get(format!("{bus_url}/events"))
        .send()
        .await
        .expect("the bus's log");
    let a = Answer::read(response).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body.as_array().cloned().unwrap_or_default()
}

/// The events of `event_type` in the log of the bus at `bus_url`.
pub async fn events(http: &reqwest::Client, bus_url: &str, event_type: &str) -> Vec<Value> {
    log(http, bus_url)
        .await
        .into_iter()
        .filter(|e| e["type"] == event_type)
        .collect()
}

/// Waits until the log of the bus at `bus_url` holds `count` events of `event_type`;
/// returns them.
pub async fn wait_events(
    http: &reqwest::Client,
    bus_url: &str,
    event_type: &str,
    count: usize,
) -> Vec<Value> {
    crate::eventually(
        &format!("{count} {event_type} events on the bus"),
        || async {
            let events = events(http, bus_url, event_type).await;
            (events.len() >= count).then_some(events)
        },
    )
    .await
}
