//! Prometheus metrics: HTTP requests by route and status, a latency histogram, and event
//! counters (published, delivered, retried, dead-lettered, consumed).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::MatchedPath;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// The route an HTTP request matched, as a metric label: its pattern (`/posts/{id}`), never
/// the raw path, so the number of series stays bounded.
#[derive(Clone, Debug)]
pub enum RouteLabel {
    /// The router's own matched pattern (shared with the request: no copy per request).
    Matched(MatchedPath),
    /// No route matched (the 404 fallback).
    Unmatched,
    /// Answered before routing (a rejected method, for instance).
    Other,
}

impl RouteLabel {
    pub fn as_str(&self) -> &str {
        match self {
            RouteLabel::Matched(path) => path.as_str(),
            RouteLabel::Unmatched => "unmatched",
            RouteLabel::Other => "other",
        }
    }
}

impl PartialEq for RouteLabel {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RouteLabel {}

impl std::hash::Hash for RouteLabel {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for RouteLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// Labels of the request counter. Built per request, so they hold no owned strings but
/// the route's (the method is one of the standard ones or "other").
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: RouteLabel,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    route: RouteLabel,
}

/// The standard methods by name; anything else is "other" (a label per custom method
/// would let a client create series at will).
fn method_label(method: &http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

/// Methods and statuses whose counters a [`RouteSeries`] keeps; others take the lookup.
const SERIES_METHODS: [http::Method; 5] = [
    http::Method::GET,
    http::Method::POST,
    http::Method::PUT,
    http::Method::DELETE,
    http::Method::PATCH,
];
const SERIES_STATUSES: [u16; 16] = [
    200, 201, 202, 204, 400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 500, 503,
];

/// One route's request counter and latency histogram handles, taken from the families at the
/// route's first request (see [`Metrics::http_request_via`]). The handles share their values
/// with the families, so `/metrics` shows the same series either way.
pub struct RouteSeries {
    /// The route pattern these handles belong to, set by the first matched request.
    route: std::sync::OnceLock<Box<str>>,
    latency: std::sync::OnceLock<Histogram>,
    counters: [std::sync::OnceLock<Counter>; SERIES_METHODS.len() * SERIES_STATUSES.len()],
}

impl Default for RouteSeries {
    fn default() -> Self {
        RouteSeries {
            route: std::sync::OnceLock::new(),
            latency: std::sync::OnceLock::new(),
            counters: std::array::from_fn(|_| std::sync::OnceLock::new()),
        }
    }
}

impl RouteSeries {
    /// The counter slot of a request, if these handles cover it.
    fn slot(&self, route: &RouteLabel, method: &http::Method, status: u16) -> Option<usize> {
        let RouteLabel::Matched(path) = route else {
            return None;
        };
        if **self.route.get_or_init(|| path.as_str().into()) != *path.as_str() {
            return None;
        }
        let m = SERIES_METHODS.iter().position(|known| known == method)?;
        let s = SERIES_STATUSES.iter().position(|known| *known == status)?;
        Some(m * SERIES_STATUSES.len() + s)
    }
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// A service's metrics (one registry per service instance). Cheap to clone: one shared
/// allocation, as request handlers' states are cloned per request.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Families>,
}

struct Families {
    registry: Registry,
    http_requests: Family<RequestLabels, Counter>,
    http_latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    events_published: Family<Labels, Counter>,
    events_delivered: Family<Labels, Counter>,
    events_retried: Family<Labels, Counter>,
    events_dead_lettered: Family<Labels, Counter>,
    events_consumed: Family<Labels, Counter>,
    delivery_latency: Family<Labels, Histogram, fn() -> Histogram>,
    outbox_pending: Gauge,
    outbox_refused: Family<Labels, Counter>,
    bus_up: Gauge,
    events_parked: Family<Labels, Gauge>,
    jobs_skipped: Family<Labels, Counter>,
    alarms: Family<Labels, Counter>,
}

impl Metrics {
    pub fn new(service: &str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "switchyard",
            [(
                std::borrow::Cow::Borrowed("service"),
                std::borrow::Cow::Owned(service.to_string()),
            )]
            .into_iter(),
        );
        let http_requests = Family::<RequestLabels, Counter>::default();
        let http_latency =
            Family::<LatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        let events_published = Family::<Labels, Counter>::default();
        let events_delivered = Family::<Labels, Counter>::default();
        let events_retried = Family::<Labels, Counter>::default();
        let events_dead_lettered = Family::<Labels, Counter>::default();
        let events_consumed = Family::<Labels, Counter>::default();
        let delivery_latency =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            http_latency.clone(),
        );
        registry.register(
            "events_published",
            "Events handed to the bus, by type",
            events_published.clone(),
        );
        registry.register(
            "events_delivered",
            "Events delivered to a subscriber",
            events_delivered.clone(),
        );
        registry.register(
            "events_retried",
            "Delivery or publish attempts that failed and will be retried",
            events_retried.clone(),
        );
        registry.register(
            "events_dead_lettered",
            "Events a subscriber rejected permanently (4xx), set aside",
            events_dead_lettered.clone(),
        );
        registry.register(
            "events_consumed",
            "Events received by a consumer, by type and outcome",
            events_consumed.clone(),
        );
        let outbox_pending = Gauge::default();
        registry.register(
            "outbox_pending",
            "Events committed in the outbox and not yet stored by the bus",
            outbox_pending.clone(),
        );
        let outbox_refused = Family::<Labels, Counter>::default();
        registry.register(
            "outbox_refused",
            "Publishes of this service's own events that the bus refused (4xx), by type and status: an alarm (the relay retries them)",
            outbox_refused.clone(),
        );
        let events_parked = Family::<Labels, Gauge>::default();
        registry.register(
            "events_parked",
            "Events a subscriber deferred (or replayed dead letters) waiting to be delivered again, by subscriber",
            events_parked.clone(),
        );
        let jobs_skipped = Family::<Labels, Counter>::default();
        registry.register(
            "jobs_skipped",
            "Queued work dropped because the request it was for had gone (a password hash for a client that gave up), by job",
            jobs_skipped.clone(),
        );
        let alarms = Family::<Labels, Counter>::default();
        registry.register(
            "alarms",
            "Things someone must look at (a refund the payment provider refused for good), by kind",
            alarms.clone(),
        );
        let bus_up = Gauge::default();
        registry.register(
            "bus_up",
            "1 while the bus answered this service's last check, 0 while it does not (readiness does not depend on it)",
            bus_up.clone(),
        );
        registry.register(
            "event_delivery_seconds",
            "Time from append to acknowledged delivery, by subscriber",
            delivery_latency.clone(),
        );
        Metrics {
            inner: Arc::new(Families {
                registry,
                http_requests,
                http_latency,
                events_published,
                events_delivered,
                events_retried,
                events_dead_lettered,
                events_consumed,
                delivery_latency,
                outbox_pending,
                outbox_refused,
                bus_up,
                events_parked,
                jobs_skipped,
                alarms,
            }),
        }
    }

