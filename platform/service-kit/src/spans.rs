//! The spans of the event path: a request, a commit, a publish, a delivery and a
//! consumer's transaction. Each is a position in its trace ([`TraceContext`]): the ids
//! events carry and logs show. With export on ([`crate::otel`]) the span is the SDK's, so
//! those ids are the exported span's and a consumer's span hangs under the one that
//! published its event; off, a span is a fresh id and nothing else.

use std::borrow::Cow;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue, Value};

pub use switchyard_events::TraceContext;

/// What a span stands for, in OpenTelemetry's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A request this service answers.
    Server,
    /// A call this service makes (the HTTP bus delivering to a subscriber).
    Client,
    /// An event leaving for the bus.
    Producer,
    /// An event received and applied.
    Consumer,
    /// Work inside the service (a commit).
    Internal,
}

impl From<Kind> for SpanKind {
    fn from(kind: Kind) -> SpanKind {
        match kind {
            Kind::Server => SpanKind::Server,
            Kind::Client => SpanKind::Client,
            Kind::Producer => SpanKind::Producer,
            Kind::Consumer => SpanKind::Consumer,
            Kind::Internal => SpanKind::Internal,
        }
    }
}

/// One span, ended when dropped.
pub struct Span {
    context: TraceContext,
    exported: Option<opentelemetry_sdk::trace::Span>,
}

impl Span {
    /// Starts a span under `parent` (a new trace without one). `name` is called only when
    /// the span is exported, so building it costs nothing when export is off.
    pub fn start<N>(name: impl FnOnce() -> N, kind: Kind, parent: Option<TraceContext>) -> Span
    where
        N: Into<Cow<'static, str>>,
    {
        let Some(tracer) = crate::otel::tracer() else {
            return Span {
                context: parent.map_or_else(TraceContext::generate, |p| p.child()),
                exported: None,
            };
        };
        let parent_cx = match parent {
            Some(p) => Context::new().with_remote_span_context(span_context(p)),
            None => Context::new(),
        };
        let span = tracer
            .span_builder(name())
            .with_kind(kind.into())
            .start_with_context(tracer, &parent_cx);
        let sc = span.span_context();
        let context = TraceContext::from_parts(
            u128::from_be_bytes(sc.trace_id().to_bytes()),
            u64::from_be_bytes(sc.span_id().to_bytes()),
            sc.is_sampled(),
        )
        // The SDK hands out an empty context only once shut down: keep the trace going.
        .unwrap_or_else(|| parent.map_or_else(TraceContext::generate, |p| p.child()));
        Span {
            context,
            exported: Some(span),
        }
    }

    /// A span that is not exported, and tells the work under it not to export either
    /// (its trace is not sampled): under `parent` if given, else the first of a trace.
    pub fn unsampled(parent: Option<TraceContext>) -> Span {
        let context = parent.map_or_else(TraceContext::generate, |p| p.child());
        Span {
            context: TraceContext::from_parts(
                context.trace_id_number(),
                context.span_id_number(),
                false,
            )
            .unwrap_or(context),
            exported: None,
        }
    }

    /// Its position in the trace: what the work under it, and the events it publishes,
    /// name as their parent.
    pub fn context(&self) -> TraceContext {
        self.context
    }

    /// Whether it is exported (worth describing).
    pub fn is_exported(&self) -> bool {
        self.exported.as_ref().is_some_and(|s| s.is_recording())
    }

    /// Sets an attribute (nothing when the span is not exported).
    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        if let Some(span) = self.exported.as_mut() {
            span.set_attribute(KeyValue::new(key, value));
        }
    }

    /// Marks the span failed, with why.
    pub fn fail(&mut self, why: impl Into<Cow<'static, str>>) {
        if let Some(span) = self.exported.as_mut() {
            span.set_status(Status::error(why));
        }
    }
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Span")
            .field("context", &self.context)
            .field("exported", &self.exported.is_some())
            .finish()
    }
}

/// `context` as the SDK's remote parent.
fn span_context(context: TraceContext) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(context.trace_id_number().to_be_bytes()),
        SpanId::from_bytes(context.span_id_number().to_be_bytes()),
        if context.sampled() {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        },
        true,
        TraceState::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_export_a_span_is_a_child_of_its_parent() {
        let parent = TraceContext::generate();
        let mut span = Span::start(|| "apply", Kind::Consumer, Some(parent));
        span.set("ignored", "nothing is kept");
        assert!(!span.is_exported());
        assert_eq!(span.context().trace_id(), parent.trace_id());
        assert_ne!(span.context().span_id(), parent.span_id());
        let root = Span::start(|| "request", Kind::Server, None);
        assert_ne!(root.context().trace_id(), parent.trace_id());
    }
}
