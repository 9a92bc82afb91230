//! Consuming `order:created` and `order:cancelled`: a ticket is reserved while an order
//! holds it.
//!
//! Each change is one `UPDATE ... RETURNING`, atomic on either database whatever else
//! changes the ticket meanwhile, committed with the inbox record of the event and the
//! `ticket:updated` it causes.

use futures_util::future::BoxFuture;
use switchyard_bus_client::consumer::malformed;
use switchyard_bus_client::{Change, EventHandler, HandleError, Handled, ServiceState};
use switchyard_events::Envelope;
use switchyard_kit::ApiError;
use switchyard_kit::clock::unix_millis;
use switchyard_ticketing_contract::{ContractEvent, OrderCancelled, OrderCreated, TicketingEvent};

use crate::ticket::{Ticket, ticket_columns};

/// The events this service consumes, named by their types: the registry subscribes it to
/// these (and to nothing else), and its handler's `match` names every other event as ignored.
pub const CONSUMES: &[&str] = &[OrderCreated::NAME, OrderCancelled::NAME];

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
                    self.reserve(&event, order.id.as_str(), order.ticket.id.as_str())
                        .await
                }
                TicketingEvent::OrderCancelled(order) => {
                    self.release(&event, order.id.as_str(), order.ticket.id.as_str())
                        .await
                }
                TicketingEvent::TicketCreated(_)
                | TicketingEvent::TicketUpdated(_)
                | TicketingEvent::ExpirationComplete(_)
                | TicketingEvent::PaymentCreated(_)
                | TicketingEvent::PaymentExpired(_) => Ok(Handled::Ignored),
            }
        })
    }
}

