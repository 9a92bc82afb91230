//! Waiting on a condition with a deadline, never a fixed sleep.

use std::future::Future;
use std::time::Duration;

/// Default deadline for conditions.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Waits until `check` gives `Some`, failing the test after [`DEADLINE`] with `what` in the
/// message.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match switchyard_kit::wait::until(what, DEADLINE, check).await {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}
