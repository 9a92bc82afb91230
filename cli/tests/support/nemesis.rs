//! Disturbing the shared servers: stopping and starting NATS, dropping PostgreSQL
//! connections.

use std::time::{Duration, Instant};

use sqlx::Connection;

use super::backend;

const NATS_BIN: &str = "/usr/sbin/nats-server";

/// The command that starts the machine's NATS server (as it was started).
pub fn start_nats() {
    let status = std::process::Command::new("start-stop-daemon")
        .args([
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            NATS_BIN,
            "--",
            "-a",
            "127.0.0.1",
            "-p",
            "4222",
            "-js",
            "-sd",
            "/var/lib/nats-server",
            "-l",
            "/var/log/nats-server.log",
        ])
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => eprintln!("warning: starting nats-server: {other:?}"),
    }
}

pub fn nats_addr() -> String {
    backend::host_port(&backend::nats_url(), 4222)
}

/// The pids of the running nats-server processes.
pub fn nats_pids() -> Vec<String> {
    let out = std::process::Command::new("pgrep")
        .args(["-x", "nats-server"])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Stops the NATS server (SIGTERM to its pid) and waits until the port is closed.
pub async fn stop_nats() {
    let pids = nats_pids();
    assert!(!pids.is_empty(), "no nats-server process to stop");
    for pid in &pids {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", pid])
            .status();
    }
    let addr = nats_addr();
    switchyard_kit::wait::until("NATS to stop", Duration::from_secs(30), || {
        let addr = addr.clone();
        async move { (!backend::reachable(&addr) && nats_pids().is_empty()).then_some(()) }
    })
    .await
    .expect("NATS stopped");
}

/// Starts the NATS server again and waits until it accepts connections.
pub async fn restart_nats() {
    start_nats();
    let addr = nats_addr();
    switchyard_kit::wait::until(
        "NATS to accept connections",
        Duration::from_secs(30),
        || {
            let addr = addr.clone();
            async move { backend::reachable(&addr).then_some(()) }
        },
    )
    .await
    .expect("NATS restarted");
}

/// Makes sure the NATS server runs again when the test ends, however it ends.
pub struct NatsGuard;

impl Drop for NatsGuard {
    fn drop(&mut self) {
        let addr = nats_addr();
        if backend::reachable(&addr) {
            return;
        }
        eprintln!("restarting nats-server after the test");
        start_nats();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !backend::reachable(&addr) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Terminates every connection to the databases matching `pattern` (a `LIKE` pattern);
/// returns how many were terminated.
pub async fn drop_postgres_connections(pattern: &str) -> i64 {
    let url = switchyard_kit::db::with_database(&backend::postgres_url(), "postgres");
    let Ok(mut conn) = sqlx::PgConnection::connect(&url).await else {
        return 0;
    };
    let terminated: Result<(i64,), _> = sqlx::query_as(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname LIKE $1 AND pid <> pg_backend_pid()",
    )
    .bind(pattern)
    .fetch_one(&mut conn)
    .await;
    let _ = conn.close().await;
    terminated.map(|t| t.0).unwrap_or(0)
}
