//! Scenario 2: the blog's read side: `GET /posts` on query against a bare axum handler,
//! end-to-end moderation latency, and every service's memory.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::bare_hop::Chain;
use crate::blog::{ApprovalWatch, create_comment, populate, wait_settled};
use crate::procs::{Reference, RssSampler, Service, free_port, lock, mib};
use crate::prod::Resources;
use crate::report::{Dist, Figure, Section, fmt_num};
use crate::{Ctx, wrk};

const S: &str = "query";

pub async fn run(ctx: &Ctx) -> Section {
    let mut section = Section::new(
        S,
        "2. Blog services: query reads, moderation end to end, memory",
    );
    on_each_backend!(ctx, section, measure);
    ctx.skip_note(&mut section);
    section
}

/// The back end of the blog, each service its own process: on `embedded`, the HTTP event
/// bus and four services on SQLite; on `production`, the four services on PostgreSQL (a
/// fresh database each) and a fresh NATS JetStream stream.
pub struct Backend {
    pub bus: Option<Service>,
    pub posts: Service,
    pub comments: Service,
    pub query: Service,
    pub moderation: Service,
}

impl Backend {
    pub async fn start(ctx: &Ctx, dir: &Path, res: Option<&Resources>) -> anyhow::Result<Backend> {
        let (pp, pc, pq, pm) = (free_port()?, free_port()?, free_port()?, free_port()?);
        let local = |p: u16| format!("http://127.0.0.1:{p}");
        let data = |name: &str| dir.join("data").join(name);
        let mut envs: Vec<Vec<(&str, String)>> = Vec::new();
        let mut bus = None;
        match res {
            None => {
                let pb = free_port()?;
                let subscribers = format!(
                    "posts={},comments={},query={},moderation={}",
                    local(pp),
                    local(pc),
                    local(pq),
                    local(pm)
                );
                let bus_env = [("SUBSCRIBERS", subscribers)];
                let mut b =
                    Service::spawn(&ctx.bin, "event-bus", pb, &data("event-bus"), dir, &bus_env)?;
                b.wait_ready(&ctx.http, Duration::from_secs(20)).await?;
                bus = Some(b);
                for _ in 0..4 {
                    envs.push(vec![("EVENT_BUS_URL", local(pb))]);
                }
            }
            Some(res) => {
                let stream = res.stream();
                for name in ["posts", "comments", "query", "moderation"] {
                    envs.push(res.service_env(name, &stream).await?);
                }
            }
        }
        let mut posts = Service::spawn(&ctx.bin, "posts", pp, &data("posts"), dir, &envs[0])?;
        let mut comments =
            Service::spawn(&ctx.bin, "comments", pc, &data("comments"), dir, &envs[1])?;
        let mut query = Service::spawn(&ctx.bin, "query", pq, &data("query"), dir, &envs[2])?;
        let mut moderation = Service::spawn(
            &ctx.bin,
            "moderation",
            pm,
            &data("moderation"),
            dir,
            &envs[3],
        )?;
        for s in [&mut posts, &mut comments, &mut query, &mut moderation] {
            s.wait_ready(&ctx.http, Duration::from_secs(30)).await?;
        }
        Ok(Backend {
            bus,
            posts,
            comments,
            query,
            moderation,
        })
    }

    pub fn all(&self) -> Vec<&Service> {
        self.bus
            .iter()
            .chain([&self.posts, &self.comments, &self.query, &self.moderation])
            .collect()
    }

    pub fn pids(&self) -> Vec<(String, u32)> {
        self.all()
            .iter()
            .filter_map(|s| s.pid().map(|p| (s.name.clone(), p)))
            .collect()
    }
}

/// `switchyard-bench bare-server` serving `body` on a free port; killed when dropped.
pub struct Bare(Reference);

impl Bare {
    pub async fn start(ctx: &Ctx, body_file: &Path) -> anyhow::Result<Bare> {
        let args = [std::ffi::OsStr::new("--file"), body_file.as_os_str()];
        Ok(Bare(
            Reference::start(ctx, "bare-server", &args, "/posts").await?,
        ))
    }

    pub fn url(&self) -> String {
        self.0.url("/posts")
    }
}

