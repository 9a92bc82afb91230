//! Scenario 9: what tracing costs. A whole purchase (order → pay → complete) and a comment
//! → approved, sequentially under `up`, with every service's spans exported by OTLP to
//! the console (up's default: a local receiver) and with export off
//! (`OTEL_SDK_DISABLED=true`). Each round starts one fresh `up` of each mode side by side
//! and alternates the operations between them (off, exported, exported, off, ...), so
//! both modes meet the same moments of the machine; their p99s over all rounds are
//! compared: exported at most 5 % above off.

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
    // A p99 moves by as much from one fresh `up` to the next as export costs, so each
    // round runs both modes at once, operation by operation, and there are many rounds.
    let rounds = ctx.params.tracing_rounds;
    for _ in 0..rounds {
        let stacks = [
            Shop::start(ctx, res, Mode::Off, n).await?,
            Shop::start(ctx, res, Mode::Exported, n).await?,
        ];
        interleave(stacks, n, &mut purchase).await?;
        let stacks = [
            Blog::start(ctx, res, Mode::Off).await?,
            Blog::start(ctx, res, Mode::Exported).await?,
        ];
        interleave(stacks, n, &mut approval).await?;
    }
    for (what, [off, exported]) in [
        ("whole purchase", purchase),
        ("comment → approved", approval),
    ] {
        let (off_cpu, exported_cpu) = (off.cpu_ms_per_op(), exported.cpu_ms_per_op());
        let (off_rounds, exported_rounds) = (off.median_round_p99(), exported.median_round_p99());
        let (off, exported) = (Dist::new(off.took), Dist::new(exported.took));
        let note = format!(
            "{} rounds, each a fresh `up` of each mode side by side with {n} operations on \
             each, one after the other, alternating between them; p50 off {} ms, exported \
             {} ms; the median of the rounds' own p99s: off {} ms, exported {} ms ({}%)",
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
                "CPU time of all of each up's processes (services, bus, gateway, console; not \
                 PostgreSQL or NATS) while the round's operations ran, both ups' included \
                 (each also idles while the other works), per operation: off {} ms, \
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

/// Runs `n` operations on each of `stacks` (off, exported), one after the other,
/// alternating between them and which goes first, into `samples`.
async fn interleave<S: Stack>(
    mut stacks: [S; 2],
    n: usize,
    samples: &mut [Samples; 2],
) -> anyhow::Result<()> {
    let mut took: [Vec<f64>; 2] = [Vec::with_capacity(n), Vec::with_capacity(n)];
    let cpu = stacks
        .each_ref()
        .map(|s| crate::procs::tree_cpu_time(s.up().pid));
    for i in 0..n {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            took[k].push(stacks[k].operation(i).await?);
        }
    }
    let after = stacks
        .each_ref()
        .map(|s| crate::procs::tree_cpu_time(s.up().pid));
    let used = after.into_iter().zip(cpu).map(|(a, b)| a.saturating_sub(b));
    for stack in stacks {
        stack.stop().await;
    }
    for ((samples, took), cpu) in samples.iter_mut().zip(took).zip(used) {
        samples.add(Run { took, cpu });
    }
    Ok(())
}

/// A fresh `up` of one mode, ready for timed operations.
trait Stack {
    fn up(&self) -> &Up;
    /// The `i`th operation: how long it took, in ms.
    async fn operation(&mut self, i: usize) -> anyhow::Result<f64>;
    async fn stop(self);
}

/// `up ticketing` with a buyer, and `n` fresh tickets each to be bought whole (ordered,
/// paid, until the order is complete).
struct Shop {
    _dir: tempfile::TempDir,
    up: Up,
    buyer: User,
    orders: String,
    payments: String,
    fresh: Vec<String>,
}

impl Shop {
    async fn start(
        ctx: &Ctx,
        res: Option<&Resources>,
        mode: Mode,
        n: usize,
    ) -> anyhow::Result<Shop> {
        let mut env = vec![
            ("JWT_KEY", JWT_KEY),
            ("PAYMENT_PROVIDER", "test"),
            ("SIGNIN_MAX_PER_CLIENT", "1000000000"),
            ("SIGNUP_MAX_PER_CLIENT", "1000000000"),
        ];
        env.extend_from_slice(mode.env());
        let (dir, up) = fresh_up(ctx, &switchyard_registry::TICKETING, res, &env).await?;
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
        Ok(Shop {
            _dir: dir,
            up,
            buyer,
            orders,
            payments,
            fresh,
        })
    }
}

impl Stack for Shop {
    fn up(&self) -> &Up {
        &self.up
    }

    async fn operation(&mut self, i: usize) -> anyhow::Result<f64> {
        let ticket = self.fresh.get(i).context("no ticket left")?;
        self.buyer
            .purchase(&self.orders, &self.payments, ticket)
            .await
    }

    async fn stop(self) {
        self.up.stop().await;
    }
}

/// `up blog` with a post that comments has, and query's stream followed: each operation
/// is a comment, until the stream shows it approved.
struct Blog {
    _dir: tempfile::TempDir,
    up: Up,
    http: reqwest::Client,
    comments: String,
    post: String,
    watch: ApprovalWatch,
}

impl Blog {
    async fn start(ctx: &Ctx, res: Option<&Resources>, mode: Mode) -> anyhow::Result<Blog> {
        let blog = &switchyard_registry::BLOG;
        let (dir, up) = fresh_up(ctx, blog, res, mode.env()).await?;
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
        let deadline = Instant::now() + Duration::from_secs(20);
        while create_comment(&ctx.http, &comments, &post, "warming up")
            .await
            .is_err()
        {
            anyhow::ensure!(Instant::now() < deadline, "comments never knew the post");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Blog {
            _dir: dir,
            up,
            http: ctx.http.clone(),
            comments,
            post,
            watch,
        })
    }
}

impl Stack for Blog {
    fn up(&self) -> &Up {
        &self.up
    }

    async fn operation(&mut self, i: usize) -> anyhow::Result<f64> {
        let t = Instant::now();
        let content = format!("comment {i}: fine");
        let id = create_comment(&self.http, &self.comments, &self.post, &content).await?;
        let at = self
            .watch
            .approved_at(&id, Duration::from_secs(5))
            .await
            .with_context(|| format!("comment {id} not approved within 5 s"))?;
        Ok(at.saturating_duration_since(t).as_secs_f64() * 1000.0)
    }

    async fn stop(self) {
        drop(self.watch);
        self.up.stop().await;
    }
}
