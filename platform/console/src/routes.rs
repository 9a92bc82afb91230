//! The console's routes: its page, its JSON API, the live log (server-sent events) and the
//! OTLP receiver the services export their spans to.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;
use switchyard_bus_client::bus::Bus;
use switchyard_kit::ApiError;
use switchyard_otlp_receiver::SpanStore;
use tokio::sync::broadcast::error::RecvError;

use crate::consumers::{self, Advisories};
use crate::journey;
use crate::map::AppMap;
use crate::tap::{Filter, Tap};

/// The header a replay must carry: a page of another origin cannot send it without a
/// preflight the console never answers, so no other site can replay through a browser.
pub const REPLAY_HEADER: &str = "x-switchyard-console";

/// Live logs open at once; one more is refused (503) until one closes.
pub const MAX_LIVE_STREAMS: usize = 64;

/// Events the live log sends first, before the new ones.
const LIVE_BACKLOG: usize = 200;
/// Most events one `GET /api/events` returns.
const MAX_LIST: usize = 1000;

#[derive(Clone)]
pub struct Console {
    pub map: Arc<AppMap>,
    pub bus: Bus,
    pub bus_ops: Option<String>,
    /// Whether replays are this console's to make (`CONSOLE_REPLAY`).
    pub replay: bool,
    pub tap: Tap,
    pub spans: Arc<SpanStore>,
    pub advisories: Advisories,
    pub http: reqwest::Client,
    /// A permit per open live log.
    pub live_streams: Arc<tokio::sync::Semaphore>,
}

/// The routes above. The page and its API answer only requests addressed to a loopback
/// name (`localhost`, `127.0.0.1`, `[::1]`: `up`, `kubectl port-forward`), so a page of
/// another site that rebinds its name to this address gets nothing; the OTLP receiver takes
/// spans from any host (the services in a cluster reach it by its Service's name).
pub fn router(console: Console) -> Router {
    let spans = console.spans.clone();
    crate::assets::routes()
        .route("/api/map", get(map))
        .route("/api/events", get(events))
        .route("/api/events/stream", get(stream))
        .route("/api/events/{id}/journey", get(journey))
        .route("/api/traces/{trace_id}", get(trace))
        .route("/api/consumers", get(consumers))
        .route("/api/consumers/{service}/dead-letters", get(dead_letters))
        .route(
            "/api/consumers/{service}/dead-letters/{id}/replay",
            post(replay),
        )
        .with_state(console)
        .layer(axum::middleware::from_fn(loopback_only))
        .merge(switchyard_otlp_receiver::router(spans))
}

