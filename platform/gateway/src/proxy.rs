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
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use switchyard_ingress::Router as IngressRouter;
use switchyard_kit::ApiError;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::backends::Backends;

pub(crate) struct Proxy {
    routes: IngressRouter,
    backends: Backends,
    client: Client<HttpConnector, Body>,
}

impl Proxy {
    pub fn new(routes: IngressRouter, backends: Backends) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Proxy {
            routes,
            backends,
            client,
        }
    }
}

pub(crate) fn router(proxy: Arc<Proxy>) -> Router {
    // Every path is the proxy's: the service kit's own routes (/healthz, /readyz, /metrics)
    // answer for the gateway itself.
    Router::new()
        .route("/", any(forward))
        .route("/{*path}", any(forward))
        .with_state(proxy)
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
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

async fn forward(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    let Some(location) = proxy.routes.route(req.uri().path()) else {
        return ApiError::not_found("no route for this path").into_response();
    };
    let base = proxy.backends.address_of(&location.backend);
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
    if let Some(host) = host {
        parts.headers.insert("x-forwarded-host", host);
    }
    if let Some(ip) = client_ip.and_then(|ip| HeaderValue::from_str(&ip).ok()) {
        parts.headers.insert("x-forwarded-for", ip);
    }
    parts
        .headers
        .insert("x-forwarded-proto", HeaderValue::from_static("http"));
    parts.uri = uri;
    let backend = location.backend.to_string();
    match proxy.client.request(Request::from_parts(parts, body)).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => {
            tracing::warn!(%backend, error = %e, "backend unavailable");
            let mut err = ApiError::new(
                http::StatusCode::BAD_GATEWAY,
                format!("{} is unavailable", location.backend.service),
            );
            err.errors[0].field = None;
            err.into_response()
        }
    }
}
