//! A stream kept by three servers of a NATS cluster of the test's own (Debian's
//! `nats-server`, JetStream on loopback with `server_name`, `jetstream` and `cluster {
//! routes }`): the bus connects to the three at once (`nats://a,nats://b,nats://c`), creates
//! its streams with three replicas, and loses nothing when one server is SIGKILLed while
//! events are published, and started again.

use std::time::Duration;

use bytes::Bytes;
use switchyard_bus_client::{NatsBus, Publisher};
use switchyard_events::Envelope;
use switchyard_testkit::nats_cluster::{NATS_BIN, NatsCluster};

async fn publish_until_taken(bus: &NatsBus, event: &Envelope) {
    // While a server is down the stream may be electing a leader: the outbox retries a
    // publish that failed; so does this (the event's id makes a retry a duplicate).
    switchyard_kit::wait::until("the event to be taken", Duration::from_secs(60), || async {
        bus.publish(&event.event_type, &event.id, Bytes::from(event.to_bytes()))
            .await
            .ok()
    })
    .await
    .expect("published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_three_replicas_loses_nothing_when_a_server_is_killed() {
    if !NatsCluster::available() {
        switchyard_kit::testing::skip_or_fail(&format!("no {NATS_BIN}"));
        return;
    }
    let mut cluster = NatsCluster::start();
    let id = switchyard_events::ids::entity_id();
    let (stream, prefix) = (format!("SYC_{id}"), format!("syc.{id}"));
    let bus = cluster.make_streams(&stream, &prefix).await;
    let info = bus
        .jetstream()
        .get_stream(&stream)
        .await
        .expect("stream")
        .info()
        .await
        .expect("stream info")
        .clone();
    assert_eq!(info.config.num_replicas, 3);
    let events: Vec<Envelope> = (0..120)
        .map(|n| Envelope::new("Counted", serde_json::json!({ "n": n })))
        .collect();
    for e in &events[..40] {
        publish_until_taken(&bus, e).await;
    }
    // A server SIGKILLed mid-stream: the other two keep the stream (a majority).
    let victim = cluster.node_named(info.cluster.as_ref().and_then(|c| c.leader.as_deref()));
    victim.kill();
    for e in &events[40..80] {
        publish_until_taken(&bus, e).await;
    }
    cluster
        .node_named(info.cluster.as_ref().and_then(|c| c.leader.as_deref()))
        .start();
    for e in &events[80..] {
        publish_until_taken(&bus, e).await;
    }
    // Every event once, in order.
    let stored = switchyard_kit::wait::until(
        "all 120 events read back",
        Duration::from_secs(60),
        || async {
            let page = bus.page(0, 1000).await.ok()?;
            (page.len() == events.len()).then_some(page)
        },
    )
    .await
    .expect("the stream's events");
    let ids: Vec<&str> = stored.iter().map(|e| e.id.as_str()).collect();
    let sent: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, sent);
    let _ = bus.delete_streams().await;
}
