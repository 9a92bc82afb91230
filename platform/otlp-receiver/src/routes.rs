//! `POST /v1/traces` (OTLP/HTTP, either encoding) and `GET /v1/traces/{trace_id}`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::decode::{Encoding, decode};
use crate::store::SpanStore;

/// The largest export request taken (a batch of the SDK's default 512 spans is far less).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Export requests decoded at once; more wait (each can decode to many spans).
pub const MAX_CONCURRENT_EXPORTS: usize = 4;

/// The receiver's routes over `store`.
pub fn router(store: Arc<SpanStore>) -> Router {
    Router::new()
        .route(
            "/v1/traces",
            post(export).layer(tower::limit::ConcurrencyLimitLayer::new(
                MAX_CONCURRENT_EXPORTS,
            )),
        )
        .route("/v1/traces/{trace_id}", get(trace))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(store)
}

/// Serves the routes on `listener` until the task is dropped or the server fails.
pub async fn serve(listener: TcpListener, store: Arc<SpanStore>) -> anyhow::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    tracing::debug!(%addr, "OTLP receiver listening");
    axum::serve(listener, router(store)).await?;
    Ok(())
}

async fn export(State(store): State<Arc<SpanStore>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(encoding) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(Encoding::of_content_type)
    else {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "OTLP over HTTP is application/x-protobuf or application/json",
        )
            .into_response();
    };
    match decode(&body, encoding) {
        Ok(spans) => {
            store.add(spans);
            // An empty ExportTraceServiceResponse: every span accepted.
            match encoding {
                Encoding::Protobuf => (
                    [(header::CONTENT_TYPE, "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
                    .into_response(),
                Encoding::Json => (
                    [(header::CONTENT_TYPE, "application/json")],
                    "{}".to_string(),
                )
                    .into_response(),
            }
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn trace(State(store): State<Arc<SpanStore>>, Path(trace_id): Path<String>) -> Response {
    let valid = trace_id.len() == 32
        && trace_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !valid {
        return (
            StatusCode::BAD_REQUEST,
            "a trace id is 32 lower-case hex digits",
        )
            .into_response();
    }
    axum::Json(store.trace(&trace_id)).into_response()
}