impl Orders {
    /// Sets the ticket's `orderId` to `order_id` if no order holds it.
    ///
    /// The orders service lets one live order at a time hold a ticket: of two orders on
    /// one ticket, the older was cancelled before the newer was created. When the ticket is
    /// held by another order, one of the two has a cancellation this service has not
    /// applied yet, and which one cannot be told from here: handlers run several events at
    /// once, so an older order's creation can come after a newer one's. The event is
    /// deferred until that cancellation is applied. If it was the holder's, the ticket is
    /// free when the creation comes back; if it was this order's, `cancelled_orders` turns
    /// the creation away. Taking the ticket from its holder instead (newest creation wins)
    /// let an older order's late creation and cancellation free a ticket a newer order held.
    async fn reserve(
        &self,
        event: &Envelope,
        order_id: &str,
        ticket_id: &str,
    ) -> Result<Handled, HandleError> {
        let Some(mut change) = self.0.outbox.begin_once(&event.id).await? else {
            return Ok(Handled::Duplicate);
        };
        lock_ticket(&self.0, &mut change, ticket_id).await?;
        // Its cancellation overtook it: the order never holds the ticket.
        let cancelled = sqlx::query("SELECT 1 FROM cancelled_orders WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&mut *change)
            .await?
            .is_some();
        if cancelled {
            change.commit().await?;
            tracing::info!(%ticket_id, %order_id, "creation of an order already cancelled: the ticket stays as it is");
            return Ok(Handled::Ignored);
        }
        let row = sqlx::query(concat!(
            "UPDATE tickets SET order_id = $1, version = version + 1 ",
            "WHERE id = $2 AND order_id IS NULL RETURNING ",
            ticket_columns!()
        ))
        .bind(order_id)
        .bind(ticket_id)
        .fetch_optional(&mut *change)
        .await?;
        if let Some(row) = row {
            let ticket = Ticket::from_row(&row)?;
            publish(change, &ticket, event).await?;
            tracing::info!(%ticket_id, %order_id, version = ticket.version, "ticket reserved");
            return Ok(Handled::Applied);
        }
        match Ticket::find(&mut change, ticket_id)
            .await?
            .map(|t| t.order_id)
        {
            None => {
                change.rollback().await?;
                Err(unknown_ticket(ticket_id))
            }
            // The same order's creation under another event id: already applied.
            Some(Some(holder)) if holder == order_id => {
                change.commit().await?;
                Ok(Handled::Ignored)
            }
            Some(Some(holder)) => {
                change.rollback().await?;
                Err(HandleError::NotYet(format!(
                    "ticket {ticket_id} is held by order {holder}: a cancellation comes first"
                )))
            }
            // Freed between the update and the read: impossible under the ticket's lock,
            // and harmless to try again.
            Some(None) => {
                change.rollback().await?;
                Err(HandleError::NotYet(format!("ticket {ticket_id} changed")))
            }
        }
    }

    /// Clears the ticket's `orderId` if `order_id` is the order that holds it: a late
    /// cancellation of an older order must not free a ticket a newer order holds.
    async fn release(
        &self,
        event: &Envelope,
        order_id: &str,
        ticket_id: &str,
    ) -> Result<Handled, HandleError> {
        let Some(mut change) = self.0.outbox.begin_once(&event.id).await? else {
            return Ok(Handled::Duplicate);
        };
        lock_ticket(&self.0, &mut change, ticket_id).await?;
        // Remembered, in case this cancellation overtook the order's creation.
        sqlx::query(
            "INSERT INTO cancelled_orders (order_id, ticket_id, at) VALUES ($1, $2, $3) ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(order_id)
        .bind(ticket_id)
        .bind(unix_millis())
        .execute(&mut *change)
        .await?;
        let row = sqlx::query(concat!(
            "UPDATE tickets SET order_id = NULL, version = version + 1 ",
            "WHERE id = $1 AND order_id = $2 RETURNING ",
            ticket_columns!()
        ))
        .bind(ticket_id)
        .bind(order_id)
        .fetch_optional(&mut *change)
        .await?;
        if let Some(row) = row {
            let ticket = Ticket::from_row(&row)?;
            publish(change, &ticket, event).await?;
            tracing::info!(%ticket_id, %order_id, version = ticket.version, "ticket released");
            return Ok(Handled::Applied);
        }
        if Ticket::find(&mut change, ticket_id).await?.is_none() {
            change.rollback().await?;
            return Err(unknown_ticket(ticket_id));
        }
        // Another order holds it (or none): nothing to change, but the event is handled.
        change.commit().await?;
        tracing::debug!(%ticket_id, %order_id, "cancellation of an order that does not hold the ticket");
        Ok(Handled::Ignored)
    }
}

/// Takes the ticket's row lock first (PostgreSQL), so an order's creation and its
/// cancellation handled at the same moment by two handlers are applied one after the
/// other, each seeing what the other committed: otherwise the creation could miss the
/// cancellation's record and reserve the ticket for an order that no longer exists.
/// SQLite needs none: the inbox insert that opened the change holds its one write lock.
async fn lock_ticket(
    state: &ServiceState,
    change: &mut Change,
    ticket_id: &str,
) -> Result<(), sqlx::Error> {
    if state.db.dialect() == switchyard_kit::Dialect::Postgres {
        sqlx::query("SELECT id FROM tickets WHERE id = $1 FOR UPDATE")
            .bind(ticket_id)
            .fetch_optional(&mut **change)
            .await?;
    }
    Ok(())
}

/// Publishes `ticket:updated` for `ticket` in `change` and commits.
async fn publish(mut change: Change, ticket: &Ticket, cause: &Envelope) -> Result<(), sqlx::Error> {
    let correlation = cause
        .correlation_id
        .clone()
        .or_else(|| Some(cause.id.clone()));
    change.publish(&ticket.updated(correlation)).await?;
    change.commit().await
}

/// Orders are placed on tickets this service created: an order on an unknown ticket can
/// never apply, and is set aside rather than retried.
fn unknown_ticket(ticket_id: &str) -> HandleError {
    HandleError::Malformed(ApiError::field(
        "data.ticket.id",
        format!("unknown ticket {ticket_id}"),
    ))
}
