//! The HTTP stack every service is wrapped in: request ids, request spans, metrics, body
//! limit, timeout, and JSON errors for every 4xx/5xx (unknown routes and methods included).
//!
//! The operational endpoints (`/healthz`, `/readyz`, `/metrics`) are a router of their own
//! ([`HttpStack::ops_router`]), served on the ops listener (`OPS_PORT`): an Ingress
//! catch-all such as the client's `/?(.*)` can then never make them public, and probes and
//! scrapes reach them on a port no Service routes from outside.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::future::BoxFuture;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId as TowerRequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// Something `/readyz` checks: the database, the bus.
pub trait ReadinessCheck: Send + Sync {
    fn name(&self) -> &'static str;
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

impl ReadinessCheck for crate::db::Db {
    fn name(&self) -> &'static str {
        "database"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.ping().await.map_err(|e| e.to_string()) })
    }
}

/// The request id of the current request (`x-request-id`, generated when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestId(request_id_of(parts)))
    }
}

fn request_id_of(parts: &Parts) -> String {
    parts
        .extensions
        .get::<TowerRequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .or_else(|| {
            parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
        })
        .unwrap_or("")
        .to_string()
}

/// Builds the router around a service's own routes.
#[derive(Clone)]
pub struct HttpStack {
    pub service: String,
    pub metrics: Metrics,
    pub readiness: Vec<Arc<dyn ReadinessCheck>>,
    pub body_limit: usize,
    pub request_timeout: Duration,
}

#[derive(Clone)]
struct StackState {
    metrics: Metrics,
    readiness: Arc<Vec<Arc<dyn ReadinessCheck>>>,
    stopping: tokio_util::sync::CancellationToken,
}

impl HttpStack {
    pub fn new(config: &crate::CommonConfig, metrics: Metrics) -> Self {
        HttpStack {
            service: config.service.clone(),
            metrics,
            readiness: Vec::new(),
            body_limit: config.body_limit,
            request_timeout: config.request_timeout,
        }
    }

    pub fn ready_when(mut self, check: Arc<dyn ReadinessCheck>) -> Self {
        self.readiness.push(check);
        self
    }

    /// The operational endpoints: `/healthz` (alive), `/readyz` (every readiness check
    /// passes, and the service is not shutting down), `/metrics` (Prometheus), plus JSON
    /// errors for anything else.
    pub fn ops_router(&self, shutdown: &crate::Shutdown) -> Router {
        self.ops_router_with(shutdown, Router::new())
    }

    /// [`HttpStack::ops_router`] with extra operational routes (an OpenAPI document).
    pub fn ops_router_with(&self, shutdown: &crate::Shutdown, extra: Router) -> Router {
        let state = StackState {
            metrics: self.metrics.clone(),
            readiness: Arc::new(self.readiness.clone()),
            stopping: shutdown.stop_token(),
        };
        Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(state)
            .merge(extra)
            .fallback(unknown_route)
            .layer(middleware::from_fn(json_errors))
    }

    /// Wraps the service's routes (the public listener's router).
    pub fn wrap(&self, app: Router) -> Router {
        let metrics = self.metrics.clone();
        let timeout = self.request_timeout;
        let service = self.service.clone();
        app.fallback(unknown_route)
            .layer(middleware::from_fn(json_errors))
            .layer(middleware::from_fn(move |req, next| {
                with_timeout(timeout, req, next)
            }))
            .layer(DefaultBodyLimit::max(self.body_limit))
            .layer(middleware::from_fn_with_state(metrics, record_metrics))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(move |req: &Request<Body>| {
                        let request_id = req
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        tracing::info_span!(
                            "request",
                            service = %service,
                            method = %req.method(),
                            path = %req.uri().path(),
                            request_id = %request_id,
                        )
                    })
                    .on_request(())
                    .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                    .on_failure(()),
            )
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
    }
}

/// A 200 answer with a JSON body already serialised (a kept answer, for instance).
pub fn json_bytes(body: bytes::Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(state): State<StackState>) -> Response {
    if state.stopping.is_cancelled() {
        // Draining: take this replica out of rotation while in-flight requests finish.
        return ApiError::unavailable("not ready: shutting down").into_response();
    }
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    for check in state.readiness.iter() {
        let outcome = match tokio::time::timeout(Duration::from_secs(2), check.check()).await {
            Ok(Ok(())) => serde_json::Value::from("ok"),
            Ok(Err(e)) => {
                ready = false;
                serde_json::Value::from(e)
            }
            Err(_) => {
                ready = false;
                serde_json::Value::from("timed out")
            }
        };
        checks.insert(check.name().to_string(), outcome);
    }
    if ready {
        axum::Json(serde_json::json!({"status": "ready", "checks": checks})).into_response()
    } else {
        let mut err = ApiError::unavailable("not ready");
        for (name, outcome) in &checks {
            if let Some(message) = outcome.as_str().filter(|m| *m != "ok") {
                err.errors.push(crate::error::ErrorItem {
                    message: format!("{name}: {message}"),
                    field: None,
                });
            }
        }
        err.into_response()
    }
}

async fn metrics(State(state): State<StackState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn unknown_route() -> ApiError {
    ApiError::not_found("Not Found")
}

async fn record_metrics(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let response = next.run(req).await;
    let route = route.unwrap_or_else(|| {
        if response.status() == StatusCode::NOT_FOUND {
            "unmatched".to_string()
        } else {
            "other".to_string()
        }
    });
    metrics.http_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    if response.status().is_server_error() {
        tracing::warn!(status = response.status().as_u16(), "request failed");
    }
    response
}

async fn with_timeout(timeout: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(?timeout, "request timed out");
            ApiError::unavailable("request timed out").into_response()
        }
    }
}

/// Turns any error response that is not JSON (axum's own 405, 413, ...) into the JSON body.
async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed".to_string(),
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large".to_string(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported content type".to_string(),
        other => other
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase(),
    };
    let (mut parts, _) = response.into_parts();
    let body = ApiError::new(status, message).body();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
