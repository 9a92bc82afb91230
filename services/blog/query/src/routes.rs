//! `GET /posts` and `GET /posts/stream`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use switchyard_blog_contract::http::PostWithComments;
use switchyard_kit::ApiError;
use switchyard_kit::openapi::ErrorBody;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::read_model::ReadModel;

#[derive(Clone)]
struct RouteState {
    model: ReadModel,
    stop: CancellationToken,
}

pub(crate) fn router(model: ReadModel, stop: CancellationToken) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(posts))
        .routes(routes!(stream))
        .with_state(RouteState { model, stop })
}

/// Every post with its comments, by post id: the read model built from the events.
#[utoipa::path(get, path = "/posts", tag = "query",
    responses(
        (status = 200, description = "Every post with its comments, keyed by post id", body = HashMap<String, PostWithComments>),
        (status = 503, description = "The read model's database is unavailable", body = ErrorBody),
    ))]
async fn posts(State(state): State<RouteState>) -> Result<Response, ApiError> {
    let body = state.model.posts_json().await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A snapshot at connection and after each change; ends when the service shuts down.
#[utoipa::path(get, path = "/posts/stream", tag = "query",
    responses((status = 200, description = "Server-sent events: `snapshot` events whose data is the body of `GET /posts`, \
        one at connection and one after each change; the stream stays open", content_type = "text/event-stream", body = String)))]
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
