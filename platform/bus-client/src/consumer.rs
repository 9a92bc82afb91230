//! The `POST /events` endpoint: the HTTP bus delivers each event there.
//!
//! Replies 200 `{}` once the handler has committed its effect (or the event was already
//! processed, or its type is not one the service consumes); 400 with the JSON error body for
//! a malformed event (the bus sets it aside, it never blocks the stream); 425 Too Early for
//! an event that cannot apply yet (a versioned update whose predecessor has not arrived: the
//! bus delivers it again shortly, without counting it as a failure); 503 for a transient
//! failure (the bus retries).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use switchyard_events::Envelope;
use switchyard_events::EventSchema;
use switchyard_kit::openapi::ErrorBody;
use switchyard_kit::{ApiError, BusSecret, FromBus, HasBusSecret, JsonBody, Metrics};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What can go wrong handling an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The event is malformed; retrying cannot help.
    #[error("malformed event: {0}")]
    Malformed(ApiError),
    /// Something failed that may work later (database busy or down).
    #[error("transient failure: {0}")]
    Transient(anyhow::Error),
    /// The event is well formed but cannot apply yet: it depends on one that has not been
    /// applied (`ticket:updated` version 3 before version 2). It is delivered again after a
    /// short delay, not counted toward the dead-letter limit and not logged as a warning; a
    /// gap that never fills ends in the dead-letter store after a bounded time.
    #[error("not yet: {0}")]
    NotYet(String),
}

impl From<sqlx::Error> for HandleError {
    fn from(err: sqlx::Error) -> Self {
        HandleError::Transient(err.into())
    }
}

/// What handling did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Applied,
    Duplicate,
    Ignored,
}

impl Handled {
    pub fn as_str(self) -> &'static str {
        match self {
            Handled::Applied => "applied",
            Handled::Duplicate => "duplicate",
            Handled::Ignored => "ignored",
        }
    }
}

/// A service's event handling, whatever the bus backend.
pub trait EventHandler: Send + Sync + 'static {
    fn handle(&self, event: Envelope) -> BoxFuture<'_, Result<Handled, HandleError>>;
}

#[derive(Clone)]
struct ConsumerState {
    handler: Arc<dyn EventHandler>,
    metrics: Metrics,
    /// When set, only a delivery carrying it is taken (the app's HTTP bus).
    secret: Option<BusSecret>,
}

impl HasBusSecret for ConsumerState {
    fn bus_secret(&self) -> Option<&BusSecret> {
        self.secret.as_ref()
    }
}

/// The `POST /events` route for `handler`, described for the service's OpenAPI document.
/// With `secret`, a delivery without it is answered 401 and changes nothing.
pub fn events_route(
    handler: Arc<dyn EventHandler>,
    metrics: Metrics,
    secret: Option<BusSecret>,
) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(receive))
        .with_state(ConsumerState {
            handler,
            metrics,
            secret,
        })
}

/// The answer to an event taken: `{}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Acknowledged {}

/// Where the HTTP bus pushes the events this service consumes, one at a time and in
/// order. An event of a type the service does not consume is acknowledged unhandled.
#[utoipa::path(
    post,
    path = "/events",
    tag = "events",
    request_body = EventSchema,
    responses(
        (status = 200, description = "Applied, applied before, or not consumed here", body = Acknowledged),
        (status = 400, description = "Not an event, or its payload breaks the app's contract (the bus dead-letters it)", body = ErrorBody),
        (status = 401, description = "Not from the app's bus: the request lacks the bus's secret (`Authorization: Bearer`)", body = ErrorBody),
        (status = 425, description = "Not yet: an earlier version of its entity is missing (the bus delivers it again)", body = ErrorBody),
        (status = 503, description = "Could not be processed now (the bus retries)", body = ErrorBody),
    )
)]
async fn receive(
    State(state): State<ConsumerState>,
    _from_bus: FromBus,
    JsonBody(body): JsonBody,
) -> Response {
    let mut event = match Envelope::from_value(body.clone()) {
        Ok(event) => event,
        Err(e) => {
            let err = match e.field() {
                Some(field) => ApiError::field(field, e.to_string()),
                None => ApiError::bad_request(e.to_string()),
            };
            return err.into_response();
        }
    };
    if event.id.is_empty() {
        // Sent without an id (as the original services do): derive one from the content,
        // so the same event posted twice is still recognised.
        event.id = derived_id(&body);
    }
    let event_type = event.event_type.clone();
    match state.handler.handle(event).await {
        Ok(outcome) => {
            state.metrics.event_consumed(&event_type, outcome.as_str());
            axum::Json(serde_json::json!({})).into_response()
        }
        Err(HandleError::Malformed(err)) => {
            state.metrics.event_consumed(&event_type, "malformed");
            tracing::warn!(%event_type, error = %err, "rejected a malformed event");
            err.into_response()
        }
        Err(HandleError::NotYet(why)) => {
            state.metrics.event_consumed(&event_type, "deferred");
            tracing::debug!(%event_type, %why, "event deferred, the bus delivers it again");
            ApiError::new(axum::http::StatusCode::TOO_EARLY, format!("not yet: {why}"))
                .into_response()
        }
        Err(HandleError::Transient(e)) => {
            state.metrics.event_consumed(&event_type, "failed");
            tracing::warn!(%event_type, error = %e, "event handling failed, the bus will retry");
            ApiError::unavailable("event could not be processed now, retry later").into_response()
        }
    }
}

/// An id derived from an event's content, for events sent without one.
pub(crate) fn derived_id(body: &serde_json::Value) -> String {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    format!(
        "derived-{}",
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &bytes)
    )
}

/// Turns a payload error into the 400 a malformed event gets.
pub fn malformed(err: switchyard_events::PayloadError) -> HandleError {
    let message = err.to_string();
    HandleError::Malformed(match err.field() {
        Some(field) => ApiError::field(field, message),
        None => ApiError::bad_request(message),
    })
}
