//! The latency yardstick of an event's path through durable hops: the least work a chain of
//! durable hops can do on this machine.
//!
//! `switchyard-bench bare-hop --port P --database URL [--next URL]` serves `POST /hop`: it
//! commits one row to its own database (SQLite in WAL mode, or PostgreSQL, through the same
//! database layer and settings as the services), then, if it has a next hop, posts the same
//! body there and waits for its answer, then answers 201. A chain of N of them, timed from
//! the first request to its answer, is N commits and N − 1 HTTP hops with nothing else: no
//! outbox, no bus, no inbox. The ticketing and blog latencies are compared with it in the
//! same run.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::http::StatusCode;
use switchyard_kit::db::Db;

use crate::Ctx;
use crate::procs::free_port;
use crate::prod::Resources;
use crate::report::Dist;

struct Hop {
    db: Db,
    next: Option<String>,
    http: reqwest::Client,
}

/// Serves one hop until SIGTERM / Ctrl-C.
pub fn serve(port: u16, database: &str, next: Option<String>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let db = Db::connect(database).await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS hops (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
            .execute(db.pool())
            .await
            .context("creating the table")?;
        let hop = Arc::new(Hop {
            db,
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
    let stored = sqlx::query("INSERT INTO hops (id, body) VALUES ($1, $2)")
        .bind(&id)
        .bind(&body)
        .execute(hop.db.pool())
        .await;
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
    /// Starts `hops` hops in `dir` (SQLite) or on fresh PostgreSQL databases of `res`.
    pub async fn start(
        ctx: &Ctx,
        dir: &Path,
        hops: usize,
        res: Option<&Resources>,
    ) -> anyhow::Result<Chain> {
        let exe = std::env::current_exe().context("locating switchyard-bench")?;
        let mut children = Vec::new();
        let mut next: Option<String> = None;
        let prefix = res.map(|r| r.fresh_prefix());
        // The last hop first: each needs the address of the one after it.
        for n in (0..hops).rev() {
            let port = free_port()?;
            let database = match (res, &prefix) {
                (Some(res), Some(prefix)) => res.database(prefix, &format!("hop{n}")).await?,
                _ => format!("sqlite://{}", dir.join(format!("hop{n}.db")).display()),
            };
            let mut command = tokio::process::Command::new(&exe);
            command
                .args(["bare-hop", "--port", &port.to_string(), "--database"])
                .arg(&database)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
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
