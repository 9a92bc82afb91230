//! The gateway in front of real HTTP backends: the shipped Ingress rules route the
//! contract's requests, requests are forwarded whole, responses stream, a backend that is
//! down gives 502 JSON.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::routing::{any, get};
use futures_util::StreamExt;
use serde_json::{Value, json};
use switchyard_gateway::{Backends, Settings};
use switchyard_kit::server::Listeners;
use switchyard_kit::{CommonConfig, Shutdown};
use tokio::net::TcpListener;

async fn echo(
    State(name): State<&'static str>,
    headers: HeaderMap,
    req: Request,
) -> axum::Json<Value> {
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let header = |h: &str| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    // Every value, so a test can tell one joined header from several.
    let all = |h: &str| {
        headers
            .get_all(h)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
    };
    axum::Json(json!({
        "backend": name,
        "method": method,
        "uri": uri,
        "body": String::from_utf8_lossy(&body),
        "x-request-id": header("x-request-id"),
        "x-forwarded-host": header("x-forwarded-host"),
        "x-forwarded-for": all("x-forwarded-for"),
        "x-forwarded-proto": all("x-forwarded-proto"),
        "x-custom": header("x-custom"),
    }))
}

/// Sends one event at once, then another only after a pause: a buffering proxy would
/// hold the first until the stream ends.
async fn slow_stream() -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let events = futures_util::stream::iter(0..2).then(|i| async move {
        if i == 1 {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        Ok(Event::default().event("snapshot").data(format!("{i}")))
    });
    Sse::new(events)
}

async fn backend(name: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut app = Router::new();
    if name == "query" {
        app = app.route("/posts/stream", get(slow_stream));
    }
    let app = app
        .route("/", any(echo))
        .route("/{*path}", any(echo))
        .with_state(name);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn gateway(backends: Backends) -> (String, Shutdown) {
    let (url, _ops, shutdown) = gateway_with_ops(backends).await;
    (url, shutdown)
}

/// The gateway for the blog's shipped Ingress: its public URL, its ops URL.
async fn gateway_with_ops(backends: Backends) -> (String, String, Shutdown) {
    gateway_for(backends, switchyard_registry::BLOG.ingress.yaml.to_string()).await
}

/// The gateway for the blog's routing read from `yaml` (the Ingress or the HTTPRoutes).
async fn gateway_for(backends: Backends, yaml: String) -> (String, String, Shutdown) {
    let listeners = Listeners::local().await.expect("bind");
    let url = format!("http://{}", listeners.public.local_addr().expect("addr"));
    let ops = format!("http://{}", listeners.ops.local_addr().expect("addr"));
    let dir = std::env::temp_dir();
    let blog = &switchyard_registry::BLOG;
    let settings = Settings {
        common: CommonConfig::for_data_dir("gateway", dir),
        ingress_yaml: yaml,
        kind: None,
        host: blog.ingress.host.to_string(),
        backends,
        asyncapi: Some(switchyard_registry::asyncapi::document_text(blog)),
    };
    let shutdown = Shutdown::new();
    tokio::spawn(switchyard_gateway::launch(
        settings,
        listeners,
        shutdown.clone(),
    ));
    (url, ops, shutdown)
}

async fn all_backends() -> Backends {
    Backends::default()
        .with("posts-clusterip-srv", 4000, backend("posts").await)
        .with("query-srv", 4002, backend("query").await)
        .with("comments-srv", 4001, backend("comments").await)
        .with("client-srv", 3000, backend("client").await)
}

#[tokio::test]
async fn the_shipped_ingress_routes_the_contract_requests() {
    let (gw, shutdown) = gateway(all_backends().await).await;
    contract_requests(&gw).await;
    shutdown.trigger();
}

/// The same requests through the blog's Gateway API HTTPRoutes instead of its Ingress.
#[tokio::test]
async fn the_shipped_http_routes_route_the_contract_requests() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../infra/k8s/blog/gateway-api/httproutes.yaml"
    );
    let yaml = std::fs::read_to_string(path).expect("the blog's HTTPRoutes");
    let (gw, _ops, shutdown) = gateway_for(all_backends().await, yaml).await;
    contract_requests(&gw).await;
    shutdown.trigger();
}

