//! The production backend: a PostgreSQL server and a NATS JetStream server, and the
//! databases and streams one run creates on them (every one dropped at the end).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::Context;
use switchyard_bus_client::NatsBus;
use switchyard_kit::db::{drop_postgres_database, ensure_postgres_database};

use crate::procs::lock;

/// Where the production servers are (`BENCH_POSTGRES_URL`, `BENCH_NATS_URL`).
#[derive(Debug, Clone)]
pub struct Servers {
    pub postgres: String,
    pub nats: String,
}

impl Servers {
    pub fn from_env() -> Servers {
        Servers {
            postgres: std::env::var("BENCH_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string()),
            nats: std::env::var("BENCH_NATS_URL")
                .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_string()),
        }
    }

    /// Fails with a short reason when either server is not reachable (or NATS has no
    /// JetStream).
    pub async fn check(&self) -> anyhow::Result<()> {
        tokio::time::timeout(
            Duration::from_secs(5),
            drop_postgres_database(&self.postgres, "sybench_probe"),
        )
        .await
        .map_err(|_| anyhow::anyhow!("PostgreSQL at {} did not answer within 5 s", self.postgres))?
        .with_context(|| format!("PostgreSQL not reachable at {}", self.postgres))?;
        let client = tokio::time::timeout(Duration::from_secs(5), async_nats::connect(&self.nats))
            .await
            .map_err(|_| anyhow::anyhow!("NATS at {} did not answer within 5 s", self.nats))?
            .with_context(|| format!("NATS not reachable at {}", self.nats))?;
        let js = async_nats::jetstream::new(client);
        // `$JS.API.INFO`, read as plain JSON (any server version's answer is understood).
        let empty = serde_json::json!({});
        let info = js.request::<_, _, serde_json::Value>("INFO", &empty);
        let answer = tokio::time::timeout(Duration::from_secs(5), info)
            .await
            .map_err(|_| anyhow::anyhow!("NATS JetStream at {} did not answer", self.nats))?
            .map_err(|e| anyhow::anyhow!("NATS at {} has no JetStream: {e}", self.nats))?;
        if let Some(error) = answer.get("error") {
            anyhow::bail!("NATS JetStream at {} unavailable: {error}", self.nats);
        }
        Ok(())
    }
}

/// A JetStream stream and subject prefix, fresh for one run.
#[derive(Debug, Clone)]
pub struct Stream {
    pub name: String,
    pub prefix: String,
}

/// What one run created on the servers; [`Resources::cleanup`] drops it all (also done,
/// blocking, on drop, e.g. when a scenario fails or is interrupted).
pub struct Resources {
    pub servers: Servers,
    tag: String,
    counter: AtomicU32,
    databases: Mutex<Vec<String>>,
    streams: Mutex<Vec<Stream>>,
}

impl Resources {
    pub fn new(servers: &Servers) -> Resources {
        let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        Resources {
            servers: servers.clone(),
            tag,
            counter: AtomicU32::new(0),
            databases: Mutex::new(Vec::new()),
            streams: Mutex::new(Vec::new()),
        }
    }

    /// `sybench_<random>_<n>`: a prefix no other run uses.
    pub fn fresh_prefix(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("sybench_{}_{n}", self.tag)
    }

    /// A fresh stream (`SYBENCH_<random>_<n>`) and subject prefix, deleted at cleanup.
    pub fn stream(&self) -> Stream {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let s = Stream {
            name: format!("SYBENCH_{}_{n}", self.tag.to_uppercase()),
            prefix: format!("sybench_{}_{n}", self.tag),
        };
        lock(&self.streams).push(s.clone());
        s
    }

    /// Creates the database `<prefix>_<service>` and returns its URL.
    pub async fn database(&self, prefix: &str, service: &str) -> anyhow::Result<String> {
        let name = format!("{prefix}_{}", service.replace('-', "_"));
        self.register_database(&name);
        ensure_postgres_database(&self.servers.postgres, &name).await
    }

