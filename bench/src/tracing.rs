//! Scenario 9: what tracing costs. A whole purchase (order → pay → complete) and a comment
//! → approved, sequentially under `up`, with every service's spans exported by OTLP to
//! the console (up's default: a local receiver) and with export off
//! (`OTEL_SDK_DISABLED=true`). The two modes alternate, round after round, in one run, and
//! their p99s are compared: exported at most 5 % above off.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::Ctx;
use crate::blog::{ApprovalWatch, create_comment};
use crate::prod::Resources;
use crate::report::{Dist, Figure, Section, fmt_num};
use crate::ticketing::{JWT_KEY, User, port_of};
use crate::up::{Up, backend_args};

const S: &str = "tracing";

#[derive(Clone, Copy)]
enum Mode {
    Off,
    Exported,
}

impl Mode {
    fn env(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Mode::Off => &[("OTEL_SDK_DISABLED", "true")],
            Mode::Exported => &[],
        }
    }
}

pub async fn run(ctx: &Ctx) -> Section {
    let mut section = Section::new(
        S,
        "9. Tracing: spans exported to the console vs off, on the purchase and the approval",
    );
    on_each_backend!(ctx, section, measure);
    ctx.skip_note(&mut section);
    section
}

async fn measure(
    ctx: &Ctx,
    section: &mut Section,
    on: &str,
    res: Option<&Resources>,
) -> anyhow::Result<()> {
    let n = ctx.params.e2e_comments.clamp(30, 200);
    let mut purchase: [Samples; 2] = Default::default();
    let mut approval: [Samples; 2] = Default::default();
    // Rounds of each mode (off, exported, off, exported, ...): a p99 moves by as much from
    // one fresh `up` to the next as export costs, so it takes many of them.
    let rounds = ctx.params.tracing_rounds;
    for _ in 0..rounds {
        for (i, mode) in [Mode::Off, Mode::Exported].into_iter().enumerate() {
            purchase[i].add(purchases(ctx, res, mode, n).await?);
            approval[i].add(approvals(ctx, res, mode, n).await?);
        }
    }
    for (what, [off, exported]) in [
        ("whole purchase", purchase),
        ("comment → approved", approval),
    ] {
        let (off_cpu, exported_cpu) = (off.cpu_ms_per_op(), exported.cpu_ms_per_op());
        let (off_rounds, exported_rounds) = (off.median_round_p99(), exported.median_round_p99());
        let (off, exported) = (Dist::new(off.took), Dist::new(exported.took));
        let note = format!(
            "{} runs of each mode alternating, {n} sequential each; p50 off {} ms, exported {} ms; \
             the median of the runs' own p99s: off {} ms, exported {} ms ({}%)",
            rounds,
            fmt_num(off.pct(50.0), 2),
            fmt_num(exported.pct(50.0), 2),
            fmt_num(off_rounds, 2),
            fmt_num(exported_rounds, 2),
            fmt_num(100.0 * exported_rounds / off_rounds.max(f64::EPSILON), 1),
        );
        section.push_on(
            on,
            Figure::info(S, &format!("{what} p99, tracing off"), off.pct(99.0), "ms"),
        );
        section.push_on(
            on,
            Figure::info(
                S,
                &format!("{what} p99, spans exported"),
                exported.pct(99.0),
                "ms",
            ),
        );
        section.push_on(
            on,
            Figure::at_most(
                S,
                &format!("{what} p99, exported / off"),
                100.0 * exported.pct(99.0) / off.pct(99.0).max(f64::EPSILON),
                "%",
                105.0,
            )
            .note(note),
        );
        section.push_on(
            on,
            Figure::info(
                S,
                &format!("{what}: CPU per operation, exported / off"),
                100.0 * exported_cpu / off_cpu.max(f64::EPSILON),
                "%",
            )
            .note(format!(
                "CPU time of all of up's processes (services, bus, gateway, console; not \
                 PostgreSQL or NATS) while the operations ran, per operation: off {} ms, \
                 exported {} ms",
                fmt_num(off_cpu, 3),
                fmt_num(exported_cpu, 3)
            )),
        );
    }
    Ok(())
}

/// One mode's measurements over its runs.
#[derive(Default)]
struct Samples {
    /// Every operation's time, in ms.
    took: Vec<f64>,
    /// Each run's own p99, in ms.
    round_p99: Vec<f64>,
    /// CPU time of up's processes during the runs' operations.
    cpu: Duration,
}

/// One run: each operation's time (ms) and the CPU time up's processes used meanwhile.
struct Run {
    took: Vec<f64>,
    cpu: Duration,
}

impl Samples {
    fn add(&mut self, run: Run) {
        self.round_p99.push(Dist::new(run.took.clone()).pct(99.0));
        self.took.extend(run.took);
        self.cpu += run.cpu;
    }

