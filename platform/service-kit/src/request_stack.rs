//! The per-request work every public route gets, as one tower layer: the request id (kept
//! from `x-request-id` or generated, and echoed on the answer), the request span, the
//! timeout, the JSON error body for any 4xx/5xx that is not JSON yet, and the request
//! metrics.
//!
//! Why one hand-written layer rather than a stack of `from_fn` middlewares and tower-http
//! layers: each `from_fn` clones the whole service below it and boxes two things per
//! request, and the request-id and trace layers each wrap the request again. For a small
//! answer (`GET /api/users/currentuser` is about 80 bytes) that per-request work cost more
//! than the handler; bench scenario 6 measures it against a bare axum handler.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::error::ApiError;
use crate::metrics::{Metrics, RouteLabel, RouteSeries};
use crate::spans::{Kind, Span};

pub use crate::request_id::X_REQUEST_ID;

/// See the module documentation.
#[derive(Clone)]
pub struct RequestStackLayer {
    shared: Arc<Shared>,
}

struct Shared {
    metrics: Metrics,
    timeout: Duration,
}

impl RequestStackLayer {
    pub fn new(metrics: Metrics, timeout: Duration) -> Self {
        RequestStackLayer {
            shared: Arc::new(Shared { metrics, timeout }),
        }
    }
}

impl<S> Layer<S> for RequestStackLayer {
    type Service = RequestStack<S>;

    /// Called once per route (`Router::layer` wraps each route on its own), so each route
    /// gets its own [`RouteSeries`].
    fn layer(&self, inner: S) -> RequestStack<S> {
        RequestStack {
            inner,
            shared: self.shared.clone(),
            series: Arc::new(RouteSeries::default()),
        }
    }
}

/// The service [`RequestStackLayer`] wraps a route in.
#[derive(Clone)]
pub struct RequestStack<S> {
    inner: S,
    shared: Arc<Shared>,
    series: Arc<RouteSeries>,
}

impl<S> Service<Request> for RequestStack<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        // The service that was polled ready handles this request; its clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        let series = self.series.clone();
        let request_id = crate::request_id::ensure(req.headers_mut());
        let method = req.method().clone();
        let route = req.extensions().get::<MatchedPath>().cloned();
        // The span carries the request id only: it ties every line of a request together,
        // and the span's fields are formatted for every request, logged or not. Method and
        // route pattern are on the lines that report the request's outcome (the pattern is
        // already at hand; the raw path would be one more copy per request). No `service` field
        // either: `up` prefixes each line with the service, Kubernetes labels the pod.
        // The request's span: under the caller's `traceparent`, or the first of a trace.
        // A read (GET, HEAD, OPTIONS) publishes no event, so it is in no event's journey:
        // it is exported only when its caller's trace is (a sampled `traceparent`). Reads
        // are most of the requests, and exporting each one took about a third of a small
        // read's rate on two cores (the spans' encoding, and the collector's share).
        let parent = crate::trace_context::parent_of_request(req.headers());
        let read = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
        let mut request_span = if read && !parent.is_some_and(|p| p.sampled()) {
            Span::unsampled(parent)
        } else {
            Span::start(
                || match &route {
                    Some(path) => format!("{method} {}", path.as_str()),
                    None => method.to_string(),
                },
                Kind::Server,
                parent,
            )
        };
        let trace = request_span.context();
        let span = tracing::info_span!(
            "request",
            request_id = request_id.to_str().unwrap_or(""),
            trace_id = %trace.trace_id(),
        );
        let started = Instant::now();
        let handled = inner.call(req);
        Box::pin(crate::trace_context::scope(
            trace,
            async move {
                let mut handled = std::pin::pin!(handled);
                // Most answers are ready at the first poll; the timer is armed only for
                // those that are not (arming it reaches for the runtime's timer each time).
                let first = std::future::poll_fn(|cx| Poll::Ready(handled.as_mut().poll(cx)));
                let outcome = match first.await {
                    Poll::Ready(done) => Ok(done),
                    Poll::Pending => tokio::time::timeout(shared.timeout, handled).await,
                };
                let mut response = match outcome {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => {
                        // The "request failed" line below names the method and route.
                        tracing::warn!(timeout = ?shared.timeout, "request timed out");
                        ApiError::unavailable("request timed out").into_response()
                    }
                };
                let status = response.status();
                response = json_error_body(response);
                let elapsed = started.elapsed();
                if request_span.is_exported() {
                    request_span.set("http.request.method", method.to_string());
                    if let Some(path) = &route {
                        request_span.set("http.route", path.as_str().to_string());
                    }
                    request_span.set("http.response.status_code", i64::from(status.as_u16()));
                    if status.is_server_error() {
                        request_span.fail(status.to_string());
                    }
                }
                drop(request_span);
                let route = match route {
                    Some(path) => RouteLabel::Matched(path),
                    None if status == StatusCode::NOT_FOUND => RouteLabel::Unmatched,
                    None => RouteLabel::Other,
                };
                if status.is_server_error() {
                    tracing::warn!(
                        method = %method,
                        route = route.as_str(),
                        status = status.as_u16(),
                        "request failed"
                    );
                }
                tracing::debug!(
                    method = %method,
                    route = route.as_str(),
                    status = status.as_u16(),
                    latency_us = elapsed.as_micros() as u64,
                    "finished processing request"
                );
                shared.metrics.http_request_via(
                    &series,
                    route,
                    &method,
                    status.as_u16(),
                    elapsed.as_secs_f64(),
                );
                // The request's id, also when a handler answered with another one.
                response.headers_mut().insert(X_REQUEST_ID, request_id);
                Ok(response)
            }
            .instrument(span),
        ))
    }
}

