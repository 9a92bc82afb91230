//! The bus's HTTP routes: `POST /events` and `GET /events`.

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use switchyard_events::{Envelope, EventSchema, ids};
use switchyard_kit::openapi::ErrorBody;
use switchyard_kit::{ApiError, BusSecret, FromBus, HasBusSecret, JsonBody};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::PayloadCheck;
use crate::log::{Appended, EventLog};

#[derive(Clone)]
struct BusState {
    log: EventLog,
    payload_check: Option<PayloadCheck>,
    secret: Option<BusSecret>,
}

impl HasBusSecret for BusState {
    fn bus_secret(&self) -> Option<&BusSecret> {
        self.secret.as_ref()
    }
}

/// Largest page `GET /events` serves at once.
pub const MAX_PAGE: i64 = 10_000;

/// `POST /events` and `GET /events`; with `secret`, each takes only requests that carry it.
pub fn router(
    log: EventLog,
    payload_check: Option<PayloadCheck>,
    secret: Option<BusSecret>,
) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(publish, list))
        .with_state(BusState {
            log,
            payload_check,
            secret,
        })
}

/// `{"status": "OK"}`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Stored {
    #[schema(example = "OK")]
    status: String,
}

/// Stores an event durably, then delivers it to every subscriber of its type, in order.
/// An event whose id is already stored is acknowledged and not stored again.
#[utoipa::path(post, path = "/events", tag = "events", request_body = EventSchema,
    responses(
        (status = 200, description = "Stored (or stored before, for a known id)", body = Stored),
        (status = 400, description = "Not an event, or a known type whose payload breaks the app's contract", body = ErrorBody),
        (status = 401, description = "The bus has a secret and the request does not carry it (`Authorization: Bearer`)", body = ErrorBody),
        (status = 503, description = "The log is unavailable; retry", body = ErrorBody),
    ))]
async fn publish(
    State(state): State<BusState>,
    _from_app: FromBus,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let mut event = Envelope::from_value(body).map_err(|e| match e.field() {
        Some(field) => ApiError::field(field, e.to_string()),
        None => ApiError::bad_request(e.to_string()),
    })?;
    // A known event type must carry its contract payload: a malformed one would only be
    // rejected by every subscriber later. The app's contract knows its types; the bus
    // stores any other well-formed envelope as it is.
    if let Some(check) = state.payload_check {
        check(&event).map_err(|e| {
            let message = e.to_string();
            match e.field() {
                Some(field) => ApiError::field(field, message),
                None => ApiError::bad_request(message),
            }
        })?;
    }
    tracing::trace!(event_type = %event.event_type, correlation_id = event.correlation_id.as_deref().unwrap_or(""), "event posted");
    if event.id.is_empty() {
        event.id = ids::event_id();
    }
    if event.occurred_at.is_none() {
        event.occurred_at = Some(ids::now_rfc3339());
    }
    // The bus assigns positions; a client's own `seq` is not trusted.
    event.seq = None;
    match state.log.append(event).await {
        Ok(Appended::New(_)) | Ok(Appended::Duplicate) => {
            Ok(axum::Json(serde_json::json!({"status": "OK"})).into_response())
        }
        Err(e) => {
            tracing::error!(error = %e, "append failed");
            Err(ApiError::unavailable("event log unavailable, retry later"))
        }
    }
}

/// Which part of the log to read. Kept as text so that a bad value gets the JSON error body
/// naming the field.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// Only events after this position (a non-negative integer; default 0).
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<String>,
    /// At most this many events (1 to 10000; default: all).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 10000)]
    limit: Option<String>,
}

/// The log, in order: every event stored after `after`, or a page of `limit`.
#[utoipa::path(get, path = "/events", tag = "events", params(ListParams),
    responses(
        (status = 200, description = "The events, in log order", body = Vec<EventSchema>),
        (status = 400, description = "`after` or `limit` out of range", body = ErrorBody),
        (status = 401, description = "The bus has a secret and the request does not carry it (`Authorization: Bearer`)", body = ErrorBody),
    ))]
