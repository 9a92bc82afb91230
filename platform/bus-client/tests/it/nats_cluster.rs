//! A stream kept by three servers of a NATS cluster of the test's own (Debian's
//! `nats-server`, JetStream on loopback with `server_name`, `jetstream` and `cluster {
//! routes }`): the bus connects to the three at once (`nats://a,nats://b,nats://c`), creates
//! its streams with three replicas, and loses nothing when one server is SIGKILLed while
//! events are published, and started again.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use switchyard_bus_client::{NatsBus, Publisher};
use switchyard_events::Envelope;

const NATS_BIN: &str = "/usr/sbin/nats-server";

/// One server of the cluster: its client and route ports, its store, its process.
struct Node {
    name: String,
    port: u16,
    config: std::path::PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self) {
        let child = Command::new(NATS_BIN)
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
    }

    /// SIGKILL: gone at once, as in a crash.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Three servers forming one JetStream cluster, their stores in `dir`.
fn cluster(dir: &std::path::Path) -> Vec<Node> {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    ports
        .iter()
        .enumerate()
        .map(|(i, (port, route))| {
            let name = format!("n{i}");
            let routes: Vec<String> = ports
                .iter()
                .filter(|(_, r)| r != route)
                .map(|(_, r)| format!("nats-route://127.0.0.1:{r}"))
                .collect();
            let config = dir.join(format!("{name}.conf"));
            let text = format!(
                "server_name: {name}\nlisten: 127.0.0.1:{port}\n\
                 jetstream {{ store_dir: \"{}\" }}\n\
                 cluster {{ name: sy\n listen: 127.0.0.1:{route}\n routes: [{}] }}\n",
                dir.join(&name).display(),
                routes.join(", ")
            );
            std::fs::write(&config, text).expect("write the configuration");
            let mut node = Node {
                name,
                port: *port,
                config,
                child: None,
            };
            node.start();
            node
        })
        .collect()
}

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
    if !std::path::Path::new(NATS_BIN).exists() {
        switchyard_kit::testing::skip_or_fail(&format!("no {NATS_BIN}"));
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = cluster(dir.path());
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| format!("nats://127.0.0.1:{}", n.port))
        .collect();
    let id = switchyard_events::ids::entity_id();
    let (stream, prefix) = (format!("SYC_{id}"), format!("syc.{id}"));
    let bus = NatsBus::connect(&urls.join(","), &stream, &prefix)
        .await
        .expect("connect")
        .with_stream_replicas(3);
    // The cluster elects its JetStream leader a few seconds after the servers start.
    switchyard_kit::wait::until(
        "the streams on three servers",
        Duration::from_secs(60),
        || async { bus.ensure_streams().await.ok() },
    )
    .await
    .expect("streams");
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
    let victim = nodes
        .iter()
        .position(|n| {
            Some(n.name.as_str()) == info.cluster.as_ref().and_then(|c| c.leader.as_deref())
        })
        .unwrap_or(0);
    nodes[victim].kill();
    for e in &events[40..80] {
        publish_until_taken(&bus, e).await;
    }
    nodes[victim].start();
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
