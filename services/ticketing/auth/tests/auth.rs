//! The auth service on its own, over real HTTP on 127.0.0.1, on SQLite and on PostgreSQL:
//! the original's auth tests as behaviour (signup, signin, signout, currentuser), every
//! input check, one user per email under concurrent signups, a session built as the
//! original's tests build it, the sign-in and sign-up limits, and the hashing queue under
//! abandoned sign-ins.

use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};
use switchyard_auth::{PasswordParams, ThrottleConfig};
use switchyard_session::SessionConfig;
use switchyard_testkit::plain::{Answer, Client};
use switchyard_testkit::{Replicas, Running, eventually};

/// The key sessions are signed with here.
const KEY: &str = "test-key-123-test-key-123-test-key-123";

/// How to start the service.
struct Options {
    password: PasswordParams,
    throttle: ThrottleConfig,
}

impl Default for Options {
    /// The cheapest hashing, for speed; behind one trusted proxy as under `up`, with room
    /// for every sign-up a test makes from 127.0.0.1.
    fn default() -> Self {
        Options {
            password: PasswordParams::FOR_TESTS,
            throttle: ThrottleConfig {
                trusted_hops: 1,
                client_attempts: 5,
                signups_per_client: 100_000,
                ..Default::default()
            },
        }
    }
}

/// The auth service, running.
struct Auth {
    _dir: tempfile::TempDir,
    running: Running,
}

impl Auth {
    async fn start(database_url: Option<&str>, options: Options) -> Auth {
        let dir = tempfile::tempdir().expect("tempdir");
        let replicas = Replicas::bind(1).await;
        let mut running = replicas
            .start(&reqwest::Client::new(), |i, listeners| {
                let settings = switchyard_auth::Settings {
                    common: Replicas::config("auth", dir.path(), i, database_url),
                    session: SessionConfig::for_key(KEY),
                    password: options.password,
                    throttle: options.throttle,
                };
                Running::start(listeners, move |l, s| {
                    switchyard_auth::launch(settings, l, s)
                })
            })
            .await;
        Auth {
            _dir: dir,
            running: running.remove(0),
        }
    }

    fn url(&self) -> String {
        self.running.url()
    }

    fn ops_url(&self) -> String {
        self.running.ops_url()
    }

    async fn shutdown(self) {
        self.running.stop().await.expect("auth stopped cleanly");
    }
}

async fn auth(database: Option<&str>) -> Auth {
    Auth::start(database, Options::default()).await
}

switchyard_testkit::on_each_database!(
    signup_signin_signout_and_currentuser_follow_the_contract,
    every_input_check_reports_its_field,
    one_email_is_one_user_whatever_its_spelling_or_concurrency,
    a_cookie_built_as_the_original_builds_it_is_a_session,
    failed_signins_are_limited_per_email_and_per_client,
    forty_concurrent_wrong_signins_get_at_most_the_limit_of_verdicts,
    a_client_past_its_budget_is_slowed_not_locked_out,
    signups_are_limited_per_client,
);

fn session_pair(a: &Answer) -> String {
    let header = a
        .set_cookies
        .iter()
        .find(|c| c.starts_with("session="))
        .unwrap_or_else(|| panic!("no session cookie in {:?}", a.set_cookies));
    header.split(';').next().expect("pair").to_string()
}

async fn signup(c: &Client, base: &str, email: &str, password: &str) -> Answer {
    c.post_json(
        &format!("{base}/api/users/signup"),
        &json!({"email": email, "password": password}),
    )
    .await
}

async fn current(c: &Client, base: &str, cookie: Option<&str>) -> Value {
    let a = c
        .with_cookie(
            Method::GET,
            &format!("{base}/api/users/currentuser"),
            cookie,
            None,
        )
        .await;
    assert_eq!(a.status, 200);
    a.json()
}