/// Turns an error answer that is not JSON (axum's own 405, 413, 415, ...) into the JSON
/// error body, keeping its status and headers; any other answer is returned as it is.
pub(crate) fn json_error_body(response: Response) -> Response {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::Router;
    use axum::body::{Body, to_bytes};
    use axum::extract::Request;
    use axum::http::{Method, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt;

    use super::X_REQUEST_ID;
    use crate::{HttpStack, Metrics, RequestId};

    fn stack(metrics: &Metrics) -> HttpStack {
        HttpStack {
            metrics: metrics.clone(),
            readiness: Vec::new(),
            details: Vec::new(),
            body_limit: 1024,
            request_timeout: Duration::from_millis(200),
        }
    }

    fn app(metrics: &Metrics) -> Router {
        stack(metrics).wrap(
            Router::new()
                .route(
                    "/things/{id}",
                    get(|RequestId(id): RequestId| async move { id }),
                )
                .route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        "late"
                    }),
                ),
        )
    }

    async fn call(
        app: Router,
        method: Method,
        uri: &str,
        id: Option<&str>,
    ) -> (StatusCode, String, String) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(id) = id {
            request = request.header(X_REQUEST_ID, id);
        }
        let response = app
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let echoed = response
            .headers()
            .get(X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, echoed, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_request_id_is_generated_seen_by_the_handler_and_echoed() {
        let metrics = Metrics::new("things");
        let (status, echoed, body) = call(app(&metrics), Method::GET, "/things/1", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "{echoed:?}");
        assert_eq!(body, echoed, "the handler saw another id");
    }

    #[tokio::test]
    async fn an_incoming_request_id_is_kept() {
        let metrics = Metrics::new("things");
        let (_, echoed, body) =
            call(app(&metrics), Method::GET, "/things/1", Some("abc-123")).await;
        assert_eq!((echoed.as_str(), body.as_str()), ("abc-123", "abc-123"));
    }

    #[tokio::test]
    async fn errors_that_are_not_json_get_the_json_body() {
        let metrics = Metrics::new("things");
        let (status, echoed, body) = call(app(&metrics), Method::DELETE, "/things/1", None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(!echoed.is_empty());
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(json["errors"][0]["message"], "method not allowed", "{body}");
        let (status, _, body) = call(app(&metrics), Method::GET, "/nowhere", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            serde_json::from_str::<serde_json::Value>(&body).is_ok(),
            "{body}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_its_timeout_gets_503() {
        let metrics = Metrics::new("things");
        let (status, _, body) = call(app(&metrics), Method::GET, "/slow", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("request timed out"), "{body}");
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_pattern_method_and_status() {
        let metrics = Metrics::new("things");
        call(app(&metrics), Method::GET, "/things/1", None).await;
        call(app(&metrics), Method::GET, "/things/2", None).await;
        call(app(&metrics), Method::GET, "/nowhere", None).await;
        let text = metrics.render();
        assert!(
            text.contains(
                "switchyard_http_requests_total{service=\"things\",route=\"/things/{id}\",method=\"GET\",status=\"200\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("route=\"unmatched\",method=\"GET\",status=\"404\"} 1"),
            "{text}"
        );
    }

    /// One router serving many requests keeps each route's series handles: the counts are
    /// the same as through the families, including requests the handles do not cover.
    #[tokio::test]
    async fn kept_series_count_like_the_families() {
        let metrics = Metrics::new("things");
        let app = app(&metrics);
        for _ in 0..3 {
            call(app.clone(), Method::GET, "/things/1", None).await;
        }
        let custom = Method::from_bytes(b"PROPFIND").expect("method");
        call(app.clone(), custom, "/things/1", None).await;
        call(app.clone(), Method::GET, "/nowhere", None).await;
        call(app.clone(), Method::GET, "/nowhere", None).await;
        let text = metrics.render();
        for line in [
            "route=\"/things/{id}\",method=\"GET\",status=\"200\"} 3",
            "route=\"/things/{id}\",method=\"other\",status=\"405\"} 1",
            "route=\"unmatched\",method=\"GET\",status=\"404\"} 2",
            "switchyard_http_request_duration_seconds_count{service=\"things\",route=\"/things/{id}\"} 4",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
