//! Scenario 7: the ticketing app under `switchyard up ticketing`.
//!
//! * `up ticketing` start-up, and every service's RSS idle and under load;
//! * `GET /api/tickets` (100 tickets) and `GET /api/orders` (signed in) against a bare axum
//!   handler returning the same bytes, in the same run;
//! * order created → the ticket shown reserved by tickets (one event through the outbox,
//!   the bus and tickets' inbox), against the bare durable hop ([`crate::bare_hop`]): one
//!   handler committing a row, then posting to a second that commits too;
//! * a whole purchase (order → payment → order complete), sequentially;
//! * purchases per second with 32 concurrent buyers racing for the same tickets, and the
//!   number of tickets sold twice (must be 0).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::bare_hop::Chain;
use crate::procs::{RssSampler, descendants, lock, mem_of, mib};
use crate::prod::Resources;
use crate::query::Bare;
use crate::report::{Dist, Figure, Section, fmt_num};
use crate::up::{Up, backend_args};
use crate::{Ctx, wrk};

const S: &str = "ticketing";
pub(crate) const JWT_KEY: &str = "switchyard-bench-jwt-key-switchyard-bench";
/// Tickets listed by `GET /api/tickets` when it is measured.
const LISTED: usize = 100;
/// Orders of the buyer whose `GET /api/orders` is measured.
const ORDERS: usize = 10;
/// Concurrent buyers in the purchase-rate run.
const BUYERS: usize = 32;

pub async fn run(ctx: &Ctx) -> Section {
    let mut section = Section::new(
        S,
        "7. Ticketing: reads, order → reserved, purchases, memory, `up ticketing`",
    );
    on_each_backend!(ctx, section, measure);
    // Reads on two replicas: the production backends only (`up --replicas` needs them).
    if ctx.plan.production.is_some() {
        let on = crate::report::PRODUCTION;
        let res = ctx.resources(on);
        let result = match &res {
            Some(res) => reads_on_two_replicas(ctx, &mut section, on, res)
                .await
                .context("reads on two replicas"),
            None => Ok(()),
        };
        crate::finish(&mut section, on, res, result).await;
    }
    ctx.skip_note(&mut section);
    section
}

/// `up ticketing` on the backend of `res` (embedded without), `replicas` processes of each
/// service, its data and log in `dir`.
async fn ticketing_up(
    ctx: &Ctx,
    res: Option<&Resources>,
    dir: &std::path::Path,
    replicas: u8,
) -> anyhow::Result<Up> {
    let mut extra = backend_args(ctx, res, &switchyard_registry::TICKETING).await?;
    if replicas > 1 {
        extra.extend(["--replicas".to_string(), replicas.to_string()]);
    }
    Up::start(
        ctx,
        &switchyard_registry::TICKETING,
        &dir.join("data"),
        &dir.join("up.log"),
        &extra,
        &[
            ("JWT_KEY", JWT_KEY),
            ("PAYMENT_PROVIDER", "test"),
            // Every buyer here is 127.0.0.1: no per-address limits.
            ("SIGNIN_MAX_PER_CLIENT", "1000000000"),
            ("SIGNUP_MAX_PER_CLIENT", "1000000000"),
        ],
    )
    .await
}

/// `up ticketing --replicas 2`: tickets sold and orders made through the first replica of
/// each service, the lists read (under wrk) from the second, which kept them in memory
/// and heard of every commit of the first by PostgreSQL's `NOTIFY`; against bare axum with
/// the same bytes.
async fn reads_on_two_replicas(
    ctx: &Ctx,
    section: &mut Section,
    on: &str,
    res: &Resources,
) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("switchyard-bench-replicas")
        .tempdir()?;
    let up = ticketing_up(ctx, Some(res), dir.path(), 2).await?;
    let url = |name: &str, replica: u8| -> anyhow::Result<_> {
        let port = switchyard_registry::replica_port(port_of(name)?, replica)
            .with_context(|| format!("replica {replica} of {name} has no port"))?;
        Ok(up.url(port))
    };
    let (auth, tickets, orders) = (url("auth", 1)?, url("tickets", 1)?, url("orders", 1)?);
    let first = Replica {
        auth: &auth,
        tickets: &tickets,
        orders: &orders,
    };
    let (tickets, orders) = (url("tickets", 2)?, url("orders", 2)?);
    let second = Replica {
        auth: &auth,
        tickets: &tickets,
        orders: &orders,
    };
    let suffix = ", the other of 2 replicas";
    reads(ctx, section, on, dir.path(), &first, &second, suffix).await?;
    up.stop().await;
    Ok(())
}

