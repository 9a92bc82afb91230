//! `switchyard up blog` as a child process, on free ports.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::process::BIN;

/// Every local port of every app (API and ops), which `--port-offset` shifts: read from
/// the app registry.
pub fn ports() -> Vec<u16> {
    // With their second replica's (`up --replicas 2`).
    switchyard_registry::all()
        .flat_map(|r| {
            let (port, ops) = (r.service.local_port, r.service.local_ops_port);
            let app = r.service.kind == switchyard_registry::Kind::App;
            [
                Some(port),
                Some(ops),
                app.then(|| switchyard_registry::replica_port(port, 2))
                    .flatten(),
                app.then(|| switchyard_registry::replica_port(ops, 2))
                    .flatten(),
            ]
        })
        .flatten()
        .collect()
}

fn free(port: u32) -> bool {
    u16::try_from(port).is_ok_and(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
}

/// Offsets already handed to a test of this process: tests in one binary run at once, and
/// a port that is free when checked stays free only until the `up` that owns it binds it.
static TAKEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// Every shifted port stays below this: Linux hands out the ports from 32768 up
/// (`ip_local_port_range`) as the local ports of outgoing connections, and one of those
/// (a client's, a database connection's) taking a port between the check below and the
/// bind made `up` fail with "address already in use".
const EPHEMERAL_PORTS_START: u32 = 32_768;

/// An offset that shifts every port of every app onto a free one below the ephemeral
/// ports, never the same twice in one test process.
pub fn free_offset() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let seed = (std::process::id() ^ nanos) as u16;
    let mut taken = TAKEN.lock().expect("lock");
    let highest = ports().into_iter().max().map_or(0, u32::from);
    // Offsets from 10,000 in steps of 1,000 while the highest port stays below the
    // ephemeral ones (with the registry's ports up to 9,580: 10,000 to 23,000).
    let steps =
        u16::try_from(EPHEMERAL_PORTS_START.saturating_sub(100 + highest + 10_000) / 1_000 + 1)
            .unwrap_or(1)
            .max(1);
    for attempt in 0..400u16 {
        if attempt == 200 {
            // Every candidate clashes with an offset handed out before: forget the ones
            // whose `up` has stopped (none of their ports in use) and try again.
            taken.retain(|t| ports().iter().any(|p| !free(u32::from(*p) + u32::from(*t))));
        }
        let offset = 10_000
            + ((seed.wrapping_add(attempt.wrapping_mul(97))) % steps) * 1_000
            + (attempt % 7) * 10;
        // Two offsets share a port when they differ by the distance between two ports.
        let shifted = |o: u16| {
            ports()
                .into_iter()
                .map(move |p| u32::from(p) + u32::from(o))
        };
        if taken
            .iter()
            .any(|t| shifted(*t).any(|p| shifted(offset).any(|q| p == q)))
        {
            continue;
        }
        if ports()
            .iter()
            .all(|p| free(u32::from(*p) + u32::from(offset)))
        {
            taken.push(offset);
            return offset;
        }
    }
    panic!("no free port offset");
}

pub struct Up {
    pub child: Child,
    pub gateway: u16,
    pub offset: u16,
    pub output: Arc<Mutex<Vec<String>>>,
}

impl Up {
    /// Starts `up blog` with `data_dir`, and waits for its "is up" line.
    pub fn start(data_dir: &Path, offset: u16, gateway: u16) -> Up {
        Up::start_with(data_dir, offset, gateway, &[])
    }

    /// Like [`Up::start`], with more arguments (`--postgres`, `--nats`, ...).
    pub fn start_with(data_dir: &Path, offset: u16, gateway: u16, extra: &[String]) -> Up {
        Up::start_app("blog", data_dir, offset, gateway, extra, &[])
    }

    /// `up <app>` with more arguments and environment variables.
    pub fn start_app(
        app: &str,
        data_dir: &Path,
        offset: u16,
        gateway: u16,
        extra: &[String],
        envs: &[(&str, &str)],
    ) -> Up {
        let mut command = Command::new(BIN);
        command
            .args([
                "up",
                app,
                "--port-offset",
                &offset.to_string(),
                "--gateway-port",
                &gateway.to_string(),
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra);
        // Spans are exported under up only for the tests that ask (an OTEL_ variable of
        // theirs): the others keep the CPU for what they time.
        for k in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_SDK_DISABLED",
            "OTEL_TRACES_EXPORTER",
        ] {
            command.env_remove(k);
        }
        if !envs.iter().any(|(k, _)| k.starts_with("OTEL_")) {
            command.env("OTEL_SDK_DISABLED", "true");
        }
        command.env("RUST_LOG", "warn");
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn up");
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().expect("lock").push(line);
                }
            });
        }
        let up = Up {
            child,
            gateway,
            offset,
            output,
        };
        up.wait_for_line("is up in", Duration::from_secs(60));
        up
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway)
    }

    pub fn lines(&self) -> Vec<String> {
        self.output.lock().expect("lock").clone()
    }

    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needle:?}; output:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pid of the child running `service` (its first replica, when it runs as several:
    /// the one whose data folder is the service's name; the others' end in `-k`).
    pub fn service_pid(&self, service: &str) -> Option<u32> {
        let parent = self.child.id();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The parent pid is the 2nd field after the command in parentheses.
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid != Some(parent) {
                continue;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            // `up` runs `serve <app>/<service>`.
            if args.len() >= 3
                && args[1] == b"serve"
                && switchyard_registry::resolve(&String::from_utf8_lossy(args[2]))
                    .is_ok_and(|r| r.service.name == service)
                && first_replica(pid, service)
            {
                return Some(pid);
            }
        }
        None
    }

    /// SIGTERM, like Ctrl-C; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "up did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether process `pid` of `service` is its first replica (its `DATA_DIR` ends in the
/// service's name).
fn first_replica(pid: u32, service: &str) -> bool {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    environ.split(|b| *b == 0).any(|var| {
        var.strip_prefix(b"DATA_DIR=")
            .is_some_and(|dir| dir.ends_with(format!("/{service}").as_bytes()))
    })
}

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.stop();
        }
    }
}
