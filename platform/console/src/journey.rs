//! One event's journey, from the spans of its trace: committed and published by its
//! service, appended by the HTTP bus, delivered to and applied by each consumer.

use serde::Serialize;
use switchyard_otlp_receiver::SpanRecord;

use crate::map::AppMap;
use crate::tap::Observed;

/// One step, with its time (wall-clock milliseconds) and length.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// `committed`, `published`, `appended`, `delivered` or `applied`.
    pub step: &'static str,
    /// The service that did it.
    pub service: String,
    /// The consumer it was for (delivered, applied).
    pub consumer: Option<String>,
    pub at_ms: f64,
    pub took_ms: f64,
    /// The consumer's outcome (`applied`, `duplicate`, `deferred`, ...), or the failure.
    pub outcome: Option<String>,
}

/// An event's journey.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Journey {
    pub event: Observed,
    pub steps: Vec<Step>,
    /// The services that consume its type and have not applied it (yet).
    pub waiting_for: Vec<String>,
}

fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

fn step(step: &'static str, span: &SpanRecord, consumer: Option<String>) -> Step {
    Step {
        step,
        service: span.service.clone(),
        consumer,
        at_ms: ms(span.start_unix_nanos),
        took_ms: ms(span.end_unix_nanos.saturating_sub(span.start_unix_nanos)),
        outcome: span.error.clone().or_else(|| {
            span.attributes
                .get("switchyard.outcome")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        }),
    }
}

/// The journey of `event` from the spans of its trace (`trace`).
pub fn of(event: &Observed, trace: &[SpanRecord], map: &AppMap) -> Journey {
    let about_it = |s: &&SpanRecord| {
        s.attributes
            .get("messaging.message.id")
            .and_then(|v| v.as_str())
            == Some(event.id.as_str())
    };
    let mut steps = Vec::new();
    let publish = trace
        .iter()
        .filter(about_it)
        .find(|s| s.name.starts_with("publish "));
    if let Some(publish) = publish {
        // The commit that stored it: the publisher's commit under the same parent, the
        // last one to end before the publish began.
        if let Some(commit) = trace
            .iter()
            .filter(|s| {
                s.name == "commit"
                    && s.service == publish.service
                    && s.parent_span_id == publish.parent_span_id
                    && s.end_unix_nanos <= publish.start_unix_nanos
            })
            .max_by_key(|s| s.end_unix_nanos)
        {
            steps.push(step("committed", commit, None));
        }
        steps.push(step("published", publish, None));
        for append in trace
            .iter()
            .filter(|s| s.parent_span_id.as_deref() == Some(publish.span_id.as_str()))
        {
            steps.push(step("appended", append, None));
        }
    }
    for span in trace.iter().filter(about_it) {
        if span.name.starts_with("deliver ") {
            let to = span
                .attributes
                .get("switchyard.subscriber")
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| span.service.clone());
            steps.push(step("delivered", span, Some(to)));
        } else if span.name.starts_with("apply ") {
            steps.push(step("applied", span, Some(span.service.clone())));
        }
    }
    steps.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
    let waiting_for = map
        .receivers_of(&event.event_type)
        .into_iter()
        .filter(|s| {
            !steps.iter().any(|st| {
                st.step == "applied"
                    && st.service == s.name
                    && matches!(st.outcome.as_deref(), Some("applied" | "duplicate"))
            })
        })
        .map(|s| s.name.clone())
        .collect();
    Journey {
        event: event.clone(),
        steps,
        waiting_for,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::map::MapService;
    use serde_json::json;
    use switchyard_otlp_receiver::SpanKind;

    fn span(
        service: &str,
        name: &str,
        id: &str,
        parent: &str,
        start: u64,
        event: Option<&str>,
    ) -> SpanRecord {
        let mut attributes = BTreeMap::new();
        if let Some(e) = event {
            attributes.insert("messaging.message.id".to_string(), json!(e));
        }
        if name.starts_with("apply ") {
            attributes.insert("switchyard.outcome".to_string(), json!("applied"));
        }
        SpanRecord {
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: Some(parent.into()),
            name: name.into(),
            kind: SpanKind::Internal,
            service: service.into(),
            start_unix_nanos: start * 1_000_000,
            end_unix_nanos: (start + 1) * 1_000_000,
            attributes,
            error: None,
        }
    }

    #[test]
    fn the_steps_of_one_event_in_time_order_and_who_has_not_applied_it() {
        let map = AppMap {
            app: "ticketing".into(),
            services: ["tickets", "payments"]
                .iter()
                .map(|n| MapService {
                    name: n.to_string(),
                    about: String::new(),
                    sends: vec![],
                    receives: vec!["order:created".into()],
                    subscriber: Some(n.to_string()),
                    durable: None,
                })
                .collect(),
        };
        let trace = vec![
            span("orders", "POST /api/orders", "r", "caller", 0, None),
            span("orders", "commit", "c", "r", 1, None),
            span("orders", "publish order:created", "p", "r", 3, Some("e1")),
            span("event-bus", "POST /events", "a", "p", 4, None),
            span(
                "event-bus",
                "deliver order:created to tickets",
                "d",
                "r",
                5,
                Some("e1"),
            ),
            span("tickets", "apply order:created", "x", "d", 6, Some("e1")),
            span(
                "tickets",
                "apply ticket:updated",
                "y",
                "d",
                7,
                Some("other"),
            ),
        ];
        let mut event = Envelope::new("order:created", json!({"id": "o"}));
        event.id = "e1".into();
        let observed = crate::tap::tests_support::observed(event);
        let journey = of(&observed, &trace, &map);
        let steps: Vec<(&str, &str)> = journey
            .steps
            .iter()
            .map(|s| (s.step, s.service.as_str()))
            .collect();
        assert_eq!(
            steps,
            [
                ("committed", "orders"),
                ("published", "orders"),
                ("appended", "event-bus"),
                ("delivered", "event-bus"),
                ("applied", "tickets"),
            ]
        );
        assert_eq!(journey.waiting_for, ["payments"]);
    }

    use switchyard_events::Envelope;
}
