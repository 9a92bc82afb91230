//! The GitTix client over HTTP: the shell on every page path, the assets and their types,
//! `/config.json`, the security headers, 404s as JSON; and the script parses (with node).

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_kit::server::Listeners;
use switchyard_kit::{CommonConfig, Shutdown};
use switchyard_ticketing_client::{
    APP_JS, ClientSettings, INDEX_HTML, PAGE_PATHS, STYLES_CSS, launch,
};

struct Running {
    base: String,
    ops: SocketAddr,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    http: reqwest::Client,
}

impl Running {
    async fn start(settings: ClientSettings) -> Running {
        let listeners = Listeners::local().await.expect("listeners");
        let public = listeners.public.local_addr().expect("addr");
        let ops = listeners.ops.local_addr().expect("addr");
        let shutdown = Shutdown::new();
        let mut common = CommonConfig::for_data_dir("client", std::env::temp_dir());
        common.shutdown_grace = Duration::from_secs(2);
        let task = tokio::spawn(launch(common, settings, listeners, shutdown.clone()));
        Running {
            base: format!("http://{public}"),
            ops,
            shutdown,
            task,
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    async fn stop(self) {
        self.shutdown.trigger();
        let outcome = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the client stops");
        outcome.expect("no panic").expect("clean stop");
    }
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn assert_security_headers(response: &reqwest::Response, path: &str) -> String {
    let csp = header(response, "content-security-policy");
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(part), "{path}: {part} missing from {csp:?}");
    }
    assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
    assert!(!csp.contains("unsafe-eval"), "{path}: {csp}");
    assert_eq!(
        header(response, "x-content-type-options"),
        "nosniff",
        "{path}"
    );
    assert_eq!(header(response, "referrer-policy"), "no-referrer", "{path}");
    csp
}

#[tokio::test]
async fn every_page_path_answers_the_shell_with_the_policy() {
    let client = Running::start(ClientSettings::default()).await;
    let pages = PAGE_PATHS
        .iter()
        .map(|p| p.replace(":id", "5f1b2c3d4e5f6a7b8c9d0e1f"));
    let extra = [
        "/index.html",
        "/auth/signin/",
        "/some/deep/link",
        "/tickets/abc?x=1",
    ];
    for path in pages.chain(extra.iter().map(|s| s.to_string())) {
        let response = client.get(&path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            header(&response, "content-type"),
            "text/html; charset=utf-8",
            "{path}"
        );
        let csp = assert_security_headers(&response, &path);
        assert!(!csp.contains("stripe"), "{path}: {csp}");
        let body = response.text().await.expect("body");
        assert_eq!(body, INDEX_HTML, "{path}");
        assert!(body.contains("<title>GitTix</title>"));
    }
    // HEAD works like GET.
    let head = client
        .http
        .head(format!("{}/orders/1", client.base))
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status(), 200);
    client.stop().await;
}

#[tokio::test]
async fn assets_have_their_content_types() {
    let client = Running::start(ClientSettings::default()).await;
    for (path, content_type, body) in [
        ("/app.js", "text/javascript; charset=utf-8", APP_JS),
        ("/styles.css", "text/css; charset=utf-8", STYLES_CSS),
    ] {
        let response = client.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(header(&response, "content-type"), content_type, "{path}");
        assert_security_headers(&response, path);
        assert_eq!(response.text().await.expect("body"), body, "{path}");
    }
    client.stop().await;
}

#[tokio::test]
async fn unknown_assets_and_api_paths_are_json_404s() {
    let client = Running::start(ClientSettings::default()).await;
    for path in [
        "/nope.js",
        "/favicon.ico",
        "/tickets/x/map.css",
        "/api/users/currentuser",
    ] {
        let response = client.get(path).await;
        assert_eq!(response.status(), 404, "{path}");
        assert!(
            header(&response, "content-type").starts_with("application/json"),
            "{path}"
        );
        assert_security_headers(&response, path);
        let body: serde_json::Value = response.json().await.expect("json");
        assert_eq!(
            body,
            serde_json::json!({"errors": [{"message": "Not Found"}]}),
            "{path}"
        );
    }
    // Only GET and HEAD reach the shell.
    let post = client
        .http
        .post(format!("{}/tickets/new", client.base))
        .send()
        .await
        .expect("POST");
    assert_eq!(post.status(), 404);
    assert!(header(&post, "content-type").starts_with("application/json"));
    client.stop().await;
}