async fn signup_signin_signout_and_currentuser_follow_the_contract(database: Option<&str>) {
    let t = auth(database).await;
    let (c, base) = (Client::default(), t.url());
    // signup: 201, {id, email}, the cookie.
    let a = signup(&c, &base, "test@test.com", "password").await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    let user = a.json();
    assert_eq!(user["email"], "test@test.com");
    assert!(user["id"].as_str().is_some_and(|id| id.len() == 24));
    assert_eq!(user.as_object().map(|o| o.len()), Some(2), "{user}");
    let set = a.set_cookies.join("\n");
    assert!(
        set.contains("path=/") && set.contains("httponly") && set.contains("samesite=lax"),
        "{set}"
    );
    let cookie = session_pair(&a);
    // currentuser with and without the cookie.
    let me = current(&c, &base, Some(&cookie)).await;
    assert_eq!(me["currentUser"]["email"], "test@test.com");
    assert_eq!(me["currentUser"]["id"], user["id"]);
    assert!(me["currentUser"]["iat"].is_u64());
    assert_eq!(
        me["currentUser"].as_object().map(|o| o.len()),
        Some(3),
        "{{id, email, iat}}: {me}"
    );
    assert_eq!(current(&c, &base, None).await, json!({"currentUser": null}));
    // signin: the cookie; wrong password and unknown email: 400 Invalid credentials.
    let a = c
        .post_json(
            &format!("{base}/api/users/signin"),
            &json!({"email": "test@test.com", "password": "password"}),
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["id"], user["id"]);
    let again = session_pair(&a);
    assert_eq!(
        current(&c, &base, Some(&again)).await["currentUser"]["id"],
        user["id"]
    );
    for body in [
        json!({"email": "test@test.com", "password": "wrong"}),
        json!({"email": "nobody@test.com", "password": "password"}),
    ] {
        let a = c
            .post_json(&format!("{base}/api/users/signin"), &body)
            .await;
        a.assert_error(400, None);
        assert_eq!(a.json()["errors"][0]["message"], "Invalid credentials");
        assert!(a.set_cookies.is_empty());
    }
    // signout: 200 {}, the cookie cleared exactly as the original clears it.
    let a = c
        .with_cookie(
            Method::POST,
            &format!("{base}/api/users/signout"),
            Some(&cookie),
            None,
        )
        .await;
    assert_eq!((a.status, a.json()), (200, json!({})));
    assert_eq!(
        a.set_cookies,
        ["session=; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT; httponly"]
    );
    // Unknown routes: 404 Not Found, JSON.
    let a = c.get(&format!("{base}/api/users/nothing")).await;
    a.assert_error(404, None);
    assert_eq!(a.json()["errors"][0]["message"], "Not Found");
    t.shutdown().await;
}

