//! A generated campaign of bad input against every route of every service of both apps:
//! malformed JSON, wrong types, huge bodies, deep nesting, invalid UTF-8, long and odd
//! paths, unknown event types, events with missing fields; for ticketing, signed in or not.
//! Pass: no 5xx, every 4xx has the JSON error body, and every service is still up.

use crate::support;

use serde_json::{Value, json};
use support::backend::Backend;
use support::blog::Blog;
use support::http::Client;
use support::ticketing::Ticketing;

/// A small deterministic generator (xorshift64*), so a failure can be replayed by seed.
struct Rng(u64);

impl Rng {
    /// Seeds through splitmix64, so nearby seeds give unrelated sequences.
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn odd_value(rng: &mut Rng) -> Value {
    match rng.below(9) {
        0 => Value::Null,
        1 => json!(rng.next() as i64),
        2 => json!(1.5e300),
        3 => json!(true),
        4 => json!([1, "two", null]),
        5 => json!({"nested": {"deeper": [{}]}}),
        6 => json!(""),
        7 => json!("x".repeat(rng.below(5000))),
        _ => json!("\u{0000}\u{202e}\u{1f600}<script>'\"\\"),
    }
}

fn body(rng: &mut Rng) -> (String, Vec<u8>) {
    let json_ct = "application/json".to_string();
    match rng.below(14) {
        0 => (json_ct, b"{\"title\":".to_vec()),
        1 => (json_ct, vec![0xff, 0xfe, 0x7b, 0x22, 0xc3, 0x28]),
        2 => (
            json_ct,
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
        ),
        3 => (
            json_ct,
            format!("{{\"title\":\"{}\"}}", "a".repeat(70_000)).into_bytes(),
        ),
        4 => (json_ct, Vec::new()),
        5 => ("text/plain".into(), b"{\"title\":\"x\"}".to_vec()),
        6 => (
            "application/x-www-form-urlencoded".into(),
            b"title=x&content=y".to_vec(),
        ),
        7 => (
            json_ct,
            serde_json::to_vec(&odd_value(rng)).unwrap_or_default(),
        ),
        8 => (
            json_ct,
            serde_json::to_vec(&json!({"title": odd_value(rng), "content": odd_value(rng)}))
                .unwrap_or_default(),
        ),
        9 => {
            let t = rng
                .pick(&[
                    "PostCreated",
                    "CommentCreated",
                    "CommentModerated",
                    "CommentUpdated",
                    "ticket:created",
                    "ticket:updated",
                    "order:created",
                    "order:cancelled",
                    "expiration:complete",
                    "payment:created",
                    "Nope",
                    "",
                ])
                .to_string();
            let data = match rng.below(7) {
                0 => odd_value(rng),
                1 => json!({"id": odd_value(rng), "postId": odd_value(rng)}),
                2 => {
                    json!({"id": "c", "postId": "p", "content": odd_value(rng), "status": odd_value(rng)})
                }
                3 => json!({"id": "p", "title": odd_value(rng)}),
                4 => {
                    json!({"id": odd_value(rng), "version": odd_value(rng), "title": odd_value(rng), "price": odd_value(rng), "userId": odd_value(rng)})
                }
                5 => {
                    json!({"id": "5f1b2c3d4e5f6a7b8c9d0e1f", "version": odd_value(rng), "status": odd_value(rng), "expiresAt": odd_value(rng), "ticket": {"id": odd_value(rng), "price": odd_value(rng)}})
                }
                _ => json!({"orderId": odd_value(rng), "stripeId": odd_value(rng)}),
            };
            (
                json_ct,
                serde_json::to_vec(&json!({"type": t, "data": data, "id": odd_value(rng)}))
                    .unwrap_or_default(),
            )
        }
        10 => (
            json_ct,
            serde_json::to_vec(&json!({"type": odd_value(rng), "seq": odd_value(rng)}))
                .unwrap_or_default(),
        ),
        11 => (
            "application/json; charset=utf-16".into(),
            b"\xff\xfe{\x00}\x00".to_vec(),
        ),
        12 => (json_ct, b"{\"title\":\"a\",\"title\":\"b\"}".to_vec()),
        _ => (
            json_ct,
            (0..rng.below(300))
                .map(|_| (rng.next() & 0xff) as u8)
                .collect(),
        ),
    }
}

fn path(rng: &mut Rng, routes: &[&str]) -> String {
    let base = rng.pick(routes).to_string();
    match rng.below(8) {
        0 => format!("{base}/{}", "x".repeat(rng.below(8000))),
        1 => base.replace(":id", &"%00%ff%2e%2e".repeat(1 + rng.below(50))),
        2 => format!("{base}?{}", "a=1&".repeat(rng.below(500))),
        3 => format!("/{}", "../".repeat(rng.below(30))),
        4 => base.replace(":id", "%F0%9F%98%80%20spaces%20"),
        5 => format!("{base}//"),
        _ => base.replace(":id", "p1"),
    }
}

/// The campaign's size and seed: `CAMPAIGN_CASES` (600), `CAMPAIGN_SEED`.
fn cases_and_seed() -> (usize, u64) {
    let seed: u64 = std::env::var("CAMPAIGN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_5eed);
    let cases: usize = std::env::var("CAMPAIGN_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    (cases, seed)
}

/// One service under the campaign: its name, address and routes (`:id` stands for an id).
struct Target {
    service: &'static str,
    url: String,
    routes: &'static [&'static str],
}

/// Sends `cases` generated requests to `targets` (with `cookie` on half of them, when
/// given) and checks every answer; returns how many were 4xx and 2xx.
async fn campaign(
    targets: &[Target],
    cookie: Option<&str>,
    cases: usize,
    seed: u64,
) -> (usize, usize) {
    // A fresh connection per case: a server may close a connection whose request body it
    // did not read (a rejected oversized body), and a pooled connection would race that.
    let raw = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let mut rng = Rng::new(seed);
    let methods = [
        reqwest::Method::POST,
        reqwest::Method::POST,
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::PATCH,
    ];
    let (mut four_xx, mut two_xx) = (0, 0);
    for case in 0..cases {
        let target = rng.pick(targets);
        let url = format!("{}{}", target.url, path(&mut rng, target.routes));
        let method = rng.pick(&methods).clone();
        let (content_type, bytes) = body(&mut rng);
        let mut request = raw
            .request(method.clone(), &url)
            .header("content-type", content_type.clone())
            .body(bytes);
        if let Some(cookie) = cookie
            && rng.below(2) == 0
        {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.unwrap_or_else(|e| {
            panic!("case {case} (seed {seed}): {method} {url} [{content_type}]: no answer: {e:?}")
        });
        let status = response.status().as_u16();
        let ct = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = response.bytes().await.unwrap_or_default();
        assert!(
            status < 500,
            "case {case} (seed {seed}): {} {method} {url} [{content_type}] answered {status}: {}",
            target.service,
            String::from_utf8_lossy(&text)
        );
        if status >= 400 {
            four_xx += 1;
            assert!(
                ct.starts_with("application/json"),
                "case {case}: {status} with {ct}"
            );
            let v: Value = serde_json::from_slice(&text)
                .unwrap_or_else(|e| panic!("case {case}: {status} body not JSON: {e}"));
            let errors = v["errors"]
                .as_array()
                .unwrap_or_else(|| panic!("case {case}: no errors array: {v}"));
            assert!(
                !errors.is_empty() && errors.iter().all(|e| e["message"].is_string()),
                "case {case}: {v}"
            );
        } else {
            two_xx += 1;
        }
    }
    assert!(
        four_xx > cases / 2,
        "the campaign should mostly be bad input"
    );
    (four_xx, two_xx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_input_makes_a_blog_service_answer_5xx_or_fall_over() {
    let blog = Blog::start().await;
    let (cases, seed) = cases_and_seed();
    let services: [(&str, &[&str]); 5] = [
        ("posts", &["/posts", "/posts/create", "/events"]),
        ("comments", &["/posts/:id/comments", "/events"]),
        ("query", &["/posts", "/events"]),
        ("moderation", &["/events"]),
        ("event-bus", &["/events"]),
    ];
    let targets: Vec<Target> = services
        .iter()
        .map(|(service, routes)| Target {
            service,
            url: blog.url(service),
            routes,
        })
        .collect();
    let (four_xx, two_xx) = campaign(&targets, None, cases, seed).await;
    let client = Client::default();
    for (service, _) in services {
        let a = client
            .get(&format!("{}/healthz", blog.ops_url(service)))
            .await;
        assert_eq!(a.status, 200, "{service} is down after the campaign");
    }
    eprintln!(
        "blog campaign: {cases} cases, {four_xx} answered 4xx with the JSON error body, {two_xx} 2xx, 0 5xx"
    );
    blog.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_input_makes_a_ticketing_service_answer_5xx_or_fall_over() {
    let services: [(&str, &[&str]); 6] = [
        (
            "auth",
            &[
                "/api/users/signup",
                "/api/users/signin",
                "/api/users/signout",
                "/api/users/currentuser",
            ],
        ),
        ("tickets", &["/api/tickets", "/api/tickets/:id", "/events"]),
        ("orders", &["/api/orders", "/api/orders/:id", "/events"]),
        ("payments", &["/api/payments", "/events"]),
        ("expiration", &["/events"]),
        ("event-bus", &["/events"]),
    ];
    let t = Ticketing::start_on(
        Backend::Embedded,
        &["auth", "tickets", "orders", "expiration", "payments"],
    )
    .await;
    let (cases, seed) = cases_and_seed();
    let targets: Vec<Target> = services
        .iter()
        .map(|(service, routes)| Target {
            service,
            url: t.url(service),
            routes,
        })
        .collect();
    // Signed in on half the cases: past the 401s, into the input checks.
    let cookie = Ticketing::cookie_for("5f1b2c3d4e5f6a7b8c9d0e1f", "campaign@test.com");
    let (four_xx, two_xx) = campaign(&targets, Some(&cookie), cases, seed).await;
    let client = Client::default();
    for (service, _) in services.iter().filter(|(s, _)| *s != "event-bus") {
        let a = client.get(&format!("{}/healthz", t.ops_url(service))).await;
        assert_eq!(a.status, 200, "{service} is down after the campaign");
    }
    eprintln!(
        "ticketing campaign: {cases} cases, {four_xx} answered 4xx with the JSON error body, {two_xx} 2xx, 0 5xx"
    );
    t.shutdown().await;
}
