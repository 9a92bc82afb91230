//! Forwarding a request to the backend its path routes to.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Uri;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use switchyard_ingress::{Backend, Router as IngressRouter};
use switchyard_kit::ApiError;
use switchyard_kit::request_id::{self, X_REQUEST_ID};

use crate::backends::Backends;

pub(crate) struct Proxy {
    routes: IngressRouter,
    /// Each routed backend with its base URL, worked out once.
    bases: Vec<(Backend, String)>,
    client: Client<HttpConnector, Body>,
}

/// Answers with a `Content-Length` up to this size are read whole from the backend and
/// sent on in one write; larger ones, and streams (server-sent events), are forwarded as
/// they come. A small answer sent on piece by piece cost a write and a wake-up per piece.
const WHOLE_ANSWER_MAX: u64 = 256 * 1024;

impl Proxy {
    pub fn new(routes: IngressRouter, backends: Backends) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let mut bases: Vec<(Backend, String)> = Vec::new();
        for location in routes.locations() {
            if !bases.iter().any(|(b, _)| *b == location.backend) {
                let base = backends.address_of(&location.backend);
                bases.push((location.backend.clone(), base));
            }
        }
        Proxy {
            routes,
            bases,
            client,
        }
    }
}

pub(crate) fn router(proxy: Arc<Proxy>) -> Router {
    // Every path is the proxy's, /metrics included: the gateway's own operational
    // endpoints are on its ops listener, so the Ingress decides what /metrics is here.
    Router::new()
        .route("/", any(forward))
        .route("/{*path}", any(forward))
        .with_state(proxy)
        .layer(axum::middleware::from_fn(with_request_id))
}

/// The request id the backends and the client see, on every answer: the client's when it
/// is plain and short, else a fresh one (the services apply the same rule; see
/// [`switchyard_kit::request_id`]).
async fn with_request_id(mut req: Request, next: axum::middleware::Next) -> Response {
    let id = request_id::ensure(req.headers_mut());
    let mut response = next.run(req).await;
    response.headers_mut().insert(X_REQUEST_ID, id);
    response
}

/// Hop-by-hop headers: they describe one connection and are not forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Sets the `X-Forwarded-*` headers on a request about to go to a backend, adding the
/// gateway's hop to what earlier proxies recorded rather than replacing it.
///
/// - `X-Forwarded-For` is a chain: each proxy appends the address it received the request
///   from. The incoming values (all `X-Forwarded-For` headers, in order, joined by `", "`,
///   bytes kept as they came) are followed by `client_ip`, and sent as one header, so a
///   backend behind a load balancer or TLS terminator still sees the original client.
///   The left-hand entries are whatever the sender claimed: only the right-most ones,
///   added by proxies the backend trusts, identify the client.
/// - `X-Forwarded-Proto` is the scheme the *client* used. The gateway itself speaks plain
///   HTTP, but a TLS-terminating proxy in front of it sets `https`; overwriting that would
///   make backends build `http://` redirects and links. An incoming value is kept; `http`
///   is set only when there is none.
/// - `X-Forwarded-Host` is the host the client asked for, kept for the same reason; when
///   absent it is set from the request's `Host` (`host`), if any.
///
/// `client_ip` is `None` when the connection's peer address is unknown; the incoming
/// `X-Forwarded-For` is then forwarded unchanged.
fn set_forwarded_headers(
    headers: &mut HeaderMap,
    host: Option<HeaderValue>,
    client_ip: Option<&str>,
) {
    if let Some(ip) = client_ip {
        let mut chain: Vec<u8> = Vec::new();
        for value in headers.get_all(&X_FORWARDED_FOR) {
            // Skip empty values so that they do not leave a leading ", " in the chain.
            let value = value.as_bytes().trim_ascii();
            if value.is_empty() {
                continue;
            }
            if !chain.is_empty() {
                chain.extend_from_slice(b", ");
            }
            chain.extend_from_slice(value);
        }
        if !chain.is_empty() {
            chain.extend_from_slice(b", ");
        }
        chain.extend_from_slice(ip.as_bytes());
        // Every part was a valid header value already, so this only fails on a peer
        // address that is not one; then the incoming header is left as it was.
        if let Ok(value) = HeaderValue::from_bytes(&chain) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !headers.contains_key(&X_FORWARDED_HOST)
        && let Some(host) = host
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

async fn forward(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    let Some(location) = proxy.routes.route(req.uri().path()) else {
        return ApiError::not_found("no route for this path").into_response();
    };
    let Some((_, base)) = proxy.bases.iter().find(|(b, _)| *b == location.backend) else {
        return ApiError::not_found("no route for this path").into_response();
    };
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri: Uri = match format!("{base}{path_and_query}").parse() {
        Ok(uri) => uri,
        Err(_) => return ApiError::bad_request("malformed request path").into_response(),
    };
    let (mut parts, body) = req.into_parts();
    let host = parts.headers.get(header::HOST).cloned();
    let client_ip = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    strip_hop_by_hop(&mut parts.headers);
    set_forwarded_headers(&mut parts.headers, host, client_ip.as_deref());
    parts.uri = uri;
    let unavailable = |error: &dyn std::fmt::Display| {
        tracing::warn!(backend = %location.backend, %error, "backend unavailable");
        let mut err = ApiError::new(
            http::StatusCode::BAD_GATEWAY,
            format!("{} is unavailable", location.backend.service),
        );
        err.errors[0].field = None;
        err.into_response()
    };
    match proxy.client.request(Request::from_parts(parts, body)).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let length = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let body = match length {
                Some(n) if n <= WHOLE_ANSWER_MAX => match body.collect().await {
                    Ok(whole) => Body::from(whole.to_bytes()),
                    Err(e) => return unavailable(&e),
                },
                _ => Body::new(body),
            };
            Response::from_parts(parts, body)
        }
        Err(e) => unavailable(&e),
    }
}
