//! A NATS server of the test's own (never the machine's): `/usr/sbin/nats-server` with
//! JetStream on a free port, its store in a temporary directory, optionally with a
//! configuration file (users). It can be SIGKILLed and started again on the same port and
//! store, and is killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::backend;

const NATS_BIN: &str = "/usr/sbin/nats-server";

pub struct NatsServer {
    pub port: u16,
    dir: tempfile::TempDir,
    config: Option<PathBuf>,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl NatsServer {
    /// Whether the binary is there (tests skip, or fail under CI, without it).
    pub fn available() -> bool {
        std::path::Path::new(NATS_BIN).exists()
    }

    /// Starts a server with JetStream; `config` (the text of a configuration file, e.g.
    /// an `authorization` block) and `env` (what it reads passwords from) are optional.
    pub async fn start(config: Option<&str>, env: &[(String, String)]) -> NatsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = config.map(|text| {
            let path = dir.path().join("nats.conf");
            std::fs::write(&path, text).expect("write the configuration");
            path
        });
        let mut server = NatsServer {
            port,
            dir,
            config,
            env: env.to_vec(),
            child: None,
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and store; waits until it accepts connections.
    pub async fn restart(&mut self) {
        let mut command = Command::new(NATS_BIN);
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path().join("store"))
            .stdout(Stdio::null())
            .stderr(self.log_file());
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        for (k, v) in &self.env {
            command.env(k, v);
        }
        self.child = Some(command.spawn().expect("start nats-server"));
        let addr = format!("127.0.0.1:{}", self.port);
        switchyard_kit::wait::until(
            "our NATS to accept connections",
            Duration::from_secs(30),
            || {
                let addr = addr.clone();
                async move { backend::reachable(&addr).then_some(()) }
            },
        )
        .await
        .expect("nats-server started");
    }

    /// Where the server writes its log (every start appends to it).
    fn log_file(&self) -> Stdio {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.log"))
        {
            Ok(file) => Stdio::from(file),
            Err(_) => Stdio::null(),
        }
    }

    /// What the server has logged so far (its permission violations among it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// SIGKILL: gone at once, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
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
