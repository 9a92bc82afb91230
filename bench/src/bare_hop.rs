//! The latency yardstick of an event's path through durable hops: the least work a chain of
//! durable hops can do on this machine.
//!
//! `switchyard-bench bare-hop --port P --database URL [--stream NAME] [--next URL]` serves
//! `POST /hop`: it stores the body durably, then, if it has a next hop, posts the same body
//! there and waits for its answer, then answers 201. Storing is committing one row to its own
//! database (SQLite in WAL mode, or PostgreSQL, through the same database layer and settings
//! as the services) or, with a `nats://` URL, publishing to the JetStream stream `NAME`
//! through the platform's `NatsBus` and waiting for its acknowledgement, as the relay does. A
//! chain of N of them, timed from the first request to its answer, is N durable writes and
//! N − 1 HTTP hops with nothing else: no outbox, no bus, no inbox.
//!
//! Two chains are compared with the services in the same run: the bare chain (one durable
//! hop per event hop, the yardstick) and the design's floor, a chain in which every
//! event hop also passes through a bare stand-in for the bus (an append to its durable log),
//! which is the least work an outbox, a durable bus and an inbox can do.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::http::StatusCode;
use switchyard_bus_client::NatsBus;
use switchyard_kit::db::Db;

use crate::Ctx;
use crate::procs::free_port;
use crate::prod::Resources;
use crate::report::Dist;

/// What a hop stands for in a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A service: one commit to its own database.
    Service,
    /// The bus between two services: an append to its durable log (the embedded bus's
    /// SQLite file, or a JetStream stream on production).
    Bus,
}

/// Where a hop stores what it is given.
enum Store {
    Db(Db),
    Stream(Box<NatsBus>, String),
}

struct Hop {
    store: Store,
    next: Option<String>,
    http: reqwest::Client,
}

/// Serves one hop until SIGTERM / Ctrl-C.
pub fn serve(
    port: u16,
    database: &str,
    stream: Option<String>,
    next: Option<String>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let store = if database.starts_with("nats://") {
            let stream = stream.context("--stream is needed with a nats:// URL")?;
            let prefix = stream.to_lowercase();
            let bus = NatsBus::connect(database, &stream, &prefix).await?;
            bus.ensure_streams().await?;
            Store::Stream(Box::new(bus), format!("{prefix}.hop"))
        } else {
            let db = Db::connect(database).await?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS hops (id TEXT PRIMARY KEY, body TEXT NOT NULL)",
            )
            .execute(db.pool())
            .await
            .context("creating the table")?;
            Store::Db(db)
        };
        let hop = Arc::new(Hop {
            store,
            next,
            http: reqwest::Client::builder().tcp_nodelay(true).build()?,
        });
        let app = axum::Router::new()
            .route("/hop", axum::routing::post(handle))
            .with_state(hop);
        crate::serve_until_stopped(port, app).await
    })
}

async fn handle(
    axum::extract::State(hop): axum::extract::State<Arc<Hop>>,
    body: String,
) -> StatusCode {
    let id = uuid::Uuid::now_v7().to_string();
    let stored = match &hop.store {
        Store::Db(db) => sqlx::query("INSERT INTO hops (id, body) VALUES ($1, $2)")
            .bind(&id)
            .bind(&body)
            .execute(db.pool())
            .await
            .map(drop)
            .map_err(anyhow::Error::from),
        Store::Stream(bus, subject) => bus
            .publish_raw(subject.clone(), Some(&id), body.clone().into(), &[])
            .await
            .map(drop),
    };
    if stored.is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    if let Some(next) = &hop.next {
        match hop.http.post(next).body(body).send().await {
            Ok(r) if r.status().is_success() => {}
            _ => return StatusCode::BAD_GATEWAY,
        }
    }
    StatusCode::CREATED
}

/// A chain of bare hops, each its own process and database; killed when dropped.
pub struct Chain {
    children: Vec<tokio::process::Child>,
    first: String,
}

impl Chain {
    /// Starts `hops` service hops in `dir` (SQLite) or on fresh PostgreSQL databases of `res`.
    pub async fn start(
        ctx: &Ctx,
        dir: &Path,
        hops: usize,
        res: Option<&Resources>,
    ) -> anyhow::Result<Chain> {
        Chain::start_kinds(ctx, dir, &vec![Kind::Service; hops], res).await
    }

    /// The design's floor for `event_hops` event hops: a service, then for each event hop
    /// the bus and the next service.
    pub async fn start_floor(
        ctx: &Ctx,
        dir: &Path,
        event_hops: usize,
        res: Option<&Resources>,
    ) -> anyhow::Result<Chain> {
        let mut kinds = vec![Kind::Service];
        for _ in 0..event_hops {
            kinds.extend([Kind::Bus, Kind::Service]);
        }
        Chain::start_kinds(ctx, dir, &kinds, res).await
    }

    /// Starts one hop of each kind, in order: a service on SQLite in `dir` or a fresh
    /// PostgreSQL database of `res`, the bus on SQLite in `dir` or a fresh stream of `res`.
    async fn start_kinds(
        ctx: &Ctx,
        dir: &Path,
        kinds: &[Kind],
        res: Option<&Resources>,
    ) -> anyhow::Result<Chain> {
        let exe = std::env::current_exe().context("locating switchyard-bench")?;
        let mut children = Vec::new();
        let mut next: Option<String> = None;
        let prefix = res.map(|r| r.fresh_prefix());
        let chain = uuid::Uuid::new_v4().simple().to_string();
        // The last hop first: each needs the address of the one after it.
        for (n, kind) in kinds.iter().enumerate().rev() {
            let port = free_port()?;
            let mut command = tokio::process::Command::new(&exe);
            command
                .args(["bare-hop", "--port", &port.to_string(), "--database"])
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            match (res, &prefix, kind) {
                (Some(res), _, Kind::Bus) => {
                    command
                        .arg(&res.servers.nats)
                        .args(["--stream", &res.stream().name]);
                }
                (Some(res), Some(prefix), Kind::Service) => {
                    command.arg(res.database(prefix, &format!("hop{n}")).await?);
                }
                _ => {
                    let file = dir.join(format!("hop-{chain}-{n}.db"));
                    command.arg(format!("sqlite://{}", file.display()));
                }
            }
            if let Some(next) = &next {
                command.args(["--next", next]);
            }
            children.push(command.spawn().context("starting a bare hop")?);
            let url = format!("http://127.0.0.1:{port}/hop");
            wait_answering(ctx, &url).await?;
            next = Some(url);
        }
        Ok(Chain {
            children,
            first: next.context("a chain of no hops")?,
        })
    }

    /// `n` sequential requests through the chain (after a few unmeasured): the latencies in ms.
    pub async fn measure(&self, ctx: &Ctx, n: usize) -> anyhow::Result<Dist> {
        let mut values = Vec::with_capacity(n);
        for i in 0..n + 10 {
            let t = Instant::now();
            let r = ctx
                .http
                .post(&self.first)
                .body(format!("{{\"n\":{i}}}"))
                .send()
                .await?;
            anyhow::ensure!(
                r.status().as_u16() == 201,
                "bare hop answered {}",
                r.status()
            );
            if i >= 10 {
                values.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        Ok(Dist::new(values))
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.start_kill();
        }
    }
}

/// Waits until the hop at `url` answers (any status: it is up).
async fn wait_answering(ctx: &Ctx, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if ctx.http.get(url).send().await.is_ok() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the bare hop at {url} did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