/// The base URLs of one replica of auth, tickets and orders.
struct Replica<'a> {
    auth: &'a str,
    tickets: &'a str,
    orders: &'a str,
}

/// The reads: 100 tickets sold and a buyer's 10 orders made through `writes`, each list read
/// from `reads` (once it shows them) under wrk against bare axum with the same bytes; the
/// figures' names end with `suffix`. The seller and the buyer.
async fn reads(
    ctx: &Ctx,
    section: &mut Section,
    on: &str,
    dir: &std::path::Path,
    writes: &Replica<'_>,
    reads: &Replica<'_>,
    suffix: &str,
) -> anyhow::Result<(User, User)> {
    let seller = User::sign_up(ctx, writes.auth, "seller@bench.test").await?;
    let mut listed = Vec::new();
    for n in 0..LISTED {
        listed.push(seller.sell(writes.tickets, n).await?);
    }
    let list_url = format!("{}/api/tickets", reads.tickets);
    let list = listing(ctx, &list_url, None, LISTED).await?;
    read_vs_bare(
        ctx,
        section,
        on,
        &dir.join("tickets.json"),
        &list_url,
        &list,
        None,
        &format!("GET /api/tickets (100 tickets){suffix}"),
    )
    .await?;
    let buyer = User::sign_up(ctx, writes.auth, "buyer@bench.test").await?;
    for ticket in listed.iter().take(ORDERS) {
        buyer
            .order(writes.orders, ticket)
            .await?
            .context("a listed ticket could not be ordered")?;
    }
    let orders_url = format!("{}/api/orders", reads.orders);
    let mine = listing(ctx, &orders_url, Some(&buyer.cookie), ORDERS).await?;
    read_vs_bare(
        ctx,
        section,
        on,
        &dir.join("orders.json"),
        &orders_url,
        &mine,
        Some(&buyer.cookie),
        &format!("GET /api/orders (signed in, {ORDERS} orders){suffix}"),
    )
    .await?;
    Ok((seller, buyer))
}

/// The body of `url` (with `cookie`) once it lists `want` items: what one replica wrote,
/// seen on the other. Five seconds at most.
async fn listing(
    ctx: &Ctx,
    url: &str,
    cookie: Option<&str>,
    want: usize,
) -> anyhow::Result<bytes::Bytes> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut request = ctx.http.get(url);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let body = request.send().await?.bytes().await?;
        let count = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(0);
        if count == want {
            return Ok(body);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{url} lists {count} of {want} written through the other replica"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Local port of a ticketing service (before `up`'s offset).
pub(crate) fn port_of(name: &str) -> anyhow::Result<u16> {
    switchyard_registry::TICKETING
        .service(name)
        .map(|s| s.local_port)
        .with_context(|| format!("{name} is not a ticketing service"))
}

/// The ticketing services `up` runs, by name, with their pids.
fn service_pids(up: &Up) -> Vec<(String, u32)> {
    descendants(up.pid)
        .into_iter()
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).to_string())
                .collect();
            let name = args
                .iter()
                .position(|a| a == "serve")
                .and_then(|i| args.get(i + 1))?
                .strip_prefix("ticketing/")?
                .to_string();
            Some((name, pid))
        })
        .collect()
}

/// A client of the services behind `up`, signed in as one user.
pub(crate) struct User {
    http: reqwest::Client,
    cookie: String,
}

