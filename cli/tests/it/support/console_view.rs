//! What the tests read from a console's API: an order's event in its live log, and every
//! consumer's position.

use serde_json::Value;

use super::eventually;
use super::http::Client;

/// Waits until the console at `console` lists `order_id`'s `order:created` in its log.
pub async fn wait_for_the_order(c: &Client, console: &str, order_id: &str) {
    eventually("the order in the console's log", || async {
        let events = c
            .try_get(&format!("{console}/api/events?type=order:created"))
            .await?
            .json();
        events
            .as_array()?
            .iter()
            .any(|e| {
                e["entities"]
                    .as_array()
                    .is_some_and(|ids| ids.iter().any(|id| id == order_id))
            })
            .then_some(())
    })
    .await;
}

/// Waits until the console at `console` knows every consumer's position (none in error,
/// each past the start); its `/api/consumers` answer.
pub async fn wait_for_every_position(c: &Client, console: &str) -> Value {
    eventually("every consumer's position", || async {
        let v = c.try_get(&format!("{console}/api/consumers")).await?.json();
        let all_known = v["consumers"]
            .as_array()?
            .iter()
            .all(|c| c["error"].is_null() && c["position"].as_i64().is_some_and(|p| p > 0));
        all_known.then_some(v)
    })
    .await
}
