//! `switchyard up ticketing`: every service ready behind the gateway, the Ingress's host and
//! the printed address both routed, a JWT_KEY generated once and kept (or taken from the
//! environment), EXPIRATION_WINDOW_SECONDS reaching orders, the blog beside it without a
//! port clash, and the same on PostgreSQL + NATS.

use crate::support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::backend::{Backend, Resources};
use support::http::{Answer, Client};
use support::up::{Up, free_offset};
use support::{eventually, process};

/// The gateway ports of the apps under `offset`, from the registry.
fn gateway_port(app: &str, offset: u16) -> u16 {
    support::shop::port_of(app, switchyard_registry::Kind::Gateway, offset)
}

async fn send(
    c: &Client,
    method: Method,
    url: &str,
    cookie: Option<&str>,
    body: Option<Value>,
) -> Answer {
    c.with_cookie(method, url, cookie, body.as_ref()).await
}

fn session(a: &Answer) -> String {
    a.set_cookies
        .iter()
        .find(|c| c.starts_with("session="))
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_string()
}

/// Signs up, sells a ticket, orders it through the gateway at `base`; returns the order.
async fn buy_through(c: &Client, base: &str) -> Value {
    let a = send(
        c,
        Method::POST,
        &format!("{base}/api/users/signup"),
        None,
        Some(json!({"email": format!("{}@test.com", switchyard_ticketing_contract::object_id()), "password": "password"})),
    )
    .await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    let set = a.set_cookies.join("\n");
    assert!(!set.contains("secure"), "plain HTTP under up: {set}");
    let cookie = session(&a);
    let a = send(
        c,
        Method::POST,
        &format!("{base}/api/tickets"),
        Some(&cookie),
        Some(json!({"title": "up", "price": 10})),
    )
    .await;
    assert_eq!(a.status, 201);
    let ticket_id = a.json()["id"].as_str().expect("id").to_string();
    eventually("the order to be created", || async {
        let a = send(
            c,
            Method::POST,
            &format!("{base}/api/orders"),
            Some(&cookie),
            Some(json!({"ticketId": ticket_id})),
        )
        .await;
        (a.status == 201).then(|| a.json())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_ticketing_behind_its_ingress_with_a_kept_jwt_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let offset = free_offset();
    let gateway = gateway_port("ticketing", offset);
    let mut up = Up::start_app(
        "ticketing",
        dir.path(),
        offset,
        gateway,
        &[],
        &[("EXPIRATION_WINDOW_SECONDS", "77")],
    );
    let lines = up.lines();
    for service in switchyard_registry::TICKETING.services {
        let row = lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(service.name) && l.contains(" http://"))
            .unwrap_or_else(|| {
                panic!(
                    "{} missing from the table:\n{}",
                    service.name,
                    lines.join("\n")
                )
            });
        assert!(row.contains(" yes "), "{row}");
    }
    up.wait_for_line(
        &format!("open http://127.0.0.1:{gateway}"),
        Duration::from_secs(1),
    );
    let base = up.url();
    let c = Client::default();
    // The printed address works, and so does the Ingress's host.
    let order = buy_through(&c, &base).await;
    let expires = time::OffsetDateTime::parse(
        order["expiresAt"].as_str().expect("expiresAt"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    let left = (expires - time::OffsetDateTime::now_utc()).whole_seconds();
    assert!(
        (60..=78).contains(&left),
        "EXPIRATION_WINDOW_SECONDS=77 reached orders: {left} s left"
    );
    let r = reqwest::Client::new()
        .get(format!("{base}/api/users/currentuser"))
        .header("host", "ticketing.dev")
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"currentUser": null})
    );
    // The page is the client's, and nothing operational is public.
    let page = c.get(&base).await;
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("GitTix"));
    let metrics = c.get(&format!("{base}/metrics")).await;
    assert!(!String::from_utf8_lossy(&metrics.body).contains("switchyard_http_requests_total"));
    // The app's events as AsyncAPI, printed and served on the gateway's ops port (the
    // committed document, which the registry's tests keep equal to the code), not publicly.
    let ops = switchyard_registry::TICKETING
        .of_kind(switchyard_registry::Kind::Gateway)
        .next()
        .expect("gateway")
        .local_ops_port
        + offset;
    let asyncapi_url = format!("http://127.0.0.1:{ops}/asyncapi.json");
    up.wait_for_line(&asyncapi_url, Duration::from_secs(1));
    let served = c.get(&asyncapi_url).await;
    assert_eq!(served.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&served.body),
        switchyard_registry::asyncapi::document_text(&switchyard_registry::TICKETING)
    );
    assert_ne!(
        c.get(&format!("{base}/asyncapi.json")).await.body,
        served.body
    );
    // The generated key is kept in the data directory, readable by its owner only, and
    // the same after a restart (sessions survive).
    let key_file = dir.path().join("jwt_key");
    let key = std::fs::read_to_string(&key_file).expect("jwt_key kept");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
    assert_eq!(up.stop(), Some(0));
    let up = Up::start_app("ticketing", dir.path(), offset, gateway, &[], &[]);
    assert_eq!(std::fs::read_to_string(&key_file).expect("kept"), key);
    drop(up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_key_in_the_environment_is_used_and_the_blog_runs_beside() {
    let dir = tempfile::tempdir().expect("tmp");
    let offset = free_offset();
    let key = "a-key-from-the-environment-thirty-two";
    let ticketing = Up::start_app(
        "ticketing",
        &dir.path().join("ticketing"),
        offset,
        gateway_port("ticketing", offset),
        &[],
        &[("JWT_KEY", key)],
    );
    // The blog at the same offset: the registry gives the apps distinct ports.
    let blog = Up::start_app(
        "blog",
        &dir.path().join("blog"),
        offset,
        gateway_port("blog", offset),
        &[],
        &[],
    );
    let c = Client::default();
    let posts = c.get(&format!("{}/posts", blog.url())).await;
    assert_eq!(posts.status, 200);
    // A session signed with the environment's key is recognised.
    let sessions =
        switchyard_session::Sessions::new(switchyard_session::SessionConfig::for_key(key))
            .expect("keys");
    let (token, _) = sessions
        .issue("5f1b2c3d4e5f6a7b8c9d0e1f", "env@test.com")
        .expect("token");
    let cookie = sessions
        .set_cookie(&token)
        .to_str()
        .expect("ascii")
        .split(';')
        .next()
        .expect("pair")
        .to_string();
    let a = send(
        &c,
        Method::GET,
        &format!("{}/api/users/currentuser", ticketing.url()),
        Some(&cookie),
        None,
    )
    .await;
    assert_eq!(a.json()["currentUser"]["email"], "env@test.com");
    assert!(
        !dir.path().join("ticketing").join("jwt_key").exists(),
        "no key generated when one is given"
    );
    drop(blog);
    drop(ticketing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_ticketing_on_postgres_and_nats() {
    if !Backend::Production.enabled() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let mut resources = Resources::new();
    let extra = support::shop::production_up_args("ticketing", &resources).await;
    let offset = free_offset();
    let up = Up::start_app(
        "ticketing",
        dir.path(),
        offset,
        gateway_port("ticketing", offset),
        &extra,
        &[],
    );
    assert!(
        !up.lines()
            .iter()
            .any(|l| l.split_whitespace().next() == Some("event-bus") && l.contains(" http://")),
        "no HTTP event bus with NATS"
    );
    let order = buy_through(&Client::default(), &up.url()).await;
    assert_eq!(order["status"], "created");
    drop(up);
    resources.cleanup().await;
    let _ = process::free_port();
}
