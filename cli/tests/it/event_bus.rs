//! The event bus over real HTTP: durable append, order per subscriber, catch-up, duplicates,
//! dead letters, bad input, SIGKILL and configuration.

use crate::support;

use std::collections::HashSet;

use serde_json::{Value, json};
use support::http::Client;
use support::process::{self, Proc};
use support::recorder::{Mode, Recorded, Recorder};
use support::{Running, eventually, listener, listeners, start};
use switchyard_event_bus::{Settings, Subscriber};

async fn bus_with(dir: &std::path::Path, recorders: &[&Recorder]) -> Running {
    let subscribers = recorders
        .iter()
        .enumerate()
        .map(|(i, r)| Subscriber::parse(&format!("sub{i}={}", r.url)).expect("subscriber"))
        .collect();
    let mut settings = Settings::for_test(dir, subscribers);
    // The app's contract checks the payloads of the types it knows (here the blog's).
    settings.payload_check = Some(switchyard_registry::BLOG.check_payload);
    bus_with_settings(settings).await
}

async fn bus_with_settings(settings: Settings) -> Running {
    start(listeners(0).await, move |l, s| {
        switchyard_event_bus::launch(settings, l, s)
    })
}

async fn recorder() -> Recorder {
    Recorder::start(listener(0).await, Recorded::default()).await
}

fn event(publisher: usize, n: usize) -> Value {
    json!({"type": "TestEvent", "data": {"publisher": publisher, "n": n}})
}