async fn every_input_check_reports_its_field(database: Option<&str>) {
    let t = auth(database).await;
    let (c, base) = (Client::default(), t.url());
    let signup_url = format!("{base}/api/users/signup");
    let signin_url = format!("{base}/api/users/signin");
    for (body, fields) in [
        (
            json!({"email": "alskdflaskjfd", "password": "password"}),
            vec!["email"],
        ),
        (
            json!({"email": "test@test.com", "password": "p"}),
            vec!["password"],
        ),
        (
            json!({"email": "test@test.com", "password": "p".repeat(21)}),
            vec!["password"],
        ),
        (json!({"email": "test@test.com"}), vec!["password"]),
        (json!({"password": "password"}), vec!["email"]),
        (json!({}), vec!["email", "password"]),
        (
            json!({"email": 5, "password": ["x"]}),
            vec!["email", "password"],
        ),
    ] {
        let a = c.post_json(&signup_url, &body).await;
        a.assert_error(400, None);
        let got: Vec<String> = a.json()["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| e["field"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(got, fields, "{body}");
    }
    let a = c
        .post_json(&signup_url, &json!({"email": "bad", "password": "x"}))
        .await;
    let messages: Vec<String> = a.json()["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        messages,
        [
            "Email must be valid",
            "Password must be between 4 and 20 characters"
        ]
    );
    let a = c
        .post_json(
            &signin_url,
            &json!({"email": "test@test.com", "password": " "}),
        )
        .await;
    a.assert_error(400, Some("password"));
    assert_eq!(
        a.json()["errors"][0]["message"],
        "You must supply a password"
    );
    // Not JSON, not an object, too large: 4xx with the JSON error body, never 5xx.
    for (ctype, body) in [
        ("application/json", "{not json".to_string()),
        ("text/plain", "email=a".to_string()),
        ("application/json", "[1,2]".to_string()),
        (
            "application/json",
            format!("{{\"email\":\"{}\"}}", "a".repeat(100_000)),
        ),
    ] {
        let a = c.post_raw(&signup_url, ctype, body).await;
        assert!((400..500).contains(&a.status), "{ctype}: {}", a.status);
        a.assert_error(a.status, None);
    }
    t.shutdown().await;
}

async fn one_email_is_one_user_whatever_its_spelling_or_concurrency(database: Option<&str>) {
    let t = auth(database).await;
    let (c, base) = (Client::default(), t.url());
    assert_eq!(
        signup(&c, &base, "  Same@Test.com ", "password")
            .await
            .status,
        201
    );
    let a = signup(&c, &base, "same@test.com", "password").await;
    a.assert_error(400, None);
    assert_eq!(a.json()["errors"][0]["message"], "Email in use");
    // Sign in with another spelling of the address.
    let a = c
        .post_json(
            &format!("{base}/api/users/signin"),
            &json!({"email": "SAME@test.COM", "password": "password"}),
        )
        .await;
    assert_eq!(
        (a.status, a.json()["email"].clone()),
        (200, json!("same@test.com"))
    );
    // Concurrent signups of one new email: exactly one 201, the others 400 Email in use.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (c, base) = (c.clone(), base.clone());
            tokio::spawn(async move { signup(&c, &base, "race@test.com", "password").await })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        let a = task.await.expect("task");
        match a.status {
            201 => created += 1,
            400 => assert_eq!(a.json()["errors"][0]["message"], "Email in use"),
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&a.body)),
        }
    }
    assert_eq!(created, 1, "one user per email");
    t.shutdown().await;
}

async fn a_cookie_built_as_the_original_builds_it_is_a_session(database: Option<&str>) {
    let t = auth(database).await;
    let (c, base) = (Client::default(), t.url());
    // The original's tests: jwt.sign({id, email}, KEY), then
    // `session=` + base64(JSON.stringify({jwt})). No exp.
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let sign = |key: &[u8]| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"id": "5f1b2c3d4e5f6a7b8c9d0e1f", "email": "old@test.com", "iat": iat}),
            &jsonwebtoken::EncodingKey::from_secret(key).expect("key"),
        )
        .expect("token")
    };
    let cookie = |token: &str| {
        format!(
            "session={}",
            base64::engine::general_purpose::STANDARD.encode(format!("{{\"jwt\":\"{token}\"}}"))
        )
    };
    let me = current(&c, &base, Some(&cookie(&sign(KEY.as_bytes())))).await;
    assert_eq!(
        me,
        json!({"currentUser": {"id": "5f1b2c3d4e5f6a7b8c9d0e1f", "email": "old@test.com", "iat": iat}})
    );
    // Expired (as the tokens auth issues can be): signed out, not an error.
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"id": "5f1b2c3d4e5f6a7b8c9d0e1f", "email": "old@test.com", "iat": iat - 7200, "exp": iat - 3600}),
        &jsonwebtoken::EncodingKey::from_secret(KEY.as_bytes()).expect("key"),
    )
    .expect("token");
    // Another key, a tampered token, an expired one, garbage: signed out, not an error.
    for bad in [
        cookie(&expired),
        cookie(&sign(b"another key")),
        cookie(&format!("{}x", sign(KEY.as_bytes()))),
        "session=%%%".to_string(),
        "session=".to_string(),
    ] {
        assert_eq!(
            current(&c, &base, Some(&bad)).await,
            json!({"currentUser": null}),
            "{bad}"
        );
    }
    t.shutdown().await;
}

