//! `GET /posts` and `GET /posts/stream`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{Stream, StreamExt};
use switchyard_kit::ApiError;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;

use crate::read_model::ReadModel;

#[derive(Clone)]
struct RouteState {
    model: ReadModel,
    stop: CancellationToken,
}

pub(crate) fn router(model: ReadModel, stop: CancellationToken) -> Router {
    Router::new()
        .route("/posts", get(posts))
        .route("/posts/stream", get(stream))
        .with_state(RouteState { model, stop })
}

async fn posts(State(state): State<RouteState>) -> Result<Response, ApiError> {
    let body = state.model.posts_json().await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A snapshot at connection and after each change; ends when the service shuts down.
async fn stream(
    State(state): State<RouteState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let model = state.model.clone();
    let stop = state.stop.clone();
    let snapshots = WatchStream::new(model.subscribe())
        .then(move |_| {
            let model = model.clone();
            async move {
                match model.posts_json().await {
                    Ok(bytes) => Some(Ok(Event::default()
                        .event("snapshot")
                        .data(String::from_utf8_lossy(&bytes)))),
                    Err(e) => {
                        tracing::warn!(error = %e, "snapshot failed");
                        None
                    }
                }
            }
        })
        .filter_map(std::future::ready)
        .take_until(async move { stop.cancelled().await });
    Sse::new(snapshots).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