    /// Notes a database someone else (`switchyard up`) creates, to drop it at cleanup.
    pub fn register_database(&self, name: &str) {
        let mut dbs = lock(&self.databases);
        if !dbs.iter().any(|d| d == name) {
            dbs.push(name.to_string());
        }
    }

    /// The environment of a service on its own fresh database and on `stream`.
    pub async fn service_env(
        &self,
        service: &str,
        stream: &Stream,
    ) -> anyhow::Result<Vec<(&'static str, String)>> {
        let mut env = self.bus_env(stream);
        if has_database(service) {
            let prefix = self.fresh_prefix();
            env.push(("DATABASE_URL", self.database(&prefix, service).await?));
        }
        Ok(env)
    }

    /// `EVENT_BUS_URL`, `BUS_STREAM`, `BUS_SUBJECT_PREFIX` for `stream`.
    pub fn bus_env(&self, stream: &Stream) -> Vec<(&'static str, String)> {
        vec![
            ("EVENT_BUS_URL", self.servers.nats.clone()),
            ("BUS_STREAM", stream.name.clone()),
            ("BUS_SUBJECT_PREFIX", stream.prefix.clone()),
        ]
    }

    /// Drops every database and deletes every stream created so far; returns what failed.
    pub async fn cleanup(&self) -> Vec<String> {
        let dbs = std::mem::take(&mut *lock(&self.databases));
        let streams = std::mem::take(&mut *lock(&self.streams));
        cleanup(&self.servers, dbs, streams).await
    }
}

async fn cleanup(servers: &Servers, dbs: Vec<String>, streams: Vec<Stream>) -> Vec<String> {
    let mut failed = Vec::new();
    for db in dbs {
        let dropped = tokio::time::timeout(
            Duration::from_secs(30),
            drop_postgres_database(&servers.postgres, &db),
        )
        .await;
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(format!("database {db}: {e:#}")),
            Err(_) => failed.push(format!("database {db}: no answer within 30 s")),
        }
    }
    for s in streams {
        let deleted = tokio::time::timeout(Duration::from_secs(15), async {
            let bus = NatsBus::connect(&servers.nats, &s.name, &s.prefix).await?;
            bus.delete_streams().await
        })
        .await;
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failed.push(format!("stream {}: {e:#}", s.name)),
            Err(_) => failed.push(format!("stream {}: no answer within 15 s", s.name)),
        }
    }
    failed
}

impl Drop for Resources {
    fn drop(&mut self) {
        let dbs = std::mem::take(&mut *lock(&self.databases));
        let streams = std::mem::take(&mut *lock(&self.streams));
        if dbs.is_empty() && streams.is_empty() {
            return;
        }
        // Not cleaned up through `cleanup` (a failure or an interruption): do it now, on a
        // thread of its own (this may run inside the async runtime).
        let servers = self.servers.clone();
        let done = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return Vec::new();
            };
            rt.block_on(cleanup(&servers, dbs, streams))
        });
        if let Ok(failed) = done.join() {
            for f in failed {
                eprintln!("switchyard-bench: cleanup failed: {f}");
            }
        }
    }
}

/// Services that keep data (the client and the gateway have none).
pub fn has_database(service: &str) -> bool {
    let name = service.rsplit('/').next().unwrap_or(service);
    switchyard_registry::APPS
        .iter()
        .flat_map(|a| a.services.iter())
        .any(|s| s.name == name && s.database)
}

/// Which backends a scenario runs on, and why production is left out when it is.
#[derive(Debug, Clone)]
pub struct Plan {
    pub embedded: bool,
    /// The servers, when production runs.
    pub production: Option<Servers>,
    /// Why production does not run (unreachable servers, or not selected).
    pub production_skipped: Option<String>,
}

impl Plan {
    pub fn backends(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.embedded {
            out.push(crate::report::EMBEDDED);
        }
        if self.production.is_some() {
            out.push(crate::report::PRODUCTION);
        }
        out
    }
}
