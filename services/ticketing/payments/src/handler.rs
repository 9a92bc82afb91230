//! The replica of orders (`order:created`, `order:cancelled`) and the expiry's verdict
//! (`expiration:complete`; see [`crate::verdict`]).
//!
//! Orders are applied in version order: `order:cancelled` applies only to the version just
//! before it. An older or equal version was applied already (a republished event with a new
//! id): ignored. A newer one, or one for an order not created here yet, cannot apply yet:
//! it is deferred ([`HandleError::NotYet`]) and the platform delivers it again shortly,
//! after the missing event.

use futures_util::future::BoxFuture;
use sqlx::Row;
use switchyard_bus_client::consumer::malformed;
use switchyard_bus_client::{EventHandler, HandleError, Handled, ServiceState};
use switchyard_events::Envelope;
use switchyard_ticketing_contract::{
    ContractEvent, ExpirationComplete, OrderCancelled, OrderCreated, OrderStatus, Price,
    TicketingEvent,
};

use crate::verdict::{self, Decision};

/// The events this service consumes, named by their types: the registry subscribes it to
/// these (and to nothing else), and its handler's `match` names every other event as ignored.
pub const CONSUMES: &[&str] = &[
    OrderCreated::NAME,
    OrderCancelled::NAME,
    ExpirationComplete::NAME,
];

pub(crate) struct Orders(pub ServiceState);

impl EventHandler for Orders {
    fn handle(&self, event: Envelope) -> BoxFuture<'_, Result<Handled, HandleError>> {
        Box::pin(async move {
            let Some(parsed) = TicketingEvent::from_envelope(&event).map_err(malformed)? else {
                return Ok(Handled::Ignored);
            };
            // Every event of the contract is named: a new one must be decided about here.
            match parsed {
                TicketingEvent::OrderCreated(order) => {
                    self.created(
                        &event,
                        order.id.as_str(),
                        order.version,
                        order.status,
                        order.user_id.as_str(),
                        order.ticket.price,
                        &order.expires_at,
                    )
                    .await
                }
                TicketingEvent::ExpirationComplete(expiry) => {
                    self.expired(&event, expiry.order_id.as_str()).await
                }
                TicketingEvent::OrderCancelled(order) => {
                    self.cancelled(&event, order.id.as_str(), order.version)
                        .await
                }
                TicketingEvent::TicketCreated(_)
                | TicketingEvent::TicketUpdated(_)
                | TicketingEvent::PaymentCreated(_)
                | TicketingEvent::PaymentExpired(_) => Ok(Handled::Ignored),
            }
        })
    }
}

impl Orders {
    #[allow(clippy::too_many_arguments)]
    async fn created(
        &self,
        event: &Envelope,
        id: &str,
        version: i64,
        status: OrderStatus,
        user_id: &str,
        price: Price,
        expires_at: &str,
    ) -> Result<Handled, HandleError> {
        let Some(mut change) = self.0.outbox.begin_once(&event.id).await? else {
            return Ok(Handled::Duplicate);
        };
        let expires_ms =
            time::OffsetDateTime::parse(expires_at, &time::format_description::well_known::Rfc3339)
                .ok()
                .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok());
        let inserted = sqlx::query(
            "INSERT INTO orders (id, version, user_id, price_cents, status, expires_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(version)
        .bind(user_id)
        .bind(price.cents())
        .bind(status.as_str())
        .bind(expires_ms)
        .execute(&mut *change)
        .await?
        .rows_affected();
        change.commit().await?;
        if inserted == 0 {
            // Created before (the same order published again under another event id).
            return Ok(Handled::Ignored);
        }
        Ok(Handled::Applied)
    }

    /// The order's time ran out: closed unpaid here unless a payment came first (or is
    /// being made: then the charge's outcome decides, and this waits for it).
    async fn expired(&self, event: &Envelope, order_id: &str) -> Result<Handled, HandleError> {
        let Some(mut change) = self.0.outbox.begin_once(&event.id).await? else {
            return Ok(Handled::Duplicate);
        };
        let correlation = event
            .correlation_id
            .clone()
            .or_else(|| Some(event.id.clone()));
        let decision =
            verdict::decide_expired(&mut change, self.0.db.dialect(), order_id, correlation)
                .await?;
        match decision {
            Decision::Expired => {
                change.commit().await?;
                tracing::info!(%order_id, "order expired unpaid");
                Ok(Handled::Applied)
            }
            Decision::Paid | Decision::Closed => {
                change.commit().await?;
                Ok(Handled::Ignored)
            }
            Decision::ChargeInFlight => {
                change.rollback().await?;
                Err(HandleError::NotYet(format!(
                    "order {order_id}: a charge is being made, its outcome decides"
                )))
            }
            Decision::Unknown => {
                change.rollback().await?;
                Err(HandleError::NotYet(format!(
                    "order {order_id} is not known here yet"
                )))
            }
        }
    }

    async fn cancelled(
        &self,
        event: &Envelope,
        id: &str,
        version: i64,
    ) -> Result<Handled, HandleError> {
        let Some(mut change) = self.0.outbox.begin_once(&event.id).await? else {
            return Ok(Handled::Duplicate);
        };
        let stored: Option<i64> = sqlx::query("SELECT version FROM orders WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *change)
            .await?
            .map(|row| row.try_get(0))
            .transpose()?;
        let Some(stored) = stored else {
            // Rolled back: the inbox must not remember an event that did not apply.
            change.rollback().await?;
            return Err(HandleError::NotYet(format!(
                "order {id} is not known here yet"
            )));
        };
        if version <= stored {
            change.commit().await?;
            return Ok(Handled::Ignored);
        }
        if version > stored + 1 {
            change.rollback().await?;
            return Err(HandleError::NotYet(format!(
                "order {id} is at version {stored}, this is version {version}"
            )));
        }
        // The version is part of the condition: a concurrent change of the row makes this
        // update a no-op, and the event is retried instead of applied to the wrong version.
        let updated = sqlx::query(
            "UPDATE orders SET status = $1, version = $2 WHERE id = $3 AND version = $4",
        )
        .bind(OrderStatus::Cancelled.as_str())
        .bind(version)
        .bind(id)
        .bind(stored)
        .execute(&mut *change)
        .await?
        .rows_affected();
        if updated == 0 {
            change.rollback().await?;
            return Err(HandleError::Transient(anyhow::anyhow!(
                "order {id} changed while its cancellation was applied"
            )));
        }
        // A payment that lost the race with its user's cancellation (orders cancelled the
        // order before it saw the payment, so it will never be complete): its attempt is
        // put back to pending with its charge, and the background settler refunds it. (An
        // expiry never gets here: that verdict is made here, and never after a payment.)
        let compensated = sqlx::query(
            "UPDATE charge_attempts SET status = 'pending', lease_until = 0 WHERE order_id = $1 AND status = 'succeeded' AND charge_id IS NOT NULL",
        )
        .bind(id)
        .execute(&mut *change)
        .await?
        .rows_affected();
        change.commit().await?;
        if compensated > 0 {
            tracing::warn!(order_id = %id, "order cancelled after its payment: the charge will be refunded");
        }
        tracing::info!(order_id = %id, version, "order cancelled");
        Ok(Handled::Applied)
    }
}
