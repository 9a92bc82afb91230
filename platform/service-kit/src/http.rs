//! The HTTP stack every service is wrapped in: request ids, request spans, metrics, body
//! limit, timeout, and JSON errors for every 4xx/5xx (unknown routes and methods included).
//!
//! The operational endpoints (`/healthz`, `/readyz`, `/metrics`) are a router of their own
//! ([`HttpStack::ops_router`]), served on the ops listener (`OPS_PORT`): an Ingress
//! catch-all such as the client's `/?(.*)` can then never make them public, and probes and
//! scrapes reach them on a port no Service routes from outside.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::future::BoxFuture;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::request_stack::{RequestStackLayer, X_REQUEST_ID, json_error_body};

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
    // The request stack sets the header when the request came without one.
    parts
        .headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Builds the router around a service's own routes.
#[derive(Clone)]
pub struct HttpStack {
    pub metrics: Metrics,
    pub readiness: Vec<Arc<dyn ReadinessCheck>>,
    /// Checks `/readyz` reports under `details` without letting them decide readiness
    /// (the bus: an outage of it is what the outbox is there for).
    pub details: Vec<Arc<dyn ReadinessCheck>>,
    pub body_limit: usize,
    pub request_timeout: Duration,
}

#[derive(Clone)]
struct StackState {
    metrics: Metrics,
    readiness: Arc<Vec<Arc<dyn ReadinessCheck>>>,
    details: Arc<Vec<Arc<dyn ReadinessCheck>>>,
    stopping: tokio_util::sync::CancellationToken,
}

impl HttpStack {
    pub fn new(config: &crate::CommonConfig, metrics: Metrics) -> Self {
        HttpStack {
            metrics,
            readiness: Vec::new(),
            details: Vec::new(),
            body_limit: config.body_limit,
            request_timeout: config.request_timeout,
        }
    }

    pub fn ready_when(mut self, check: Arc<dyn ReadinessCheck>) -> Self {
        self.readiness.push(check);
        self
    }

    /// Reports `check` in `/readyz`'s `details` without making readiness depend on it.
    pub fn report(mut self, check: Arc<dyn ReadinessCheck>) -> Self {
        self.details.push(check);
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
            details: Arc::new(self.details.clone()),
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

    /// Wraps the service's routes (the public listener's router): unknown routes get the
    /// JSON 404, bodies are limited, and every request goes through the
    /// [`RequestStackLayer`] (request id, span, timeout, JSON errors, metrics).
    ///
    /// The two are one layer: each `Router::layer` boxes every route again, and each box is
    /// cloned and allocated once more per request.
    pub fn wrap(&self, app: Router) -> Router {
        app.fallback(unknown_route).layer(
            tower::ServiceBuilder::new()
                .layer(RequestStackLayer::new(
                    self.metrics.clone(),
                    self.request_timeout,
                ))
                .layer(DefaultBodyLimit::max(self.body_limit)),
        )
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
    let (checks, ready) = run_checks(&state.readiness).await;
    if ready {
        let mut body = serde_json::json!({"status": "ready", "checks": checks});
        if !state.details.is_empty() {
            body["details"] = serde_json::Value::Object(run_checks(&state.details).await.0);
        }
        axum::Json(body).into_response()
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

/// Runs `checks` (2 s each at most); returns each outcome by name (`"ok"` or the reason)
/// and whether all passed.
async fn run_checks(
    checks: &[Arc<dyn ReadinessCheck>],
) -> (serde_json::Map<String, serde_json::Value>, bool) {
    let mut outcomes = serde_json::Map::new();
    let mut all_ok = true;
    for check in checks {
        let outcome = match tokio::time::timeout(Duration::from_secs(2), check.check()).await {
            Ok(Ok(())) => serde_json::Value::from("ok"),
            Ok(Err(e)) => {
                all_ok = false;
                serde_json::Value::from(e)
            }
            Err(_) => {
                all_ok = false;
                serde_json::Value::from("timed out")
            }
        };
        outcomes.insert(check.name().to_string(), outcome);
    }
    (outcomes, all_ok)
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

/// Turns any error response that is not JSON (axum's own 405, 413, ...) into the JSON body.
async fn json_errors(req: Request, next: Next) -> Response {
    json_error_body(next.run(req).await)
}