    /// The outbox's backlog, after each relay round.
    pub fn set_outbox_pending(&self, pending: i64) {
        self.inner.outbox_pending.set(pending);
    }

    /// The bus refused to store one of this service's own events.
    pub fn outbox_refused(&self, event_type: &str, status: u16) {
        self.inner
            .outbox_refused
            .get_or_create(&vec![
                ("type", event_type.to_string()),
                ("status", status.to_string()),
            ])
            .inc();
    }

    /// Something someone must look at happened.
    pub fn alarm(&self, kind: &str) {
        self.inner
            .alarms
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }

    /// A queued `job` was dropped: its request had gone.
    pub fn job_skipped(&self, job: &str) {
        self.inner
            .jobs_skipped
            .get_or_create(&vec![("job", job.to_string())])
            .inc();
    }

    /// Events parked for `target`.
    pub fn set_parked(&self, target: &str, parked: usize) {
        self.inner
            .events_parked
            .get_or_create(&vec![("subscriber", target.to_string())])
            .set(i64::try_from(parked).unwrap_or(i64::MAX));
    }

    /// Whether the bus answered the last check.
    pub fn set_bus_up(&self, up: bool) {
        self.inner.bus_up.set(i64::from(up));
    }

    /// One answered request: counted by route, method and status, timed by route.
    pub fn http_request_on(
        &self,
        route: RouteLabel,
        method: &http::Method,
        status: u16,
        seconds: f64,
    ) {
        self.request_counter(&route, method, status).inc();
        self.route_latency(route).observe(seconds);
    }