#[tokio::test]
async fn config_json_without_a_key() {
    let client = Running::start(ClientSettings::default()).await;
    let response = client.get("/config.json").await;
    assert_eq!(response.status(), 200);
    assert!(header(&response, "content-type").starts_with("application/json"));
    assert_eq!(header(&response, "cache-control"), "no-store");
    let csp = assert_security_headers(&response, "/config.json");
    assert!(!csp.contains("stripe"), "{csp}");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body, serde_json::json!({"stripePublishableKey": null}));
    client.stop().await;
}

#[tokio::test]
async fn a_key_shows_in_config_json_and_opens_the_policy_to_stripe_only() {
    let client = Running::start(ClientSettings {
        stripe_publishable_key: Some("pk_test_51abcDEF".to_string()),
    })
    .await;
    let response = client.get("/config.json").await;
    let csp = assert_security_headers(&response, "/config.json");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(
        body,
        serde_json::json!({"stripePublishableKey": "pk_test_51abcDEF"})
    );
    for path in ["/", "/orders/5f1b2c3d4e5f6a7b8c9d0e1f", "/app.js"] {
        let response = client.get(path).await;
        assert_eq!(assert_security_headers(&response, path), csp, "{path}");
    }
    assert!(
        csp.contains("script-src 'self' https://js.stripe.com;"),
        "{csp}"
    );
    assert!(csp.contains("frame-src https://js.stripe.com;"), "{csp}");
    // No other directive names Stripe's script origin, and no wildcard.
    for directive in csp.split(';').map(str::trim) {
        assert!(!directive.contains('*'), "{directive}");
        if directive.contains("js.stripe.com") {
            assert!(
                directive.starts_with("script-src") || directive.starts_with("frame-src"),
                "{directive}"
            );
        }
    }
    client.stop().await;
}

#[tokio::test]
async fn the_ops_listener_is_separate() {
    let client = Running::start(ClientSettings::default()).await;
    let health = client
        .http
        .get(format!("http://{}/healthz", client.ops))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    client.stop().await;
}

#[test]
fn the_page_has_no_inline_script_or_style() {
    let html = INDEX_HTML.to_ascii_lowercase();
    assert_eq!(html.matches("<script").count(), 1, "one script tag");
    assert!(html.contains(r#"<script src="/app.js" defer></script>"#));
    assert!(!html.contains("<style"));
    assert!(!html.contains("style="));
    // No inline event handler attribute (` onclick=`, ` onload=`, ...).
    for (at, _) in html.match_indices(" on") {
        let name: String = html[at + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        let after = html[at + 1 + name.len()..].trim_start();
        assert!(!after.starts_with('='), "inline handler {name}");
    }
    assert!(html.contains(r#"href="/styles.css""#));
}

#[test]
fn the_script_never_writes_markup() {
    for forbidden in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "localStorage",
        "sessionStorage",
        "document.cookie",
        ".style.",
    ] {
        assert!(!APP_JS.contains(forbidden), "app.js uses {forbidden}");
    }
    assert!(APP_JS.contains("credentials: 'same-origin'"));
}

#[test]
fn the_script_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/app.js");
    match std::process::Command::new("node")
        .arg("--check")
        .arg(path)
        .output()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipped: node is not installed, app.js was not syntax-checked");
        }
        Err(e) => panic!("cannot run node: {e}"),
        Ok(output) => assert!(
            output.status.success(),
            "node --check app.js failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}