/// Every seq from 1 to `count`, once, in order.
fn assert_in_log_order(seqs: &[i64], count: usize) {
    let expected: Vec<i64> = (1..=i64::try_from(count).expect("count")).collect();
    assert_eq!(
        seqs,
        expected.as_slice(),
        "deliveries out of order, missing or repeated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_every_event_in_log_order_under_concurrent_publishers() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = (recorder().await, recorder().await);
    let bus = bus_with(dir.path(), &[&a, &b]).await;
    let client = Client::default();
    let (publishers, per) = (8, 60);
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let (client, url) = (client.clone(), format!("{}/events", bus.url()));
        tasks.push(tokio::spawn(async move {
            for n in 0..per {
                let answer = client.post_json(&url, &event(p, n)).await;
                assert_eq!(answer.status, 200);
                assert_eq!(answer.json(), json!({"status": "OK"}));
            }
        }));
    }
    for t in tasks {
        t.await.expect("publisher");
    }
    let total = publishers * per;
    for r in [&a, &b] {
        eventually("all events delivered", || async {
            (r.recorded.len() >= total).then_some(())
        })
        .await;
        assert_in_log_order(&r.recorded.seqs(), total);
        // Each publisher's own events arrive in the order it published them.
        for p in 0..publishers {
            let ns: Vec<i64> = r
                .recorded
                .events()
                .iter()
                .filter(|e| e["data"]["publisher"] == p)
                .map(|e| e["data"]["n"].as_i64().expect("n"))
                .collect();
            assert_eq!(
                ns,
                (0..i64::try_from(per).expect("per")).collect::<Vec<_>>()
            );
        }
    }
    // The log serves the same, oldest first, and every event got an id.
    let log = client.get(&format!("{}/events", bus.url())).await.json();
    let log = log.as_array().expect("array");
    assert_eq!(log.len(), total);
    let ids: HashSet<&str> = log.iter().map(|e| e["id"].as_str().expect("id")).collect();
    assert_eq!(ids.len(), total);
    bus.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_was_down_catches_up_in_order_and_never_delays_the_others() {
    let dir = tempfile::tempdir().expect("tmp");
    let (healthy, flaky) = (recorder().await, recorder().await);
    let flaky_port = flaky.port;
    let bus = bus_with(dir.path(), &[&healthy, &flaky]).await;
    let client = Client::default();
    let url = format!("{}/events", bus.url());
    for n in 0..10 {
        client.post_json(&url, &event(0, n)).await;
    }
    eventually("first ten at both", || async {
        (healthy.recorded.len() == 10 && flaky.recorded.len() == 10).then_some(())
    })
    .await;
    // The flaky subscriber goes away entirely, then answers 503 for a while.
    let flaky_recorded = flaky.recorded.clone();
    flaky.stop().await;
    for n in 10..40 {
        client.post_json(&url, &event(0, n)).await;
    }
    eventually("healthy one keeps receiving", || async {
        (healthy.recorded.len() == 40).then_some(())
    })
    .await;
    assert_eq!(flaky_recorded.len(), 10);
    flaky_recorded.set_mode(Mode::Unavailable);
    let flaky = Recorder::start(listener(flaky_port).await, flaky_recorded.clone()).await;
    for n in 40..50 {
        client.post_json(&url, &event(0, n)).await;
    }
    eventually("healthy one gets everything", || async {
        (healthy.recorded.len() == 50).then_some(())
    })
    .await;
    assert_eq!(flaky.recorded.len(), 10, "a 503 is not a delivery");
    flaky.recorded.set_mode(Mode::Accept);
    eventually("flaky one catches up", || async {
        (flaky.recorded.len() == 50).then_some(())
    })
    .await;
    assert_in_log_order(&flaky.recorded.seqs(), 50);
    assert_in_log_order(&healthy.recorded.seqs(), 50);
    let metrics = String::from_utf8(client.get(&format!("{}/metrics", bus.ops_url())).await.body)
        .expect("utf8");
    assert!(
        metrics.contains("switchyard_events_retried_total"),
        "{metrics}"
    );
    bus.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_survive_a_bus_restart_and_missed_events_are_delivered_after_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let sub = recorder().await;
    let bus = bus_with(dir.path(), &[&sub]).await;
    let client = Client::default();
    for n in 0..5 {
        client
            .post_json(&format!("{}/events", bus.url()), &event(0, n))
            .await;
    }
    eventually("five delivered", || async {
        (sub.recorded.len() == 5).then_some(())
    })
    .await;
    bus.stop().await.expect("clean stop");
    let bus = bus_with(dir.path(), &[&sub]).await;
    for n in 5..8 {
        client
            .post_json(&format!("{}/events", bus.url()), &event(0, n))
            .await;
    }
    eventually("eight delivered", || async {
        (sub.recorded.len() >= 8).then_some(())
    })
    .await;
    // A graceful stop saved the cursor: nothing was delivered twice.
    assert_in_log_order(&sub.recorded.seqs(), 8);
    bus.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_already_in_the_log_is_stored_once_and_ids_are_assigned() {
    let dir = tempfile::tempdir().expect("tmp");
    let sub = recorder().await;
    let bus = bus_with(dir.path(), &[&sub]).await;
    let client = Client::default();
    let url = format!("{}/events", bus.url());
    let e = json!({"id": "evt-1", "type": "TestEvent", "data": {"n": 1}});
    for _ in 0..3 {
        let a = client.post_json(&url, &e).await;
        assert_eq!((a.status, a.json()), (200, json!({"status": "OK"})));
    }
    client
        .post_json(&url, &json!({"type": "TestEvent", "data": {"n": 2}}))
        .await;
    eventually("two delivered", || async {
        (sub.recorded.len() == 2).then_some(())
    })
    .await;
    let log = client.get(&url).await.json();
    let log = log.as_array().expect("array").clone();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["id"], "evt-1");
    assert_eq!(log[0]["seq"], 1);
    assert!(
        log[1]["id"]
            .as_str()
            .is_some_and(|id| !id.is_empty() && id != "evt-1")
    );
    assert!(log[1]["occurredAt"].is_string());
    // Paging.
    let page = client.get(&format!("{url}?after=1&limit=10")).await.json();
    assert_eq!(page.as_array().map(Vec::len), Some(1));
    assert_eq!(page[0]["seq"], 2);
    let empty = client.get(&format!("{url}?after=2&limit=10")).await.json();
    assert_eq!(empty, json!([]));
    // Delivery is in log order: once a sentinel posted after the duplicates has arrived,
    // any delivery of a duplicate would have arrived before it.
    client
        .post_json(
            &url,
            &json!({"id": "sentinel", "type": "TestEvent", "data": {}}),
        )
        .await;
    eventually("the sentinel delivered", || async {
        sub.recorded
            .events()
            .iter()
            .any(|e| e["id"] == "sentinel")
            .then_some(())
    })
    .await;
    assert_eq!(
        sub.recorded.seqs(),
        vec![1, 2, 3],
        "a duplicate must not be delivered again"
    );
    bus.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_a_subscriber_rejects_is_set_aside_and_the_stream_moves_on() {
    let dir = tempfile::tempdir().expect("tmp");
    let sub = recorder().await;
    sub.recorded.reject_marked("poison");
    let bus = bus_with(dir.path(), &[&sub]).await;
    let client = Client::default();
    let url = format!("{}/events", bus.url());
    client
        .post_json(&url, &json!({"type": "T", "data": {"n": 1}}))
        .await;
    client
        .post_json(&url, &json!({"type": "T", "data": {"mark": "poison"}}))
        .await;
    client
        .post_json(&url, &json!({"type": "T", "data": {"n": 3}}))
        .await;
    eventually("the stream moves past the rejected event", || async {
        (sub.recorded.len() == 2).then_some(())
    })
    .await;
    assert_eq!(sub.recorded.seqs(), vec![1, 3]);
    let metrics = String::from_utf8(client.get(&format!("{}/metrics", bus.ops_url())).await.body)
        .expect("utf8");
    assert!(
        metrics.contains("switchyard_events_dead_lettered_total{"),
        "{metrics}"
    );
    bus.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_receives_only_the_types_it_declares_in_log_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let (all, some) = (recorder().await, recorder().await);
    let subscribers = vec![
        Subscriber::new("all", &all.url),
        Subscriber::new("some", &some.url).only(["A", "C"]),
    ];
    let bus = bus_with_settings(Settings::for_test(dir.path(), subscribers)).await;
    let client = Client::default();
    let url = format!("{}/events", bus.url());
    for t in ["A", "B", "C", "B", "A"] {
        client
            .post_json(&url, &json!({"type": t, "data": {}}))
            .await;
    }
    eventually("every event delivered to the subscriber of all", || async {
        (all.recorded.len() == 5).then_some(())
    })
    .await;
    eventually("A and C delivered", || async {
        (some.recorded.len() == 3).then_some(())
    })
    .await;
    let types: Vec<String> = some
        .recorded
        .events()
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(types, ["A", "C", "A"]);
    assert_eq!(some.recorded.seqs(), vec![1, 3, 5]);
    bus.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_event_comes_back_shortly_and_does_not_hold_up_the_rest() {
    let dir = tempfile::tempdir().expect("tmp");
    let sub = recorder().await;
    // More deferrals than max_deliver allows failures: deferrals must not count.
    sub.recorded.defer_marked("later", 5);
    let mut subscriber = Subscriber::new("sub", &sub.url);
    subscriber.max_deliver = 2;
    let bus = bus_with_settings(Settings::for_test(dir.path(), vec![subscriber])).await;
    let client = Client::default();
    let url = format!("{}/events", bus.url());
    for data in [json!({"n": 1}), json!({"mark": "later"}), json!({"n": 3})] {
        client
            .post_json(&url, &json!({"type": "T", "data": data}))
            .await;
    }
    eventually("all three delivered", || async {
        (sub.recorded.len() == 3).then_some(())
    })
    .await;
    // The deferred event waited beside the stream: the one after it was not held up.
    assert_eq!(sub.recorded.seqs(), vec![1, 3, 2], "parked, then delivered");
    assert_eq!(sub.recorded.deferred(), 5);
    let metrics = String::from_utf8(client.get(&format!("{}/metrics", bus.ops_url())).await.body)
        .expect("utf8");
    assert!(
        !metrics.contains("switchyard_events_dead_lettered_total{"),
        "a deferral is not a failure: {metrics}"
    );
    assert!(
        metrics.contains("switchyard_events_parked{service=\"event-bus\",subscriber=\"sub\"} 0"),
        "{metrics}"
    );
    bus.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_that_never_fills_ends_in_the_dead_letters_and_a_replay_delivers_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let sub = recorder().await;
    sub.recorded.defer_marked("never", usize::MAX);
    let mut settings = Settings::for_test(dir.path(), vec![Subscriber::new("sub", &sub.url)]);
    settings.defer_limit = std::time::Duration::from_millis(300);
    let bus = bus_with_settings(settings).await;
    let client = Client::default();
    let url = format!("{}/events", bus.url());
    for data in [json!({"mark": "never"}), json!({"n": 2})] {
        client
            .post_json(&url, &json!({"type": "T", "data": data}))
            .await;
    }
    eventually(
        "the stream moves past the event that never applies",
        || async { (sub.recorded.len() == 1).then_some(()) },
    )
    .await;
    assert_eq!(sub.recorded.seqs(), vec![2]);
    let dead = format!("{}/dead-letters", bus.ops_url());
    let listed = eventually("the deferred event dead-lettered", || async {
        let list: Value = serde_json::from_slice(&client.get(&dead).await.body).ok()?;
        (list.as_array()?.len() == 1).then_some(list)
    })
    .await;
    assert_eq!(listed[0]["subscriber"], "sub");
    assert_eq!(listed[0]["seq"], 1);
    assert_eq!(listed[0]["status"], 425);
    assert_eq!(listed[0]["type"], "T");
    assert!(sub.recorded.deferred() >= 2, "it was delivered again");
    let metrics = String::from_utf8(client.get(&format!("{}/metrics", bus.ops_url())).await.body)
        .expect("utf8");
    assert!(
        metrics.contains("switchyard_events_dead_lettered_total{"),
        "{metrics}"
    );
    let shown: Value =
        serde_json::from_slice(&client.get(&format!("{dead}/sub/1")).await.body).expect("json");
    assert_eq!(shown["event"]["data"]["mark"], "never");
    // The gap is filled (the subscriber takes it now): a replay delivers it, once.
    sub.recorded.defer_marked("never", 0);
    let replayed = client
        .post_json(&format!("{dead}/sub/1/replay"), &json!({}))
        .await;
    assert_eq!(replayed.status, 200, "{:?}", replayed);
    eventually("the replayed event delivered", || async {
        (sub.recorded.seqs() == vec![2, 1]).then_some(())
    })
    .await;
    let again = client
        .post_json(&format!("{dead}/sub/1/replay"), &json!({}))
        .await;
    assert_eq!(again.status, 404, "a replay is done once: {:?}", again);
    let list: Value = serde_json::from_slice(&client.get(&dead).await.body).expect("json");
    assert_eq!(list, json!([]));
    bus.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_a_400_json_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let bus = bus_with(dir.path(), &[]).await;
    let client = Client::default();
    let url = format!("{}/events", bus.url());
    client
        .post_raw(&url, "application/json", "{not json")
        .await
        .assert_error(400, None);
    client
        .post_raw(&url, "application/json", vec![0xff, 0xfe])
        .await
        .assert_error(400, None);
    client
        .post_raw(&url, "text/plain", r#"{"type":"X"}"#)
        .await
        .assert_error(400, None);
    client
        .post_json(&url, &json!([1, 2]))
        .await
        .assert_error(400, None);
    client
        .post_json(&url, &json!({"data": {}}))
        .await
        .assert_error(400, Some("type"));
    client
        .post_json(&url, &json!({"type": 5}))
        .await
        .assert_error(400, Some("type"));
    client
        .post_json(&url, &json!({"type": "X", "id": {}}))
        .await
        .assert_error(400, Some("id"));
    // A known type with a payload that breaks the contract never enters the log.
    client
        .post_json(
            &url,
            &json!({"type": "CommentCreated", "data": {"id": "c", "postId": "p"}}),
        )
        .await
        .assert_error(400, Some("data.content"));
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    client
        .post_raw(&url, "application/json", deep)
        .await
        .assert_error(400, None);
    let huge = format!(r#"{{"type":"X","data":"{}"}}"#, "x".repeat(200_000));
    client
        .post_raw(&url, "application/json", huge)
        .await
        .assert_error(413, None);
    // The bus answers 413 without reading the rest of the body and closes that
    // connection; a pooled client may hand the next request to it before it sees the close
    // (hyper's "incomplete message"). The next requests go on a connection of their own.
    let client = Client::default();
    client
        .get(&format!("{url}?after=-1"))
        .await
        .assert_error(400, Some("after"));
    client
        .get(&format!("{url}?limit=0"))
        .await
        .assert_error(400, Some("limit"));
    client
        .get(&format!("{url}?limit=abc"))
        .await
        .assert_error(400, Some("limit"));
    client
        .get(&format!("{}/nowhere", bus.url()))
        .await
        .assert_error(404, None);
    client
        .request(reqwest::Method::DELETE, &url)
        .await
        .assert_error(405, None);
    assert_eq!(client.get(&url).await.json(), json!([]));
    bus.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_the_bus_process_is_killed() {
    let dir = tempfile::tempdir().expect("tmp");
    let sub = recorder().await;
    let port = process::free_port();
    let envs = [("SUBSCRIBERS", format!("sub={}", sub.url))];
    let client = Client::default();
    let mut bus = Proc::serve("blog/event-bus", port, dir.path(), &envs);
    bus.wait_ready(&client).await;
    let url = bus.url() + "/events";
    // Publishers keep going while the bus is killed and restarted; an unacknowledged event
    // is retried with the same id, as the outbox relay does.
    let publishing = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..400 {
                let e = json!({"id": format!("e{n}"), "type": "T", "data": {"n": n}});
                let body = serde_json::to_vec(&e).expect("json");
                loop {
                    let sent = reqwest::Client::new()
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    if matches!(&sent, Ok(r) if r.status().is_success()) {
                        acked.push(format!("e{n}"));
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
            let _ = client;
            acked
        })
    };
    eventually("some events delivered", || async {
        (sub.recorded.len() > 50).then_some(())
    })
    .await;
    bus.kill9();
    let mut bus = Proc::serve("blog/event-bus", port, dir.path(), &envs);
    bus.wait_ready(&client).await;
    eventually("more events after restart", || async {
        (sub.recorded.len() > 200).then_some(())
    })
    .await;
    bus.kill9();
    let mut bus = Proc::serve("blog/event-bus", port, dir.path(), &envs);
    bus.wait_ready(&client).await;
    let acked = publishing.await.expect("publisher");
    assert_eq!(acked.len(), 400);
    let log = client.get(&url).await.json();
    let ids: Vec<&str> = log
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "an event stored twice");
    for id in &acked {
        assert!(unique.contains(id.as_str()), "acknowledged event {id} lost");
    }
    eventually("the subscriber has everything", || async {
        let got: HashSet<String> = sub
            .recorded
            .events()
            .iter()
            .filter_map(|e| e["id"].as_str().map(String::from))
            .collect();
        acked.iter().all(|id| got.contains(id)).then_some(())
    })
    .await;
    // At least once, in order: seqs never go backwards except for a redelivered suffix.
    let seqs = sub.recorded.seqs();
    let mut highest = 0;
    for s in &seqs {
        assert!(*s <= highest + 1, "gap: {s} after {highest}");
        highest = highest.max(*s);
    }
    assert_eq!(bus.terminate().code(), Some(0));
    sub.stop().await;
}

#[test]
fn missing_or_malformed_configuration_is_refused_at_start() {
    for (envs, name) in [
        (vec![("PORT", "forty")], "PORT"),
        (vec![("DATABASE_URL", "mysql://x/y")], "DATABASE_URL"),
        (vec![("EVENT_BUS_URL", "bus:4005")], "EVENT_BUS_URL"),
        (vec![("LOG_FORMAT", "xml")], "LOG_FORMAT"),
        (vec![("REQUEST_TIMEOUT_MS", "-1")], "REQUEST_TIMEOUT_MS"),
    ] {
        let (status, stderr) = process::run(&["serve", "posts"], &envs);
        assert!(!status.success(), "{envs:?} accepted");
        assert!(
            stderr.contains(name),
            "{envs:?}: stderr does not name {name}: {stderr}"
        );
    }
    let (status, stderr) = process::run(
        &["serve", "blog/event-bus"],
        &[("SUBSCRIBERS", "posts=ftp://x")],
    );
    assert!(!status.success());
    assert!(stderr.contains("SUBSCRIBERS"), "{stderr}");
    let (status, _) = process::run(&["serve"], &[]);
    assert!(!status.success(), "a service name is required");
    let (status, stderr) = process::run(&["serve", "nonsense"], &[]);
    assert!(!status.success());
    assert!(stderr.contains("posts"), "lists the services: {stderr}");
}

#[test]
fn help_lists_the_services() {
    let out = std::process::Command::new(process::BIN)
        .arg("--help")
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    for s in ["event-bus", "posts", "comments", "query", "moderation"] {
        assert!(text.contains(s), "{s} missing from --help: {text}");
    }
}

/// With `EVENT_BUS_SECRET` the bus takes events, and lets its log be read, only from who
/// carries it, and carries it on its deliveries; without one (the other tests, and the
/// course's own services) it takes anyone's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_with_a_secret_takes_events_only_from_who_holds_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let sub = recorder().await;
    let secret = "the-secret-of-this-bus-0123456789abcdef";
    let mut settings = Settings::for_test(dir.path(), vec![Subscriber::new("sub", &sub.url)]);
    settings.secret = Some(switchyard_kit::BusSecret::new(secret).expect("secret"));
    let bus = bus_with_settings(settings).await;
    let client = Client::default();
    let url = format!("{}/events", bus.url());
    let event = json!({"type": "T", "data": {"n": 1}});
    let refused = client.post_json(&url, &event).await;
    refused.assert_error(401, None);
    let wrong = client
        .with_headers(
            reqwest::Method::POST,
            &url,
            None,
            Some(&event),
            &[(
                "authorization",
                "Bearer the-secret-of-another-bus-0123456789",
            )],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(client.get(&url).await.status, 401, "nor is the log read");
    let bearer = format!("Bearer {secret}");
    let taken = client
        .with_headers(
            reqwest::Method::POST,
            &url,
            None,
            Some(&event),
            &[("authorization", bearer.as_str())],
        )
        .await;
    assert_eq!(taken.status, 200);
    eventually("the event delivered", || async {
        (sub.recorded.len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        sub.recorded.seqs(),
        vec![1],
        "only the event with the secret"
    );
    assert_eq!(sub.recorded.authorizations(), vec![Some(bearer.clone())]);
    let log = client
        .with_headers(
            reqwest::Method::GET,
            &url,
            None,
            None,
            &[("authorization", bearer.as_str())],
        )
        .await;
    assert_eq!(log.status, 200);
    assert_eq!(log.json().as_array().map(Vec::len), Some(1));
    bus.stop().await.expect("clean stop");
}
