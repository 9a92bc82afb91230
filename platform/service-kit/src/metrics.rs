//! Prometheus metrics: HTTP requests by route and status, a latency histogram, and event
//! counters (published, delivered, retried, dead-lettered, consumed).

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

fn latency_histogram() -> Histogram {
    // 100 µs to about 3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// A service's metrics (one registry per service instance).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    http_requests: Family<Labels, Counter>,
    http_latency: Family<Labels, Histogram, fn() -> Histogram>,
    events_published: Family<Labels, Counter>,
    events_delivered: Family<Labels, Counter>,
    events_retried: Family<Labels, Counter>,
    events_dead_lettered: Family<Labels, Counter>,
    events_consumed: Family<Labels, Counter>,
    delivery_latency: Family<Labels, Histogram, fn() -> Histogram>,
    outbox_pending: Gauge,
    outbox_dead_lettered: Family<Labels, Counter>,
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
        let http_requests = Family::<Labels, Counter>::default();
        let http_latency =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
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
        let outbox_dead_lettered = Family::<Labels, Counter>::default();
        registry.register(
            "outbox_dead_lettered",
            "Events the bus refused (4xx), set aside in the outbox_dead_letters table, by type",
            outbox_dead_lettered.clone(),
        );
        registry.register(
            "event_delivery_seconds",
            "Time from append to acknowledged delivery, by subscriber",
            delivery_latency.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            http_requests,
            http_latency,
            events_published,
            events_delivered,
            events_retried,
            events_dead_lettered,
            events_consumed,
            delivery_latency,
            outbox_pending,
            outbox_dead_lettered,
        }
    }

    /// The outbox's backlog, after each relay round.
    pub fn set_outbox_pending(&self, pending: i64) {
        self.outbox_pending.set(pending);
    }

    pub fn outbox_dead_lettered(&self, event_type: &str) {
        self.outbox_dead_lettered
            .get_or_create(&vec![("type", event_type.to_string())])
            .inc();
    }

    pub fn http_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("method", method.to_string()),
                ("status", status.to_string()),
            ])
            .inc();
        self.http_latency
            .get_or_create(&vec![("route", route.to_string())])
            .observe(seconds);
    }

    pub fn event_published(&self, event_type: &str) {
        self.events_published
            .get_or_create(&vec![("type", event_type.to_string())])
            .inc();
    }

    pub fn event_delivered(&self, target: &str, seconds: Option<f64>) {
        let labels = vec![("subscriber", target.to_string())];
        self.events_delivered.get_or_create(&labels).inc();
        if let Some(s) = seconds {
            self.delivery_latency.get_or_create(&labels).observe(s);
        }
    }

    pub fn event_retried(&self, target: &str) {
        self.events_retried
            .get_or_create(&vec![("target", target.to_string())])
            .inc();
    }

    pub fn event_dead_lettered(&self, target: &str) {
        self.events_dead_lettered
            .get_or_create(&vec![("subscriber", target.to_string())])
            .inc();
    }

    pub fn event_consumed(&self, event_type: &str, outcome: &'static str) {
        self.events_consumed
            .get_or_create(&vec![
                ("type", event_type.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
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
        m.http_request("/posts", "GET", 200, 0.001);
        m.event_published("PostCreated");
        let text = m.render();
        assert!(text.contains("switchyard_http_requests_total{"), "{text}");
        assert!(text.contains("route=\"/posts\""), "{text}");
        assert!(text.contains("service=\"posts\""), "{text}");
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
