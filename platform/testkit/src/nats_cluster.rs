//! A NATS JetStream cluster of the test's own: three servers of Debian's `nats-server` on
//! loopback (`server_name`, `jetstream` and `cluster { routes }`), each on free ports with
//! its store in a temporary directory. A server can be SIGKILLed and started again on the
//! same ports and store; all are killed when the cluster is dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use switchyard_bus_client::NatsBus;

/// Where Debian puts the server.
pub const NATS_BIN: &str = "/usr/sbin/nats-server";

/// One server of the cluster.
pub struct Node {
    /// Its `server_name` (`n0`, `n1`, `n2`): what JetStream names a stream's leader by.
    pub name: String,
    /// Its client port.
    pub port: u16,
    config: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// Starts it (again, on the same ports and store).
    pub fn start(&mut self) {
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
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three servers forming one JetStream cluster.
pub struct NatsCluster {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Whether the server binary is there (tests skip, or fail under CI, without it).
    pub fn available() -> bool {
        std::path::Path::new(NATS_BIN).exists()
    }

    /// Starts the three servers (the cluster elects its JetStream leader a few seconds
    /// later: a stream's creation is retried until then).
    pub fn start() -> NatsCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, (port, route))| {
                let name = format!("n{i}");
                let routes: Vec<String> = ports
                    .iter()
                    .filter(|(_, r)| r != route)
                    .map(|(_, r)| format!("nats-route://127.0.0.1:{r}"))
                    .collect();
                let config = dir.path().join(format!("{name}.conf"));
                let text = format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{port}\n\
                     jetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{ name: sy\n listen: 127.0.0.1:{route}\n routes: [{}] }}\n",
                    dir.path().join(&name).display(),
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
            .collect();
        NatsCluster { nodes, _dir: dir }
    }

    /// The three client URLs, comma-separated (`EVENT_BUS_URL`, `up --nats`).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(Node::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Connects to the three servers and makes the streams `stream` (subjects under
    /// `prefix`) with three replicas, retried until the cluster has elected its JetStream
    /// leader (a few seconds after the servers start). The connection, for reading them.
    pub async fn make_streams(&self, stream: &str, prefix: &str) -> NatsBus {
        let bus = NatsBus::connect(&self.urls(), stream, prefix)
            .await
            .expect("connect to the cluster")
            .with_stream_replicas(3);
        switchyard_kit::wait::until(
            "the streams on three servers",
            std::time::Duration::from_secs(60),
            || async { bus.ensure_streams().await.ok() },
        )
        .await
        .expect("the streams");
        bus
    }

    /// The node named `name` (a stream's leader, as JetStream reports it), else the first.
    pub fn node_named(&mut self, name: Option<&str>) -> &mut Node {
        let i = self
            .nodes
            .iter()
            .position(|n| Some(n.name.as_str()) == name)
            .unwrap_or(0);
        &mut self.nodes[i]
    }
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