async fn contract_requests(gw: &str) {
    let client = reqwest::Client::new();
    let table = [
        ("POST", "/posts/create", "posts"),
        ("GET", "/posts", "query"),
        ("GET", "/posts?x=1", "query"),
        ("POST", "/posts/abc123/comments", "comments"),
        ("GET", "/posts/abc123/comments", "comments"),
        ("GET", "/", "client"),
        ("GET", "/app.js", "client"),
        ("GET", "/styles.css", "client"),
        ("GET", "/some/page", "client"),
        ("POST", "/events", "client"),
    ];
    for (method, path, expected) in table {
        let method: reqwest::Method = method.parse().expect("method");
        let response = client
            .request(method.clone(), format!("{gw}{path}"))
            .header("content-type", "application/json")
            .header("x-custom", "kept")
            .header("x-request-id", "req-42")
            .body(r#"{"title":"hi"}"#)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200, "{method} {path}");
        let v: Value = response.json().await.expect("json");
        assert_eq!(v["backend"], expected, "{method} {path}");
        assert_eq!(v["method"], method.as_str());
        assert_eq!(v["uri"], path, "path and query forwarded unchanged");
        assert_eq!(v["body"], r#"{"title":"hi"}"#);
        assert_eq!(v["x-custom"], "kept");
        assert_eq!(v["x-request-id"], "req-42");
        assert!(
            v["x-forwarded-host"]
                .as_str()
                .is_some_and(|h| h.starts_with("127.0.0.1"))
        );
    }
}

/// `/metrics`, `/healthz` and `/readyz` on the public port are the Ingress's to route (the
/// client's catch-all here): nothing operational is public. The gateway's own answer on
/// its ops port, beside the app's AsyncAPI document.
#[tokio::test]
async fn operational_endpoints_are_not_public() {
    let (gw, ops, shutdown) = gateway_with_ops(all_backends().await).await;
    let client = reqwest::Client::new();
    for path in ["/metrics", "/healthz", "/readyz"] {
        let response = client
            .get(format!("{gw}{path}"))
            .send()
            .await
            .expect("send");
        let v: Value = response.json().await.expect("json");
        assert_eq!(v["backend"], "client", "{path} was not proxied");
    }
    for path in ["/healthz", "/readyz"] {
        let response = client
            .get(format!("{ops}{path}"))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 200, "{path} on the ops port");
    }
    let metrics = client
        .get(format!("{ops}/metrics"))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("service=\"gateway\""), "{metrics}");
    // The app's AsyncAPI document: on the ops port, with its content type; not public.
    let asyncapi = client
        .get(format!("{ops}/asyncapi.json"))
        .send()
        .await
        .expect("send");
    assert_eq!(asyncapi.status(), 200);
    assert_eq!(asyncapi.headers()["content-type"], "application/json");
    let doc: Value = asyncapi.json().await.expect("json");
    assert_eq!(
        doc["channels"]["CommentCreated"]["address"],
        "CommentCreated"
    );
    let public: Value = client
        .get(format!("{gw}/asyncapi.json"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        public["backend"], "client",
        "/asyncapi.json was not proxied"
    );
    shutdown.trigger();
}

/// The gateway adds its hop to the `X-Forwarded-*` headers a proxy in front of it set
/// (a TLS terminator's `https` included) and sets them itself only when they are absent.
#[tokio::test]
async fn forwarded_headers_are_appended_not_replaced() {
    let (gw, shutdown) = gateway(all_backends().await).await;
    let client = reqwest::Client::new();

    let v: Value = client
        .get(format!("{gw}/posts"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "posts.com")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(v["backend"], "query");
    assert_eq!(v["x-forwarded-for"], json!(["203.0.113.7, 127.0.0.1"]));
    assert_eq!(v["x-forwarded-proto"], json!(["https"]));
    assert_eq!(v["x-forwarded-host"], "posts.com");

    // Several incoming headers (two earlier proxies) become one chain, in order.
    let v: Value = client
        .get(format!("{gw}/posts"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-for", "198.51.100.2, 192.0.2.1")
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(
        v["x-forwarded-for"],
        json!(["203.0.113.7, 198.51.100.2, 192.0.2.1, 127.0.0.1"])
    );

    // Nothing in front of the gateway: it records the client and plain HTTP itself.
    let v: Value = client
        .get(format!("{gw}/posts"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(v["x-forwarded-for"], json!(["127.0.0.1"]));
    assert_eq!(v["x-forwarded-proto"], json!(["http"]));
    assert!(
        v["x-forwarded-host"]
            .as_str()
            .is_some_and(|h| h.starts_with("127.0.0.1:")),
        "{v}"
    );
    shutdown.trigger();
}

#[tokio::test]
async fn responses_stream_through_the_gateway() {
    let (gw, shutdown) = gateway(all_backends().await).await;
    let response = reqwest::get(format!("{gw}/posts/stream"))
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(2), body.next())
        .await
        .expect("the first event arrives before the stream ends")
        .expect("chunk")
        .expect("bytes");
    let text: Bytes = first;
    assert!(
        String::from_utf8_lossy(&text).contains("event: snapshot"),
        "{text:?}"
    );
    shutdown.trigger();
}

#[tokio::test]
async fn a_backend_that_is_down_gives_502_json() {
    // Nothing listens on the comments backend's address. The socket stays bound (and not
    // listening) for the whole test: a port released at once could be given to another
    // test's server running alongside, which would then answer.
    let reserved = tokio::net::TcpSocket::new_v4().expect("socket");
    reserved
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let closed = format!("http://{}", reserved.local_addr().expect("addr"));
    let backends = all_backends().await.with("comments-srv", 4001, closed);
    let (gw, shutdown) = gateway(backends).await;
    let response = reqwest::Client::new()
        .post(format!("{gw}/posts/p1/comments"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 502);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("application/json")
    );
    let v: Value = response.json().await.expect("json");
    assert_eq!(v["errors"][0]["message"], "comments-srv is unavailable");
    shutdown.trigger();
}
