//! Spans across the services: `up` with the standard `OTEL_*` variables pointing at an
//! OTLP receiver of the test's own, a purchase (`POST /api/orders`) and a blog comment's
//! three hops each come back as one trace, every span hanging under the request's, with
//! spans from every service the events reached. Embedded (SQLite, the HTTP bus, OTLP/JSON)
//! and at scale (PostgreSQL, NATS, OTLP/protobuf).

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use support::backend::{Backend, Resources};
use support::http::Client;
use support::shop;
use support::up::{Up, free_offset};
use switchyard_otlp_receiver::{SpanRecord, SpanStore};

/// How long the spans of one request may take to arrive (the services batch them every
/// 100 ms here).
const SPANS_DEADLINE: Duration = Duration::from_secs(30);

/// An OTLP receiver on a port of its own.
struct Collector {
    store: Arc<SpanStore>,
    endpoint: String,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let store = Arc::new(SpanStore::new(100_000));
        let task = tokio::spawn(switchyard_otlp_receiver::serve(listener, store.clone()));
        Collector {
            store,
            endpoint,
            task,
        }
    }

    /// The variables that send a service's spans here, in `protocol`.
    fn env(&self, protocol: &str) -> Vec<(&'static str, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint.clone()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_string()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
        ]
    }

    /// Waits until the trace has what `complete` wants and every span of it hangs under
    /// `root_parent` (the caller's span) through spans of the trace; fails with the trace.
    async fn trace_until(
        &self,
        trace_id: &str,
        root_parent: &str,
        complete: impl Fn(&[SpanRecord]) -> bool,
    ) -> Vec<SpanRecord> {
        let started = Instant::now();
        loop {
            let spans = self.store.trace(trace_id);
            if complete(&spans) && connected(&spans, root_parent) {
                return spans;
            }
            if started.elapsed() > SPANS_DEADLINE {
                panic!(
                    "the trace {trace_id} is incomplete or broken after {SPANS_DEADLINE:?}:\n{}",
                    describe(&spans)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every span's parent is a span of the trace, or the caller's.
fn connected(spans: &[SpanRecord], root_parent: &str) -> bool {
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    spans.iter().all(|s| {
        s.parent_span_id
            .as_deref()
            .is_some_and(|p| p == root_parent || ids.contains(p))
    })
}

fn describe(spans: &[SpanRecord]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "  {:<12} {:<40} {} <- {}",
                s.service,
                s.name,
                s.span_id,
                s.parent_span_id.as_deref().unwrap_or("-")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The services that have a span named `name` in `spans`.
fn services_with(spans: &[SpanRecord], name: &str) -> BTreeSet<String> {
    spans
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.service.clone())
        .collect()
}

fn has(spans: &[SpanRecord], service: &str, name: &str) -> bool {
    spans.iter().any(|s| s.service == service && s.name == name)
}

/// A caller's `traceparent`: a trace id the test knows, and the caller's span id.
fn caller() -> (String, String, String) {
    let trace = format!("{:032x}", uuid::Uuid::new_v4().as_u128());
    let span = "00f067aa0ba902b7".to_string();
    let header = format!("00-{trace}-{span}-01");
    (trace, span, header)
}

/// `up <app>` on `backend`, exporting to `collector`.
async fn up_exporting(
    app: &str,
    backend: Backend,
    collector: &Collector,
    dir: &std::path::Path,
    resources: &Option<Resources>,
) -> Up {
    let (protocol, extra) = match (backend, resources) {
        (Backend::Production, Some(resources)) => (
            "http/protobuf",
            shop::production_up_args(app, resources).await,
        ),
        _ => ("http/json", Vec::new()),
    };
    let env = collector.env(protocol);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let offset = free_offset();
    let gateway = shop::port_of(app, switchyard_registry::Kind::Gateway, offset);
    Up::start_app(app, dir, offset, gateway, &extra, &env)
}

async fn a_purchase_is_one_trace_across_the_ticketing_services(backend: Backend) {
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let resources = (backend == Backend::Production).then(Resources::new);
    let up = up_exporting("ticketing", backend, &collector, dir.path(), &resources).await;
    let c = Client::default();
    let base = up.url();
    let cookie = shop::signed_up(&c, &base, "traced@test.com").await;
    let ticket_id = shop::ticket_for_sale(&c, &base, &cookie, "traced").await;
    // Reads are in no event's journey: one is exported only under a caller's sampled trace.
    assert_eq!(c.get(&format!("{base}/api/tickets")).await.status, 200);
    let (read_trace, read_caller, read_traceparent) = caller();
    let read = c
        .with_headers(
            Method::GET,
            &format!("{base}/api/tickets"),
            None,
            None,
            &[("traceparent", read_traceparent.as_str())],
        )
        .await;
    assert_eq!(read.status, 200);
    collector
        .trace_until(&read_trace, &read_caller, |spans| {
            has(spans, "tickets", "GET /api/tickets")
        })
        .await;
    let (trace, caller_span, traceparent) = caller();
    let order = shop::order(
        &c,
        &base,
        &cookie,
        &ticket_id,
        &[("traceparent", traceparent.as_str())],
    )
    .await;
    assert_eq!(order["status"], "created");
    let spans = collector
        .trace_until(&trace, &caller_span, |spans| {
            let applied = services_with(spans, "apply order:created");
            ["tickets", "expiration", "payments"]
                .iter()
                .all(|s| applied.contains(*s))
                && has(spans, "orders", "POST /api/orders")
                && has(spans, "orders", "publish order:created")
                && has(spans, "tickets", "publish ticket:updated")
                && has(spans, "orders", "apply ticket:updated")
        })
        .await;
    eprintln!("the purchase's trace:\n{}", describe(&spans));
    // The request is the caller's child; each consumer's work under a delivery of it.
    // (Tries before tickets' replica reached orders were answered 404, in the same trace.)
    let request = spans
        .iter()
        .find(|s| s.name == "POST /api/orders" && s.attributes["http.response.status_code"] == 201)
        .expect("the placing request's span");
    assert_eq!(
        request.parent_span_id.as_deref(),
        Some(caller_span.as_str())
    );
    let by_id: BTreeMap<&str, &SpanRecord> =
        spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    for apply in spans.iter().filter(|s| s.name == "apply order:created") {
        let parent = apply
            .parent_span_id
            .as_deref()
            .and_then(|p| by_id.get(p))
            .expect("a parent in the trace");
        assert!(
            parent.name.starts_with("deliver order:created") || parent.name == "POST /events",
            "{} applied order:created under {}:\n{}",
            apply.service,
            parent.name,
            describe(&spans)
        );
    }
    assert!(
        spans
            .iter()
            .any(|s| s.name == "commit" && s.service == "orders"),
        "orders' commit:\n{}",
        describe(&spans)
    );
    // The untraced read came before everything the collector has since received, and was
    // never exported: the traced one is the only `GET /api/tickets` of tickets.
    let reads = collector
        .store
        .name_counts()
        .into_iter()
        .find(|(service, name, _)| service == "tickets" && name == "GET /api/tickets")
        .map_or(0, |(_, _, n)| n);
    assert_eq!(reads, 1, "tickets' GET /api/tickets spans");
    drop(up);
    if let Some(mut r) = resources {
        r.cleanup().await;
    }
}

async fn a_comment_s_three_hops_are_one_trace(backend: Backend) {
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let resources = (backend == Backend::Production).then(Resources::new);
    let up = up_exporting("blog", backend, &collector, dir.path(), &resources).await;
    let c = Client::default();
    let post = c
        .post_json(
            &format!("{}/posts/create", up.url()),
            &json!({"title": "traced"}),
        )
        .await;
    assert_eq!(post.status, 201);
    let id = post.json()["id"].as_str().expect("id").to_string();
    let (trace, caller_span, traceparent) = caller();
    let a = c
        .with_headers(
            Method::POST,
            &format!("{}/posts/{id}/comments", up.url()),
            None,
            Some(&json!({"content": "traced"})),
            &[("traceparent", traceparent.as_str())],
        )
        .await;
    assert_eq!(a.status, 201);
    // comments → moderation → comments → query (and the others that take the events).
    collector
        .trace_until(&trace, &caller_span, |spans| {
            has(spans, "comments", "POST /posts/{id}/comments")
                && has(spans, "moderation", "apply CommentCreated")
                && has(spans, "moderation", "publish CommentModerated")
                && has(spans, "comments", "apply CommentModerated")
                && has(spans, "comments", "publish CommentUpdated")
                && has(spans, "query", "apply CommentUpdated")
        })
        .await;
    drop(up);
    if let Some(mut r) = resources {
        r.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_is_one_trace_embedded() {
    a_purchase_is_one_trace_across_the_ticketing_services(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_is_one_trace_on_postgres_and_nats() {
    if !Backend::Production.enabled() {
        return;
    }
    a_purchase_is_one_trace_across_the_ticketing_services(Backend::Production).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_is_one_trace_embedded() {
    a_comment_s_three_hops_are_one_trace(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_is_one_trace_on_postgres_and_nats() {
    if !Backend::Production.enabled() {
        return;
    }
    a_comment_s_three_hops_are_one_trace(Backend::Production).await;
}