async fn list(
    State(BusState { log, .. }): State<BusState>,
    _from_app: FromBus,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let after = match params.after.as_deref() {
        None | Some("") => 0,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::field("after", "after must be a non-negative integer"))?,
    };
    let limit = match params.limit.as_deref() {
        None | Some("") => None,
        Some(v) => Some(
            v.parse::<i64>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| {
                    ApiError::field(
                        "limit",
                        format!("limit must be an integer from 1 to {MAX_PAGE}"),
                    )
                })?,
        ),
    };
    let body = match limit {
        Some(limit) => {
            let page = log
                .bodies_after(after, limit)
                .await
                .map_err(ApiError::internal)?;
            Body::from(join(&page))
        }
        None => Body::from_stream(whole_log(log, after)),
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

fn join(page: &[(i64, String)]) -> Bytes {
    let size = page.iter().map(|(_, b)| b.len() + 1).sum::<usize>() + 2;
    let mut out = Vec::with_capacity(size);
    out.push(b'[');
    for (i, (_, body)) in page.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(body.as_bytes());
    }
    out.push(b']');
    Bytes::from(out)
}

/// The rows read for each page of [`whole_log`].
const LOG_PAGE: usize = 1000;

/// The whole log as one JSON array, streamed page by page. A page shorter than
/// [`LOG_PAGE`] is the last: the array is closed without reading again (a reader polling
/// the log's end costs one read, not two).
fn whole_log(
    log: EventLog,
    after: i64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    enum Step {
        Start(i64),
        Next(i64),
        Close,
        Done,
    }
    futures_util::stream::unfold(Step::Start(after), move |step| {
        let log = log.clone();
        async move {
            let (after, first) = match step {
                Step::Start(a) => (a, true),
                Step::Next(a) => (a, false),
                Step::Close => return Some((Ok(Bytes::from_static(b"]")), Step::Done)),
                Step::Done => return None,
            };
            match log.bodies_after(after, LOG_PAGE as i64).await {
                Ok(page) if page.is_empty() => {
                    let end = if first { "[]" } else { "]" };
                    Some((Ok(Bytes::from_static(end.as_bytes())), Step::Done))
                }
                Ok(page) => {
                    let last = page.last().map(|(s, _)| *s).unwrap_or(after);
                    let then = if page.len() < LOG_PAGE {
                        Step::Close
                    } else {
                        Step::Next(last)
                    };
                    let joined = join(&page);
                    // `join` gives "[a,b]": keep "[" only on the first page, never "]".
                    let inner = &joined[1..joined.len() - 1];
                    let mut chunk = Vec::with_capacity(inner.len() + 1);
                    chunk.push(if first { b'[' } else { b',' });
                    chunk.extend_from_slice(inner);
                    Some((Ok(Bytes::from(chunk)), then))
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading the log failed mid-stream");
                    Some((Err(std::io::Error::other("log read failed")), Step::Done))
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use switchyard_events::Envelope;
    use switchyard_kit::{Db, Shutdown};

    use super::*;

    /// The whole log, as `GET /events` streams it, parsed.
    async fn streamed(log: &EventLog, after: i64) -> Vec<serde_json::Value> {
        let chunks: Vec<Bytes> = whole_log(log.clone(), after)
            .map(|chunk| chunk.expect("chunk"))
            .collect()
            .await;
        serde_json::from_slice(&chunks.concat()).expect("one JSON array")
    }

    #[tokio::test]
    async fn the_whole_log_is_one_array_whatever_its_pages() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Db::connect(&format!("sqlite://{}/bus.db", dir.path().display()))
            .await
            .expect("db");
        db.migrate("event-bus", &[&crate::MIGRATIONS])
            .await
            .expect("migrate");
        let shutdown = Shutdown::new();
        let log = EventLog::open(db, &shutdown).await.expect("log");
        assert!(streamed(&log, 0).await.is_empty());
        // One short page, exactly one full page, a full page and a short one.
        for (total, after) in [(1, 0), (LOG_PAGE, 0), (LOG_PAGE + 7, 0), (LOG_PAGE + 7, 5)] {
            while usize::try_from(log.head()).expect("seq") < total {
                log.append(Envelope::new("T", serde_json::json!({})))
                    .await
                    .expect("append");
            }
            let events = streamed(&log, after).await;
            assert_eq!(events.len(), total - usize::try_from(after).expect("after"));
        }
        shutdown.trigger();
    }
}