async fn measure(
    ctx: &Ctx,
    section: &mut Section,
    on: &str,
    res: Option<&Resources>,
) -> anyhow::Result<()> {
    let p = &ctx.params;
    wrk::check_installed()?;
    let dir = tempfile::Builder::new()
        .prefix("switchyard-bench-blog")
        .tempdir()?;
    let backend = Backend::start(ctx, dir.path(), res).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle: BTreeMap<String, u64> = backend
        .all()
        .iter()
        .map(|s| (s.name.clone(), s.mem().map(|m| m.rss_kib).unwrap_or(0)))
        .collect();

    let sampler = RssSampler::start(backend.pids());
    let started = Instant::now();
    let created = populate(
        &ctx.http,
        &backend.posts.url(),
        &backend.comments.url(),
        p.posts,
        p.comments_per_post,
    )
    .await?;
    let body = wait_settled(
        &ctx.http,
        &backend.query.url(),
        p.posts,
        p.posts * p.comments_per_post,
        Duration::from_secs(60),
    )
    .await?;
    section.note(format!(
        "{on}: populated {} posts × {} comments through posts and comments ({} KB of `GET /posts` JSON), settled (all approved) in {:.2} s.",
        p.posts,
        p.comments_per_post,
        body.len() / 1000,
        started.elapsed().as_secs_f64()
    ));

    // (a) GET /posts on query vs a bare axum handler serving the same bytes.
    let body_file = dir.path().join("posts.json");
    std::fs::write(&body_file, &body).context("writing the body file")?;
    let bare = Bare::start(ctx, &body_file).await?;
    let q = wrk::run(&format!("{}/posts", backend.query.url()), 1, 64, p.wrk_secs).await?;
    let b = wrk::run(&bare.url(), 1, 64, p.wrk_secs).await?;
    drop(bare);
    let wrk_note = |r: &wrk::WrkResult| {
        format!(
            "wrk -t1 -c64 -d{}s: {} requests, p50 {:.2} ms, max {:.1} ms{}",
            p.wrk_secs,
            fmt_num(r.requests as f64, 0),
            r.p50_ms,
            r.max_ms,
            if r.non_2xx + r.socket_errors > 0 {
                format!(", {} non-2xx, {} socket errors", r.non_2xx, r.socket_errors)
            } else {
                String::new()
            }
        )
    };
    section.push_on(
        on,
        Figure::info(
            S,
            "(a) query GET /posts throughput",
            q.requests_per_sec,
            "req/s",
        )
        .original("~7,000 req/s")
        .note(wrk_note(&q)),
    );
    section.push_on(
        on,
        Figure::info(S, "(a) query GET /posts p99", q.p99_ms, "ms").original("~100 ms"),
    );
    section.push_on(
        on,
        Figure::info(
            S,
            "(a) bare axum handler, same bytes, throughput",
            b.requests_per_sec,
            "req/s",
        )
        .original("~110,000 req/s")
        .note(wrk_note(&b)),
    );
    section.push_on(
        on,
        Figure::info(S, "(a) bare axum handler p99", b.p99_ms, "ms").original("0.9 ms"),
    );
    section.push_on(
        on,
        Figure::at_least(
            S,
            "(a) query / bare throughput",
            100.0 * q.requests_per_sec / b.requests_per_sec,
            "%",
            80.0,
        )
        .original("~6%"),
    );

    // (b) Comment → approved in query's read model, seen on its snapshot stream.
    let watch = ApprovalWatch::start(&ctx.http, &backend.query.url()).await?;
    let mut lat = Vec::new();
    let mut visible_lat = Vec::new();
    let mut timeouts = 0;
    let e2e_started = Instant::now();
    for i in 0..p.e2e_comments {
        if e2e_started.elapsed() > Duration::from_secs(p.e2e_max_secs) {
            break;
        }
        let post = &created[i % created.len()].0;
        let t0 = Instant::now();
        let id = create_comment(
            &ctx.http,
            &backend.comments.url(),
            post,
            &format!("e2e comment {i}: looks good"),
        )
        .await?;
        match watch.approved_at(&id, Duration::from_secs(5)).await {
            Some(at) => lat.push(at.saturating_duration_since(t0).as_secs_f64() * 1000.0),
            None => timeouts += 1,
        }
        if let Some(at) = lock(&watch.visible).get(&id) {
            visible_lat.push(at.saturating_duration_since(t0).as_secs_f64() * 1000.0);
        }
    }
    let snapshots = watch.snapshots.load(std::sync::atomic::Ordering::Relaxed);
    drop(watch);
    let d = Dist::new(lat);
    let note = format!(
        "{} sequential comments: POST /posts/:id/comments → first `GET /posts/stream` snapshot showing it approved ({} snapshots received{})",
        d.len(),
        snapshots,
        if timeouts > 0 {
            format!(", {timeouts} not approved within 5 s")
        } else {
            String::new()
        }
    );
    // The yardsticks, in the same run on the same backend: three bare durable hops (the
    // least work the approval's path can do) and one (the visible comment's).
    let three = Chain::start(ctx, dir.path(), 3, res).await?;
    let bare3 = three.measure(ctx, d.len().max(30)).await?;
    drop(three);
    let one = Chain::start(ctx, dir.path(), 1, res).await?;
    let bare1 = one.measure(ctx, d.len().max(30)).await?;
    drop(one);
    // The design's floors: the same paths with the bus's append on each event hop (the
    // approval's three event hops, the visible comment's one), nothing else of ours.
    let floor = Chain::start_floor(ctx, dir.path(), 3, res).await?;
    let floor3 = floor.measure(ctx, d.len().max(30)).await?;
    drop(floor);
    let floor = Chain::start_floor(ctx, dir.path(), 1, res).await?;
    let floor1 = floor.measure(ctx, d.len().max(30)).await?;
    drop(floor);
    let bus = if res.is_some() {
        "a JetStream publish, acknowledged"
    } else {
        "a SQLite commit"
    };
    section.push_on(
        on,
        Figure::info(S, "(b) comment → approved in query, p50", d.pct(50.0), "ms")
            .original("~8 ms")
            .note(note),
    );
    section.push_on(
        on,
        Figure::info(S, "(b) comment → approved in query, p99", d.pct(99.0), "ms")
            .original("~20 ms"),
    );
    section.push_on(
        on,
        Figure::info(S, "(b) comment → approved in query, max", d.max(), "ms"),
    );
    section.push_on(
        on,
        Figure::info(S, "(b) bare three-hop chain, p50", bare3.pct(50.0), "ms").note(format!(
            "`switchyard-bench bare-hop` ×3: each handler commits one row ({}) then posts to the next; p99 {:.2} ms",
            if res.is_some() { "PostgreSQL" } else { "SQLite, WAL" },
            bare3.pct(99.0)
        )),
    );
    section.push_on(
        on,
        Figure::at_most(
            S,
            "(b) comment → approved / bare three-hop chain, p50",
            d.pct(50.0) / bare3.pct(50.0).max(0.001),
            "×",
            2.0,
        ),
    );
    section.push_on(
        on,
        Figure::at_most(
            S,
            "(b) comment → approved / bare three-hop chain, p99",
            d.pct(99.0) / bare3.pct(99.0).max(0.001),
            "×",
            3.0,
        ),
    );
    section.push_on(
        on,
        floor_figure(
            "(b) design's floor for the approval, p50",
            &format!("seven bare hops: the four services' commits with the bus's append ({bus}) between each two"),
            (&floor3, &bare3, "the bare three-hop chain"),
            (&d, "comment → approved"),
        ),
    );
    let v = Dist::new(visible_lat);
    section.push_on(on,
        Figure::info(S, "(b) comment → visible (pending) in query, p50", v.pct(50.0), "ms").note(format!(
            "one bus hop (CommentCreated → query); p99 {:.2} ms. Approval takes three hops: CommentCreated → moderation, CommentModerated → comments, CommentUpdated → query",
            v.pct(99.0)
        )),
    );
    section.push_on(
        on,
        Figure::info(S, "(b) bare single hop, p50", bare1.pct(50.0), "ms").note(format!(
            "one handler committing one row; p99 {:.2} ms",
            bare1.pct(99.0)
        )),
    );
    section.push_on(
        on,
        Figure::at_most(
            S,
            "(b) comment → visible / bare single hop, p50",
            v.pct(50.0) / bare1.pct(50.0).max(0.001),
            "×",
            2.0,
        ),
    );
    section.push_on(
        on,
        floor_figure(
            "(b) design's floor for the visible comment, p50",
            &format!("three bare hops: comments' commit, the bus's append ({bus}), query's commit"),
            (&floor1, &bare1, "the bare single hop"),
            (&v, "comment → visible"),
        ),
    );

    // (c) Memory per service.
    let sampled = sampler.finish().await;
    for s in backend.all() {
        section.push_on(
            on,
            Figure::at_most(
                S,
                &format!("(c) {} RSS idle", s.name),
                mib(idle.get(&s.name).copied().unwrap_or(0)),
                "MiB",
                20.0,
            )
            .original("~61 MB"),
        );
    }
    for s in backend.all() {
        let hwm = s.mem().map(|m| m.hwm_kib).unwrap_or(0);
        section.push_on(
            on,
            Figure::at_most(
                S,
                &format!("(c) {} peak RSS (VmHWM) under load", s.name),
                mib(hwm),
                "MiB",
                40.0,
            )
            .original("88–144 MB")
            .note(format!(
                "max sampled VmRSS {:.1} MiB",
                mib(sampled.get(&s.name).copied().unwrap_or(0))
            )),
        );
    }
    Ok(())
}

/// A design's floor, `floor` (p50, ms), with how it compares with the issue's `yardstick`
/// and how `ours` compares with it.
fn floor_figure(
    name: &str,
    what: &str,
    (floor, yardstick, yardstick_name): (&Dist, &Dist, &str),
    (ours, ours_name): (&Dist, &str),
) -> Figure {
    let floor_p50 = floor.pct(50.0);
    Figure::info(S, name, floor_p50, "ms").note(format!(
        "{what}; {:.2}× {yardstick_name}; {ours_name} is {:.2}× this floor",
        floor_p50 / yardstick.pct(50.0).max(0.001),
        ours.pct(50.0) / floor_p50.max(0.001)
    ))
}
