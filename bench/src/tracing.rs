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
    let mut purchase = [Vec::new(), Vec::new()];
    let mut approval = [Vec::new(), Vec::new()];
    // Rounds of each mode (off, exported, off, exported, ...): a p99 moves by as much from
    // one fresh `up` to the next as export costs, so it takes many of them.
    let rounds = ctx.params.tracing_rounds;
    for _ in 0..rounds {
        for (i, mode) in [Mode::Off, Mode::Exported].into_iter().enumerate() {
            purchase[i].extend(purchases(ctx, res, mode, n).await?);
            approval[i].extend(approvals(ctx, res, mode, n).await?);
        }
    }
    for (what, samples) in [
        ("whole purchase", purchase),
        ("comment → approved", approval),
    ] {
        let [off, exported] = samples.map(Dist::new);
        let note = format!(
            "{} runs of each mode alternating, {n} sequential each; p50 off {} ms, exported {} ms",
            rounds,
            fmt_num(off.pct(50.0), 2),
            fmt_num(exported.pct(50.0), 2)
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
    }
    Ok(())
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
) -> anyhow::Result<Vec<f64>> {
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
    for ticket in &fresh {
        took.push(buyer.purchase(&orders, &payments, ticket).await?);
    }
    up.stop().await;
    Ok(took)
}

/// `n` comments, one after the other, each until query's stream shows it approved, under a
/// fresh `up blog` in `mode`.
async fn approvals(
    ctx: &Ctx,
    res: Option<&Resources>,
    mode: Mode,
    n: usize,
) -> anyhow::Result<Vec<f64>> {
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
    for i in 0..n {
        let t = Instant::now();
        let id = create_comment(&ctx.http, &comments, &post, &format!("comment {i}: fine")).await?;
        let at = watch
            .approved_at(&id, Duration::from_secs(5))
            .await
            .with_context(|| format!("comment {id} not approved within 5 s"))?;
        took.push(at.saturating_duration_since(t).as_secs_f64() * 1000.0);
    }
    drop(watch);
    up.stop().await;
    Ok(took)
}
