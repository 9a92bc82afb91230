//! Consuming `order:created`: one timer per order, due at its `expiresAt`.

use futures_util::future::BoxFuture;
use switchyard_bus_client::consumer::malformed;
use switchyard_bus_client::{EventHandler, HandleError, Handled, ServiceState};
use switchyard_events::Envelope;
use switchyard_kit::ApiError;
use switchyard_kit::clock::unix_millis;
use switchyard_ticketing_contract::{ContractEvent, TicketingEvent};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::timers::Timers;

/// The events this service consumes, named by their types: the registry subscribes it to
/// these (and to nothing else), and its handler's `match` names every other event as ignored.
pub const CONSUMES: &[&str] = &[switchyard_ticketing_contract::OrderCreated::NAME];

pub(crate) struct OrderCreated {
    pub state: ServiceState,
    pub timers: Timers,
}

impl EventHandler for OrderCreated {
    fn handle(&self, event: Envelope) -> BoxFuture<'_, Result<Handled, HandleError>> {
        Box::pin(async move {
            let Some(parsed) = TicketingEvent::from_envelope(&event).map_err(malformed)? else {
                return Ok(Handled::Ignored);
            };
            // Every event of the contract is named: a new one must be decided about here.
            let (id, expires_at) = match parsed {
                TicketingEvent::OrderCreated(order) => (order.id, order.expires_at),
                TicketingEvent::TicketCreated(_)
                | TicketingEvent::TicketUpdated(_)
                | TicketingEvent::OrderCancelled(_)
                | TicketingEvent::ExpirationComplete(_)
                | TicketingEvent::PaymentCreated(_)
                | TicketingEvent::PaymentExpired(_) => return Ok(Handled::Ignored),
            };
            // Checked before the inbox records the event: a malformed one is refused, not
            // remembered as processed.
            let due_at = due_millis(&expires_at)?;
            let Some(mut change) = self.state.outbox.begin_once(&event.id).await? else {
                return Ok(Handled::Duplicate);
            };
            // A second order:created for the same order (a republished event with a new
            // id) keeps the first timer: the order's expiry was fixed when it was created.
            let stored = sqlx::query(
                "INSERT INTO expiration_timers (order_id, due_at, fired, correlation_id, created_at) VALUES ($1, $2, 0, $3, $4) ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(id.as_str())
            .bind(due_at)
            .bind(event.correlation_id.as_deref())
            .bind(unix_millis())
            .execute(&mut *change)
            .await?
            .rows_affected();
            change.commit().await?;
            if stored == 0 {
                tracing::debug!(order_id = %id, "order already has a timer, kept");
                return Ok(Handled::Ignored);
            }
            tracing::debug!(order_id = %id, due_at, "timer stored");
            // The loop may be sleeping past this timer's due time: wake it to look again.
            self.timers.wake();
            Ok(Handled::Applied)
        })
    }
}

/// `expiresAt` (ISO 8601 / RFC 3339, as `Date.toISOString()` writes it) in milliseconds
/// since the Unix epoch.
pub(crate) fn due_millis(expires_at: &str) -> Result<i64, HandleError> {
    let bad = |reason: String| {
        HandleError::Malformed(ApiError::field(
            "data.expiresAt",
            format!("expiresAt must be an RFC 3339 time: {reason}"),
        ))
    };
    let time = OffsetDateTime::parse(expires_at, &Rfc3339).map_err(|e| bad(e.to_string()))?;
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| bad("out of range".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_times_are_read_as_the_original_writes_them() {
        assert_eq!(due_millis("1970-01-01T00:00:01.500Z").ok(), Some(1500));
        assert_eq!(
            due_millis("2026-01-01T00:15:00Z").ok(),
            Some(1_767_226_500_000)
        );
        // An offset is honoured.
        assert_eq!(due_millis("1970-01-01T01:00:02+01:00").ok(), Some(2000));
        for bad in [
            "",
            "tomorrow",
            "2026-01-01",
            "2026-01-01 00:15:00",
            "2026-13-01T00:00:00Z",
        ] {
            match due_millis(bad) {
                Err(HandleError::Malformed(e)) => {
                    assert_eq!(
                        e.errors[0].field.as_deref(),
                        Some("data.expiresAt"),
                        "{bad}"
                    );
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }
}
