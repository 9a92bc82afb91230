//! The trace context of the work in progress: a request's (from its `traceparent` header,
//! or a new trace), or an event's (from its envelope). Events published meanwhile carry
//! it, so the trace follows the work across services and buses.

use std::future::Future;

pub use switchyard_events::{TRACEPARENT, TraceContext};

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// The trace context of the current task, if it runs inside [`scope`].
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|context| *context).ok()
}

/// Runs `work` with `context` as the current trace context.
pub async fn scope<F: Future>(context: TraceContext, work: F) -> F::Output {
    CURRENT.scope(context, work).await
}

/// The parent a request names in its `traceparent` header, if a valid one (anything
/// else is ignored: the request starts a trace of its own).
pub fn parent_of_request(headers: &http::HeaderMap) -> Option<TraceContext> {
    headers
        .get(TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .and_then(TraceContext::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_current_context_is_the_scope_s() {
        assert_eq!(current(), None);
        let ctx = TraceContext::generate();
        assert_eq!(scope(ctx, async { current() }).await, Some(ctx));
        let mut headers = http::HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            http::HeaderValue::from_str(&ctx.header()).expect("header"),
        );
        assert_eq!(parent_of_request(&headers), Some(ctx));
        headers.insert(TRACEPARENT, http::HeaderValue::from_static("junk"));
        assert_eq!(parent_of_request(&headers), None);
    }
}
