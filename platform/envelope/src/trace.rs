//! W3C trace context (`traceparent`), carried in every event envelope so that what a
//! consumer does belongs to the request that caused the event, across any number of hops
//! and on either bus. A service that sends none (the course's) starts a trace of its own
//! at the next hop; nothing else changes for it.

use serde_json::Value;

use crate::Envelope;

/// The envelope field, and the HTTP header, that carries it.
pub const TRACEPARENT: &str = "traceparent";

/// One position in a trace: the trace's id, the span that is the parent of what comes
/// next, and whether the trace is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    sampled: bool,
}

impl TraceContext {
    /// A new trace, sampled, with its first span.
    pub fn generate() -> TraceContext {
        let trace_id = uuid::Uuid::new_v4().as_u128();
        TraceContext {
            trace_id,
            span_id: new_span_id(),
            sampled: true,
        }
    }

    /// A new trace that is not sampled: work under it (a health probe, the console reading
    /// the log) is not exported by the parent-based samplers (the default; `always_on`
    /// would export it all the same).
    pub fn unsampled() -> TraceContext {
        TraceContext {
            sampled: false,
            ..TraceContext::generate()
        }
    }

    /// Reads a `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`, lower case). A later
    /// version is read by its first four fields, as the specification asks; version `ff`,
    /// an all-zero id and any other shape are refused.
    pub fn parse(value: &str) -> Option<TraceContext> {
        let mut parts = value.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        let rest = parts.next();
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex(version, 2) || version == "ff" || (version == "00" && rest.is_some()) {
            return None;
        }
        if !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The next span of the same trace (this one its parent).
    pub fn child(&self) -> TraceContext {
        TraceContext {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// A context from its ids as numbers (a tracing SDK's span), `None` for a zero id.
    pub fn from_parts(trace_id: u128, span_id: u64, sampled: bool) -> Option<TraceContext> {
        (trace_id != 0 && span_id != 0).then_some(TraceContext {
            trace_id,
            span_id,
            sampled,
        })
    }

    /// The context a serialised event carries, read without decoding the rest of it.
    pub fn of_json_event(body: &[u8]) -> Option<TraceContext> {
        #[derive(serde::Deserialize)]
        struct Traced<'a> {
            #[serde(borrow, default)]
            traceparent: Option<&'a str>,
        }
        serde_json::from_slice::<Traced>(body)
            .ok()?
            .traceparent
            .and_then(TraceContext::parse)
    }

    /// The trace's id as a number.
    pub fn trace_id_number(&self) -> u128 {
        self.trace_id
    }

    /// This span's id as a number.
    pub fn span_id_number(&self) -> u64 {
        self.span_id
    }

    /// Whether the trace is sampled (its `traceparent` flag).
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// The trace's id, 32 hex digits.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// This span's id, 16 hex digits.
    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// The `traceparent` value.
    pub fn header(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

fn new_span_id() -> u64 {
    // A span id is 8 random bytes, never zero.
    let bits = uuid::Uuid::new_v4().as_u64_pair().0;
    bits.max(1)
}

impl Envelope {
    /// The trace context the event carries, if a valid one.
    pub fn trace_context(&self) -> Option<TraceContext> {
        self.extra
            .get(TRACEPARENT)
            .and_then(Value::as_str)
            .and_then(TraceContext::parse)
    }

    /// The event carrying `context`.
    pub fn with_trace_context(mut self, context: TraceContext) -> Envelope {
        self.extra
            .insert(TRACEPARENT.to_string(), Value::String(context.header()));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_children_keep_the_trace() {
        let ctx = TraceContext::generate();
        assert_eq!(TraceContext::parse(&ctx.header()), Some(ctx));
        let child = ctx.child();
        assert_eq!(child.trace_id(), ctx.trace_id());
        assert_ne!(child.span_id(), ctx.span_id());
        let w3c = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceContext::parse(w3c).expect("the specification's example");
        assert_eq!(parsed.header(), w3c);
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        // A later version is read by its first fields.
        assert!(
            TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
                .is_some()
        );
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_envelope_carries_its_trace_context() {
        let ctx = TraceContext::generate();
        let env = Envelope::new("T", serde_json::json!({})).with_trace_context(ctx);
        assert_eq!(env.trace_context(), Some(ctx));
        let back = Envelope::from_slice(&env.to_bytes()).expect("envelope");
        assert_eq!(back.trace_context(), Some(ctx));
        assert_eq!(
            Envelope::new("T", serde_json::json!({})).trace_context(),
            None
        );
    }
}