async fn failed_signins_are_limited_per_email_and_per_client(database: Option<&str>) {
    let t = auth(database).await;
    let (c, base) = (Client::default(), t.url());
    assert_eq!(
        signup(&c, &base, "limited@test.com", "password")
            .await
            .status,
        201
    );
    let signin = |email: &'static str, password: &'static str, client: &'static str| {
        let (c, base) = (c.clone(), base.clone());
        async move {
            let r = reqwest::Client::new()
                .post(format!("{base}/api/users/signin"))
                .header("x-forwarded-for", client)
                .json(&json!({"email": email, "password": password}))
                .send()
                .await
                .expect("sent");
            let _ = &c;
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    // Five failures for one email (default limit) from different clients...
    for i in 0..5 {
        let client = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"][i];
        assert_eq!(signin("limited@test.com", "wrong", client).await.0, 400);
    }
    // ...then even the right password is refused for a while: 429 with the JSON body.
    let (status, body) = signin("limited@test.com", "password", "10.0.0.9").await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    // One client failing for many emails is limited too.
    for i in 0..5 {
        let email = ["a@x.io", "b@x.io", "c@x.io", "d@x.io", "e@x.io"][i];
        assert_eq!(signin(email, "password", "10.9.9.9").await.0, 400);
    }
    assert_eq!(signin("f@x.io", "password", "10.9.9.9").await.0, 429);
    // Others are not affected.
    assert_eq!(signin("f@x.io", "password", "10.1.1.1").await.0, 400);
    t.shutdown().await;
}

/// A sign-in, as a client behind the trusted proxy at `client` (its `X-Forwarded-For`).
async fn signin_from(
    base: &str,
    email: &str,
    password: &str,
    client: &str,
) -> (u16, Option<String>, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/api/users/signin"))
        .header("x-forwarded-for", client)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("sent");
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (
        r.status().as_u16(),
        retry_after,
        r.json::<Value>().await.unwrap_or(Value::Null),
    )
}

/// Forty wrong sign-ins for one email at once (each from its own address, so only the
/// email's budget applies): at most the limit (5) get a wrong-password verdict, the others
/// 429; the right password among them signs in only if it got a place (and a success does
/// not hand the racing guesses a fresh budget).
async fn forty_concurrent_wrong_signins_get_at_most_the_limit_of_verdicts(database: Option<&str>) {
    let t = auth(database).await;
    let (c, base) = (Client::default(), t.url());
    assert_eq!(
        signup(&c, &base, "target@test.com", "password")
            .await
            .status,
        201
    );
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let base = base.clone();
        // The right password is one of the forty.
        let password = if i == 20 { "password" } else { "wrong" };
        tasks.spawn(async move {
            (
                password,
                signin_from(&base, "target@test.com", password, &format!("10.1.0.{i}")).await,
            )
        });
    }
    let (mut verdicts, mut limited, mut signed_in) = (0, 0, 0);
    while let Some(done) = tasks.join_next().await {
        let (password, (status, retry_after, body)) = done.expect("task");
        match status {
            400 => verdicts += 1,
            200 => {
                assert_eq!(password, "password");
                signed_in += 1;
            }
            429 => {
                limited += 1;
                assert!(retry_after.is_some(), "429 says when to try again");
                assert!(body["errors"][0]["message"].is_string(), "{body}");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(
        verdicts <= 5 && signed_in <= 1,
        "{verdicts} wrong-password verdicts and {signed_in} sign-ins"
    );
    assert_eq!(verdicts + signed_in + limited, 40);
    t.shutdown().await;
}

/// A client address past its budget (users behind one NAT) is slowed, not locked out:
/// after the wait `Retry-After` states, the right password signs in.
async fn a_client_past_its_budget_is_slowed_not_locked_out(database: Option<&str>) {
    let t = Auth::start(
        database,
        Options {
            throttle: ThrottleConfig {
                trusted_hops: 1,
                client_attempts: 5,
                slowdown: std::time::Duration::from_millis(500),
                signups_per_client: 100,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let (c, base) = (Client::default(), t.url());
    assert_eq!(
        signup(&c, &base, "neighbour@test.com", "password")
            .await
            .status,
        201
    );
    // Someone at 192.0.2.7 fails for five emails...
    for i in 0..5 {
        let (status, ..) =
            signin_from(&base, &format!("guess{i}@test.com"), "wrong", "192.0.2.7").await;
        assert_eq!(status, 400);
    }
    // ...so the next attempt from there must wait,
    let (status, retry_after, _) =
        signin_from(&base, "neighbour@test.com", "password", "192.0.2.7").await;
    assert_eq!(status, 429);
    assert!(retry_after.is_some());
    // but once it has, a user at the same address signs in.
    eventually("the slowed client let through", || async {
        let (status, ..) = signin_from(&base, "neighbour@test.com", "password", "192.0.2.7").await;
        (status == 200).then_some(())
    })
    .await;
    t.shutdown().await;
}

/// Sign-ups are limited per client address too (here 3): the next answers 429 with
/// `Retry-After`, and another address is not affected.
async fn signups_are_limited_per_client(database: Option<&str>) {
    let t = Auth::start(
        database,
        Options {
            throttle: ThrottleConfig {
                trusted_hops: 1,
                signups_per_client: 3,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let base = t.url();
    let signup_from = |email: String, client: &'static str| {
        let base = base.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{base}/api/users/signup"))
                .header("x-forwarded-for", client)
                .json(&json!({"email": email, "password": "password"}))
                .send()
                .await
                .expect("sent");
            (r.status().as_u16(), r.headers().contains_key("retry-after"))
        }
    };
    for i in 0..3 {
        assert_eq!(
            signup_from(format!("s{i}@test.com"), "198.51.100.1")
                .await
                .0,
            201
        );
    }
    assert_eq!(
        signup_from("s3@test.com".into(), "198.51.100.1").await,
        (429, true)
    );
    assert_eq!(
        signup_from("s4@test.com".into(), "198.51.100.2").await.0,
        201
    );
    t.shutdown().await;
}

/// Three hundred sign-ins from three hundred addresses, each given up after 0.3 s, with
/// the real argon2 cost: their hashing is refused at once when the queue is full (503 with
/// `Retry-After`) or skipped when its turn comes, so a real sign-in after them is served
/// in about one hash. (Its latency is measured in `bench/`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_signins_do_not_hold_up_a_real_one() {
    let t = Auth::start(
        None,
        Options {
            password: PasswordParams::default(),
            ..Default::default()
        },
    )
    .await;
    let (c, base) = (Client::default(), t.url());
    assert_eq!(
        signup(&c, &base, "real@test.com", "password").await.status,
        201
    );
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .expect("client");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300 {
        let (client, base) = (impatient.clone(), base.clone());
        tasks.spawn(async move {
            client
                .post(format!("{base}/api/users/signin"))
                .header("x-forwarded-for", format!("10.{}.{}.1", i / 250, i % 250))
                .json(&json!({"email": format!("nobody{i}@test.com"), "password": "wrong"}))
                .send()
                .await
                .map(|r| (r.status().as_u16(), r.headers().contains_key("retry-after")))
        });
    }
    let mut busy = 0;
    while let Some(done) = tasks.join_next().await {
        if let Ok(Ok((503, true))) = done {
            busy += 1;
        }
    }
    assert!(busy > 0, "a full hashing queue answers 503 at once");
    let started = std::time::Instant::now();
    let (status, ..) = signin_from(&base, "real@test.com", "password", "203.0.113.9").await;
    eprintln!(
        "a real sign-in after 300 abandoned ones: {status} in {:?}",
        started.elapsed()
    );
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&c.get(&format!("{}/metrics", t.ops_url())).await.body)
        .into_owned();
    assert!(
        metrics.contains("switchyard_jobs_skipped_total{service=\"auth\",job=\"password\"}"),
        "the abandoned ones were skipped: {metrics}"
    );
    t.shutdown().await;
}