    fn cpu_ms_per_op(&self) -> f64 {
        self.cpu.as_secs_f64() * 1000.0 / (self.took.len().max(1) as f64)
    }

    fn median_round_p99(&self) -> f64 {
        Dist::new(self.round_p99.clone()).pct(50.0)
    }
}

/// `up <app>` on `res`'s backend with `env`, its data in a directory of its own (kept as
/// long as the first value).
async fn fresh_up(
    ctx: &Ctx,
    app: &switchyard_registry::App,
    res: Option<&Resources>,
    env: &[(&str, &str)],
) -> anyhow::Result<(tempfile::TempDir, Up)> {
    let dir = tempfile::Builder::new()
        .prefix("switchyard-bench-tracing")
        .tempdir()?;
    let extra = backend_args(ctx, res, app).await?;
    let up = Up::start(
        ctx,
        app,
        &dir.path().join("data"),
        &dir.path().join("up.log"),
        &extra,
        env,
    )
    .await?;
    Ok((dir, up))
}

/// `n` whole purchases, one after the other, under a fresh `up ticketing` in `mode`.
async fn purchases(
    ctx: &Ctx,
    res: Option<&Resources>,
    mode: Mode,
    n: usize,
) -> anyhow::Result<Run> {
    let mut env = vec![
        ("JWT_KEY", JWT_KEY),
        ("PAYMENT_PROVIDER", "test"),
        ("SIGNIN_MAX_PER_CLIENT", "1000000000"),
        ("SIGNUP_MAX_PER_CLIENT", "1000000000"),
    ];
    env.extend_from_slice(mode.env());
    let (_dir, up) = fresh_up(ctx, &switchyard_registry::TICKETING, res, &env).await?;
    let (auth, tickets, orders, payments) = (
        up.url(port_of("auth")?),
        up.url(port_of("tickets")?),
        up.url(port_of("orders")?),
        up.url(port_of("payments")?),
    );
    let seller = User::sign_up(ctx, &auth, "seller@bench.test").await?;
    let buyer = User::sign_up(ctx, &auth, "buyer@bench.test").await?;
    let mut fresh = Vec::with_capacity(n + 1);
    for i in 0..=n {
        fresh.push(seller.sell(&tickets, i).await?);
    }
    // Orders knows every ticket before the clock starts (the last one sold is known).
    let last = fresh.pop().context("no tickets")?;
    buyer
        .order(&orders, &last)
        .await?
        .context("probe order refused")?;
    let mut took = Vec::with_capacity(n);
    let cpu = crate::procs::tree_cpu_time(up.pid);
    for ticket in &fresh {
        took.push(buyer.purchase(&orders, &payments, ticket).await?);
    }
    let cpu = crate::procs::tree_cpu_time(up.pid).saturating_sub(cpu);
    up.stop().await;
    Ok(Run { took, cpu })
}

/// `n` comments, one after the other, each until query's stream shows it approved, under a
/// fresh `up blog` in `mode`.
async fn approvals(
    ctx: &Ctx,
    res: Option<&Resources>,
    mode: Mode,
    n: usize,
) -> anyhow::Result<Run> {
    let blog = &switchyard_registry::BLOG;
    let (_dir, up) = fresh_up(ctx, blog, res, mode.env()).await?;
    let port = |name: &str| {
        blog.service(name)
            .map(|s| s.local_port)
            .with_context(|| format!("{name} is not a blog service"))
    };
    let (posts, comments, query) = (
        up.url(port("posts")?),
        up.url(port("comments")?),
        up.url(port("query")?),
    );
    let post: serde_json::Value = ctx
        .http
        .post(format!("{posts}/posts/create"))
        .json(&serde_json::json!({"title": "traced or not"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let post = post["id"].as_str().context("post id")?.to_string();
    let watch = ApprovalWatch::start(&ctx.http, &query).await?;
    // The post reaches comments before the clock starts.
    let warm = create_comment(&ctx.http, &comments, &post, "warming up").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while warm.is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if create_comment(&ctx.http, &comments, &post, "warming up")
            .await
            .is_ok()
        {
            break;
        }
    }
    let mut took = Vec::with_capacity(n);
    let cpu = crate::procs::tree_cpu_time(up.pid);
    for i in 0..n {
        let t = Instant::now();
        let id = create_comment(&ctx.http, &comments, &post, &format!("comment {i}: fine")).await?;
        let at = watch
            .approved_at(&id, Duration::from_secs(5))
            .await
            .with_context(|| format!("comment {id} not approved within 5 s"))?;
        took.push(at.saturating_duration_since(t).as_secs_f64() * 1000.0);
    }
    let cpu = crate::procs::tree_cpu_time(up.pid).saturating_sub(cpu);
    drop(watch);
    up.stop().await;
    Ok(Run { took, cpu })
}