impl User {
    pub(crate) async fn sign_up(ctx: &Ctx, auth: &str, email: &str) -> anyhow::Result<User> {
        let r = ctx
            .http
            .post(format!("{auth}/api/users/signup"))
            .json(&json!({"email": email, "password": "password"}))
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 201, "signup: {}", r.status());
        let cookie = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("session="))
            .and_then(|v| v.split(';').next())
            .map(str::to_string)
            .context("no session cookie")?;
        Ok(User {
            http: ctx.http.clone(),
            cookie,
        })
    }

    /// A JSON request with the session: status and body.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, url)
            .header("cookie", &self.cookie);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let r = request.send().await?;
        let status = r.status().as_u16();
        let bytes = r.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    pub(crate) async fn sell(&self, tickets: &str, n: usize) -> anyhow::Result<String> {
        let (status, body) = self
            .send(
                reqwest::Method::POST,
                &format!("{tickets}/api/tickets"),
                Some(json!({"title": format!("concert {n}"), "price": 10 + (n % 90)})),
            )
            .await?;
        anyhow::ensure!(status == 201, "selling a ticket: {status} {body}");
        body["id"].as_str().map(str::to_string).context("ticket id")
    }

    /// POSTs `body` to `url` until the service knows what it refers to: `Some(body)` on
    /// 201, `None` on 400 (reserved, cancelled), retrying a 404 (the event that tells the
    /// service has not arrived yet) for up to 20 s.
    async fn create(&self, url: &str, body: Value) -> anyhow::Result<Option<Value>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, answer) = self
                .send(reqwest::Method::POST, url, Some(body.clone()))
                .await?;
            match status {
                201 => return Ok(Some(answer)),
                400 => return Ok(None),
                404 if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(1)).await
                }
                _ => anyhow::bail!("POST {url}: {status} {answer}"),
            }
        }
    }

    /// Orders `ticket`: the order's id, or `None` if the ticket is reserved.
    pub(crate) async fn order(&self, orders: &str, ticket: &str) -> anyhow::Result<Option<String>> {
        let created = self
            .create(&format!("{orders}/api/orders"), json!({"ticketId": ticket}))
            .await?;
        Ok(created.and_then(|o| o["id"].as_str().map(str::to_string)))
    }

    /// Pays `order` with `tok_visa`: whether it was paid.
    pub(crate) async fn pay(&self, payments: &str, order: &str) -> anyhow::Result<bool> {
        let created = self
            .create(
                &format!("{payments}/api/payments"),
                json!({"orderId": order, "token": "tok_visa"}),
            )
            .await?;
        Ok(created.is_some())
    }

    /// A whole purchase of `ticket`: ordered, paid with `tok_visa`, until orders shows the
    /// order complete; how long it took, in milliseconds.
    pub(crate) async fn purchase(
        &self,
        orders: &str,
        payments: &str,
        ticket: &str,
    ) -> anyhow::Result<f64> {
        let t = Instant::now();
        let order = self
            .order(orders, ticket)
            .await?
            .context("ordering a fresh ticket")?;
        anyhow::ensure!(self.pay(payments, &order).await?, "payment refused");
        self.poll(&format!("{orders}/api/orders/{order}"), |b| {
            b["status"] == "complete"
        })
        .await?;
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    }

    /// Polls `url` (every 0.5 ms) until `done` holds for its JSON body.
    pub(crate) async fn poll(
        &self,
        url: &str,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self.send(reqwest::Method::GET, url, None).await?;
            if status == 200 && done(&body) {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "{url} never got there: {body}");
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
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
        .prefix("switchyard-bench-ticketing")
        .tempdir()?;
    let up = ticketing_up(ctx, res, dir.path(), 1).await?;
    section.push_on(
        on,
        Figure::at_most(
            S,
            "`switchyard up ticketing`: spawn → \"is up in\"",
            up.ready_after.as_secs_f64() * 1000.0,
            "ms",
            1000.0,
        )
        .note(format!(
            "a fresh data dir; up's own figure: {}",
            up.reported
        )),
    );
    let (auth, tickets, orders, payments) = (
        up.url(port_of("auth")?),
        up.url(port_of("tickets")?),
        up.url(port_of("orders")?),
        up.url(port_of("payments")?),
    );
    let pids = service_pids(&up);
    anyhow::ensure!(pids.len() >= 6, "ticketing services not found: {pids:?}");
    for (name, pid) in &pids {
        if let Some(m) = mem_of(*pid) {
            section.push_on(
                on,
                Figure::at_most(S, &format!("{name} RSS idle"), mib(m.rss_kib), "MiB", 20.0),
            );
        }
    }
    let sampler = RssSampler::start(pids.clone());

    // 1. Reads: 100 tickets listed, a buyer's 10 orders, each against bare axum.
    let here = Replica {
        auth: &auth,
        tickets: &tickets,
        orders: &orders,
    };
    let (seller, buyer) = reads(ctx, section, on, dir.path(), &here, &here, "").await?;
    let orders_url = format!("{orders}/api/orders");

    // 2. Order created → ticket reserved in tickets, against the bare durable hop.
    let n = p.e2e_comments.clamp(30, 200);
    let mut fresh = Vec::new();
    for i in 0..n + 2 * n {
        fresh.push(seller.sell(&tickets, LISTED + i).await?);
    }
    // Orders has every fresh ticket before the clock starts (the last one sold is known).
    let last = fresh.last().context("no tickets")?.clone();
    let probe = User::sign_up(ctx, &auth, "probe@bench.test").await?;
    probe
        .order(&orders, &last)
        .await?
        .context("probe order refused")?;
    let (to_reserve, to_purchase) = fresh.split_at(n);
    let mut reserved = Vec::with_capacity(n);
    for ticket in to_reserve {
        let t = Instant::now();
        buyer
            .order(&orders, ticket)
            .await?
            .context("ordering a fresh ticket")?;
        buyer
            .poll(&format!("{tickets}/api/tickets/{ticket}"), |b| {
                b["orderId"].is_string()
            })
            .await?;
        reserved.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let reserved = Dist::new(reserved);
    let chain = Chain::start(ctx, dir.path(), 2, res).await?;
    let bare = chain.measure(ctx, n).await?;
    drop(chain);
    section.push_on(
        on,
        Figure::info(S, "order created → ticket reserved, p50", reserved.pct(50.0), "ms").note(
            format!(
                "{n} sequential orders: POST /api/orders → GET /api/tickets/:id shows the orderId (polled every 0.5 ms); p99 {} ms",
                fmt_num(reserved.pct(99.0), 2)
            ),
        ),
    );
    section.push_on(
        on,
        Figure::info(
            S,
            "bare durable hop (2 commits, 1 HTTP hop), p50",
            bare.pct(50.0),
            "ms",
        )
        .note(format!(
            "{n} sequential requests; p99 {} ms",
            fmt_num(bare.pct(99.0), 2)
        )),
    );
    section.push_on(
        on,
        Figure::at_most(
            S,
            "order → reserved / bare hop, p50",
            reserved.pct(50.0) / bare.pct(50.0).max(0.001),
            "×",
            2.0,
        ),
    );
    section.push_on(
        on,
        Figure::at_most(
            S,
            "order → reserved / bare hop, p99",
            reserved.pct(99.0) / bare.pct(99.0).max(0.001),
            "×",
            3.0,
        ),
    );

    // 3. Whole purchases, one after the other: order → pay → the order complete.
    let (sequential, racing) = to_purchase.split_at(n);
    let mut purchases = Vec::with_capacity(n);
    for ticket in sequential {
        purchases.push(buyer.purchase(&orders, &payments, ticket).await?);
    }
    let purchases = Dist::new(purchases);
    section.push_on(
        on,
        Figure::info(
            S,
            "whole purchase (order → pay → complete), p50",
            purchases.pct(50.0),
            "ms",
        )
        .note(format!(
            "{n} sequential purchases; the payment waits for payments to know the order; p99 {} ms",
            fmt_num(purchases.pct(99.0), 2)
        )),
    );
    section.push_on(
        on,
        Figure::info(S, "whole purchase, p99", purchases.pct(99.0), "ms"),
    );

    // 4. Purchases per second: 32 buyers racing for the same tickets.
    let mut buyers = Vec::new();
    for b in 0..BUYERS {
        buyers.push(Arc::new(
            User::sign_up(ctx, &auth, &format!("racer{b}@bench.test")).await?,
        ));
    }
    let pool: Arc<std::sync::Mutex<Vec<String>>> = Arc::new(std::sync::Mutex::new(
        racing.iter().rev().cloned().collect(),
    ));
    let started = Instant::now();
    let until = started + Duration::from_secs(p.write_secs.max(3));
    let tasks: Vec<_> = buyers
        .iter()
        .enumerate()
        .map(|(b, buyer)| {
            let (buyer, pool, orders, payments) = (
                buyer.clone(),
                pool.clone(),
                orders.clone(),
                payments.clone(),
            );
            tokio::spawn(async move {
                let mut paid = 0usize;
                let mut refused = 0usize;
                while Instant::now() < until {
                    // Four buyers at a time go for the same ticket: the newest four.
                    let ticket = {
                        let pool = lock(&pool);
                        if pool.is_empty() {
                            break;
                        }
                        pool[pool.len() - 1 - (b % 4).min(pool.len() - 1)].clone()
                    };
                    match buyer.order(&orders, &ticket).await {
                        Ok(Some(order)) => {
                            lock(&pool).retain(|t| *t != ticket);
                            if matches!(buyer.pay(&payments, &order).await, Ok(true)) {
                                paid += 1;
                            }
                        }
                        Ok(None) => {
                            refused += 1;
                            lock(&pool).retain(|t| *t != ticket);
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
                (paid, refused)
            })
        })
        .collect();
    let (mut paid, mut refused) = (0usize, 0usize);
    for t in tasks {
        let (p, r) = t.await.unwrap_or((0, 0));
        paid += p;
        refused += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Sold twice: a ticket with two orders complete, across every buyer's orders.
    let mut complete: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut settled = false;
    while !settled && Instant::now() < deadline {
        complete.clear();
        let mut open = 0;
        for buyer in &buyers {
            let (status, list) = buyer.send(reqwest::Method::GET, &orders_url, None).await?;
            anyhow::ensure!(status == 200, "GET /api/orders: {status}");
            for o in list.as_array().into_iter().flatten() {
                match o["status"].as_str() {
                    Some("complete") => {
                        *complete
                            .entry(o["ticket"]["id"].as_str().unwrap_or_default().to_string())
                            .or_default() += 1
                    }
                    Some("created") | Some("awaiting:payment") => open += 1,
                    _ => {}
                }
            }
        }
        settled = complete.values().sum::<usize>() >= paid || open == 0;
        if !settled {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let sold_twice = complete.values().filter(|n| **n > 1).count();
    section.push_on(
        on,
        Figure::info(S, "purchases per second", paid as f64 / elapsed, "/s").note(format!(
            "{BUYERS} buyers, four on each of the newest tickets, for {} s: {paid} paid, {refused} refused as reserved",
            fmt_num(elapsed, 1)
        )),
    );
    section.push_on(
        on,
        Figure::at_most(S, "tickets sold twice", sold_twice as f64, "", 0.0),
    );
    let peaks: BTreeMap<String, u64> = sampler.finish().await;
    for (name, pid) in &pids {
        let hwm = mem_of(*pid).map(|m| m.hwm_kib).unwrap_or(0);
        let sampled = peaks.get(name).copied().unwrap_or(0);
        section.push_on(
            on,
            Figure::at_most(
                S,
                &format!("{name} peak RSS (VmHWM) under load"),
                mib(hwm.max(sampled)),
                "MiB",
                40.0,
            ),
        );
    }
    up.stop().await;
    Ok(())
}

/// `url` (whose body is `body`) and a bare axum handler serving the same bytes, each under
/// wrk in the same run, with the cookie when given.
#[allow(clippy::too_many_arguments)]
async fn read_vs_bare(
    ctx: &Ctx,
    section: &mut Section,
    on: &str,
    file: &std::path::Path,
    url: &str,
    body: &[u8],
    cookie: Option<&str>,
    what: &str,
) -> anyhow::Result<()> {
    let p = &ctx.params;
    std::fs::write(file, body)?;
    let bare = Bare::start(ctx, file).await?;
    let headers: Vec<String> = cookie.map(|c| format!("Cookie: {c}")).into_iter().collect();
    let service = wrk::run_with_headers(url, 1, 64, p.wrk_secs, &headers).await?;
    let reference = wrk::run_with_headers(&bare.url(), 1, 64, p.wrk_secs, &headers).await?;
    drop(bare);
    anyhow::ensure!(
        service.non_2xx == 0,
        "{what}: {} answers were not 2xx",
        service.non_2xx
    );
    section.push_on(
        on,
        Figure::info(
            S,
            &format!("{what} throughput"),
            service.requests_per_sec,
            "req/s",
        )
        .note(format!(
            "wrk -t1 -c64 -d{}s: p50 {} ms, p99 {} ms; {} bytes",
            p.wrk_secs,
            fmt_num(service.p50_ms, 2),
            fmt_num(service.p99_ms, 2),
            body.len()
        )),
    );
    section.push_on(
        on,
        Figure::info(
            S,
            &format!("{what}: bare axum, same bytes"),
            reference.requests_per_sec,
            "req/s",
        )
        .note(format!("p99 {} ms", fmt_num(reference.p99_ms, 2))),
    );
    section.push_on(
        on,
        Figure::at_least(
            S,
            &format!("{what} / bare axum"),
            100.0 * service.requests_per_sec / reference.requests_per_sec.max(1.0),
            "%",
            70.0,
        ),
    );
    Ok(())
}