/// Whether `host` (a `Host` header: name and optional port) names this machine's loopback.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Refuses a request whose `Host` is not a loopback name, or whose `Origin` (a browser's
/// cross-site request) names another host than its `Host`.
async fn loopback_only(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (host, origin) = {
        let header = |name| {
            request
                .headers()
                .get(name)
                .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        (
            header(axum::http::header::HOST),
            header(axum::http::header::ORIGIN),
        )
    };
    if !is_loopback_host(&host) {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "the console answers requests to localhost only (kubectl port-forward, or up)",
        )
        .into_response();
    }
    if !origin.is_empty() && origin.split_once("://").map(|(_, h)| h) != Some(host.as_str()) {
        return ApiError::new(StatusCode::FORBIDDEN, "a request from another origin")
            .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_are_this_console() {
        for host in [
            "localhost:8091",
            "127.0.0.1:8091",
            "[::1]:8091",
            "127.0.0.2",
            "LOCALHOST",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in ["evil.example:8091", "10.0.0.1:8091", "", "console-srv:4318"] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}

fn bus_kind(bus: &Bus) -> &'static str {
    match bus {
        Bus::Http(_) => "http",
        Bus::Nats(_) => "nats",
    }
}

/// The map with live counts: events seen per type, events applied per service and type.
async fn map(State(c): State<Console>) -> Response {
    let mut applied: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (service, name, n) in c.spans.name_counts() {
        if let Some(event_type) = name.strip_prefix("apply ") {
            *applied
                .entry(service)
                .or_default()
                .entry(event_type.to_string())
                .or_default() += n;
        }
    }
    let status = c.tap.status();
    let (spans_received, spans_dropped) = c.spans.counts();
    axum::Json(json!({
        "app": c.map.app,
        "bus": bus_kind(&c.bus),
        "services": c.map.services,
        "seen": status.per_type,
        "applied": applied,
        "tap": {"position": status.position, "kept": status.kept, "error": status.error},
        "spans": {"received": spans_received, "dropped": spans_dropped, "kept": c.spans.len()},
    }))
    .into_response()
}

#[derive(Deserialize)]
struct ListParams {
    #[serde(flatten)]
    filter: Filter,
    limit: Option<usize>,
}

/// The latest events that pass the filters, oldest first.
async fn events(State(c): State<Console>, Query(params): Query<ListParams>) -> Response {
    let limit = params.limit.unwrap_or(LIVE_BACKLOG).clamp(1, MAX_LIST);
    let recent = c.tap.recent(&params.filter.normalized(), limit);
    let recent: Vec<&crate::tap::Observed> = recent.iter().map(|e| e.as_ref()).collect();
    axum::Json(recent).into_response()
}

/// The live log: the latest events that pass the filters, then each new one.
async fn stream(
    State(c): State<Console>,
    Query(filter): Query<Filter>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let permit = c.live_streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::unavailable(format!(
            "{MAX_LIVE_STREAMS} live logs are open: close one (a tab) and try again"
        ))
    })?;
    let filter = filter.normalized();
    let live = c.tap.subscribe();
    let backlog = c.tap.recent(&filter, LIVE_BACKLOG);
    let last = backlog.last().map_or(0, |e| e.seq);
    let first = futures_util::stream::iter(backlog.into_iter().map(|e| Ok(event(&e))));
    let rest = futures_util::stream::unfold(
        // The permit lives as long as the stream.
        (live, filter, last, permit),
        |(mut live, filter, last, permit)| async move {
            loop {
                match live.recv().await {
                    Ok(e) if e.seq > last && e.matches(&filter) => {
                        let seq = e.seq;
                        return Some((Ok(event(&e)), (live, filter, seq, permit)));
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => {
                        let note = Event::default().event("lagged").data(missed.to_string());
                        return Some((Ok(note), (live, filter, last, permit)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    Ok(Sse::new(futures_util::StreamExt::chain(first, rest))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn event(e: &crate::tap::Observed) -> Event {
    Event::default()
        .id(e.seq.to_string())
        .json_data(e)
        .unwrap_or_else(|_| Event::default().comment("unserialisable event"))
}

async fn journey(State(c): State<Console>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let event = c
        .tap
        .find(&id)
        .ok_or_else(|| ApiError::not_found("no such event among those kept"))?;
    let trace = event
        .trace_id
        .as_deref()
        .map(|t| c.spans.trace(t))
        .unwrap_or_default();
    Ok(axum::Json(journey::of(&event, &trace, &c.map)).into_response())
}

async fn trace(
    State(c): State<Console>,
    Path(trace_id): Path<String>,
) -> Result<Response, ApiError> {
    let valid = trace_id.len() == 32
        && trace_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !valid {
        return Err(ApiError::field(
            "trace_id",
            "a trace id is 32 lower-case hex digits",
        ));
    }
    Ok(axum::Json(c.spans.trace(&trace_id)).into_response())
}

async fn consumers(State(c): State<Console>) -> Response {
    let views = consumers::views(&c.map.services, &c.bus, c.bus_ops.as_deref(), &c.http).await;
    axum::Json(json!({
        "bus": bus_kind(&c.bus),
        "consumers": views,
        "advisories": c.advisories.latest(),
    }))
    .into_response()
}

fn letters_of(
    c: &Console,
    service: &str,
) -> Result<switchyard_bus_client::dead_letters::DeadLetters, ApiError> {
    let s = c
        .map
        .service(service)
        .ok_or_else(|| ApiError::not_found("no such service in this app"))?;
    consumers::dead_letters(s, &c.bus, c.bus_ops.as_deref())
        .ok_or_else(|| ApiError::bad_request(format!("{service} consumes nothing")))
}

async fn dead_letters(
    State(c): State<Console>,
    Path(service): Path<String>,
) -> Result<Response, ApiError> {
    let letters = letters_of(&c, &service)?;
    let list = letters
        .list()
        .await
        .map_err(|e| ApiError::unavailable(format!("the bus: {e}")))?;
    Ok(axum::Json(list).into_response())
}

async fn replay(
    State(c): State<Console>,
    Path((service, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if headers.get(REPLAY_HEADER).is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("a replay carries the {REPLAY_HEADER} header (the console's page sends it)"),
        ));
    }
    if !c.replay {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this console only reads the bus (CONSOLE_REPLAY=false): replay as the operator, \
                 `switchyard dead-letters {service} replay {id}` with the operator's NATS user"
            ),
        ));
    }
    let letters = letters_of(&c, &service)?;
    let replayed = letters
        .replay(&id)
        .await
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    tracing::info!(%service, %id, replayed, "dead letter replay from the console");
    Ok(axum::Json(json!({"id": id, "replayed": replayed})).into_response())
}