    /// The request counter of one route, method and status (a handle on the family's).
    fn request_counter(&self, route: &RouteLabel, method: &http::Method, status: u16) -> Counter {
        self.inner
            .http_requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                method: method_label(method),
                status,
            })
            .clone()
    }

    /// The latency histogram of one route (a handle on the family's).
    fn route_latency(&self, route: RouteLabel) -> Histogram {
        self.inner
            .http_latency
            .get_or_create(&LatencyLabels { route })
            .clone()
    }

    /// One answered request, through `series`: the handles of one route's series, kept
    /// after the first request so that later ones skip the families' lookups (a lock and a
    /// hash of the labels each). Requests the handles do not cover (another route, a
    /// method or status outside the usual ones) go through [`Metrics::http_request_on`].
    pub fn http_request_via(
        &self,
        series: &RouteSeries,
        route: RouteLabel,
        method: &http::Method,
        status: u16,
        seconds: f64,
    ) {
        let slot = series.slot(&route, method, status);
        let Some(slot) = slot else {
            return self.http_request_on(route, method, status, seconds);
        };
        series.counters[slot]
            .get_or_init(|| self.request_counter(&route, method, status))
            .inc();
        series
            .latency
            .get_or_init(|| self.route_latency(route))
            .observe(seconds);
    }

    pub fn event_published(&self, event_type: &str) {
        self.inner
            .events_published
            .get_or_create(&vec![("type", event_type.to_string())])
            .inc();
    }

    pub fn event_delivered(&self, target: &str, seconds: Option<f64>) {
        let labels = vec![("subscriber", target.to_string())];
        self.inner.events_delivered.get_or_create(&labels).inc();
        if let Some(s) = seconds {
            self.inner
                .delivery_latency
                .get_or_create(&labels)
                .observe(s);
        }
    }

    pub fn event_retried(&self, target: &str) {
        self.inner
            .events_retried
            .get_or_create(&vec![("target", target.to_string())])
            .inc();
    }

    pub fn event_dead_lettered(&self, target: &str) {
        self.inner
            .events_dead_lettered
            .get_or_create(&vec![("subscriber", target.to_string())])
            .inc();
    }

    pub fn event_consumed(&self, event_type: &str, outcome: &'static str) {
        self.inner
            .events_consumed
            .get_or_create(&vec![
                ("type", event_type.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.inner.registry).is_err() {
            tracing::error!("could not encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::new("posts");
        // Route patterns as labels are tested through a router in `request_stack`.
        m.http_request_on(RouteLabel::Other, &http::Method::GET, 200, 0.001);
        m.http_request_on(
            RouteLabel::Unmatched,
            &http::Method::from_bytes(b"BREW").expect("method"),
            404,
            0.001,
        );
        m.event_published("PostCreated");
        let text = m.render();
        assert!(text.contains("switchyard_http_requests_total{"), "{text}");
        assert!(text.contains("service=\"posts\""), "{text}");
        assert!(
            text.contains("route=\"other\",method=\"GET\",status=\"200\""),
            "{text}"
        );
        assert!(
            text.contains("route=\"unmatched\",method=\"other\",status=\"404\""),
            "{text}"
        );
        assert!(
            text.contains("switchyard_events_published_total{"),
            "{text}"
        );
        assert!(
            text.contains("switchyard_http_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
