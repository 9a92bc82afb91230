//! Consuming `ticket:created`, `ticket:updated`, `payment:created` and `payment:expired`,
//! each once: the inbox record, the effect and the events it causes commit in one change.
//!
//! Whether an order was paid or ran out of time is payments' verdict, made once per order
//! in one transaction there and published in that order from one outbox: orders completes
//! the order on `payment:created` and cancels it on `payment:expired`. It never has to
//! choose between a payment and an expiry itself, so a payment answered 201 is never
//! undone by an expiry that arrived first. (`expiration:complete` goes to payments.)

use futures_util::future::BoxFuture;
use sqlx::{AnyConnection, Row};
use switchyard_bus_client::consumer::malformed;
use switchyard_bus_client::{Change, EventHandler, HandleError, Handled, ServiceState};
use switchyard_events::Envelope;
use switchyard_kit::ApiError;
use switchyard_ticketing_contract::{
    ContractEvent, OrderCancelled, OrderId, OrderStatus, PaymentCreated, PaymentExpired, Price,
    TicketCreated, TicketId, TicketRef, TicketUpdated, TicketingEvent,
};

/// The events this service consumes, named by their types: the registry subscribes it to
/// these (and to nothing else), and its handler's `match` names every other event as ignored.
///
/// Paid or expired is payments' verdict (`payment:created`, `payment:expired`), in the order
/// it decided; expiration's event goes to payments.
pub const CONSUMES: &[&str] = &[
    TicketCreated::NAME,
    TicketUpdated::NAME,
    PaymentCreated::NAME,
    PaymentExpired::NAME,
];

pub(crate) struct Events(pub ServiceState);

impl EventHandler for Events {
    fn handle(&self, event: Envelope) -> BoxFuture<'_, Result<Handled, HandleError>> {
        Box::pin(async move {
            let Some(parsed) = TicketingEvent::from_envelope(&event).map_err(malformed)? else {
                return Ok(Handled::Ignored);
            };
            // Subjects this service does not consume are answered before the inbox is
            // touched: nothing to record for them. Every event of the contract is named, so
            // a new one must be decided about here.
            let consumed = match parsed {
                TicketingEvent::TicketCreated(_)
                | TicketingEvent::TicketUpdated(_)
                | TicketingEvent::PaymentExpired(_)
                | TicketingEvent::PaymentCreated(_) => parsed,
                TicketingEvent::OrderCreated(_)
                | TicketingEvent::OrderCancelled(_)
                | TicketingEvent::ExpirationComplete(_) => return Ok(Handled::Ignored),
            };
            let Some(mut change) = self.0.outbox.begin_once(&event.id).await? else {
                return Ok(Handled::Duplicate);
            };
            let outcome = match consumed {
                TicketingEvent::TicketCreated(t) => {
                    ticket_created(&mut change, t.id.as_str(), t.version, &t.title, t.price).await
                }
                TicketingEvent::TicketUpdated(t)
                    if switchyard_ticketing_contract::is_snapshot(&event) =>
                {
                    ticket_snapshot(&mut change, t.id.as_str(), t.version, &t.title, t.price).await
                }
                TicketingEvent::TicketUpdated(t) => {
                    ticket_updated(&mut change, t.id.as_str(), t.version, &t.title, t.price).await
                }
                TicketingEvent::PaymentExpired(p) => {
                    expired(&mut change, &event, p.order_id.as_str()).await
                }
                TicketingEvent::PaymentCreated(p) => {
                    paid(&mut change, p.id.as_str(), p.order_id.as_str()).await
                }
                TicketingEvent::OrderCreated(_)
                | TicketingEvent::OrderCancelled(_)
                | TicketingEvent::ExpirationComplete(_) => Ok(Handled::Ignored),
            };
            match outcome {
                Ok(handled) => {
                    change.commit().await?;
                    Ok(handled)
                }
                // Not applied: the inbox record goes too, so the redelivery is handled.
                Err(e) => {
                    change.rollback().await?;
                    Err(e)
                }
            }
        })
    }
}

/// Inserts the replica at the event's version; a replica already there stays as it is
/// (a later update may have been applied on top of it).
async fn ticket_created(
    conn: &mut AnyConnection,
    id: &str,
    version: i64,
    title: &str,
    price: Price,
) -> Result<Handled, HandleError> {
    let inserted = sqlx::query(
        "INSERT INTO tickets (id, title, price, version) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(title)
    .bind(price)
    .bind(version)
    .execute(conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(Handled::Duplicate);
    }
    tracing::debug!(ticket_id = %id, version, "ticket replicated");
    Ok(Handled::Applied)
}

/// Applies version `version` only on top of `version - 1`: an older or equal version is
/// already applied, and a later one waits (is redelivered) until its predecessors are in.
async fn ticket_updated(
    conn: &mut AnyConnection,
    id: &str,
    version: i64,
    title: &str,
    price: Price,
) -> Result<Handled, HandleError> {
    let updated = sqlx::query(
        "UPDATE tickets SET title = $1, price = $2, version = $3 WHERE id = $4 AND version = $5",
    )
    .bind(title)
    .bind(price)
    .bind(version)
    .bind(id)
    .bind(version - 1)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if updated > 0 {
        tracing::debug!(ticket_id = %id, version, "ticket replica updated");
        return Ok(Handled::Applied);
    }
    let stored: Option<i64> = sqlx::query("SELECT version FROM tickets WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .map(|row| row.try_get(0))
        .transpose()?;
    match stored {
        None => Err(HandleError::NotYet(format!(
            "ticket {id} version {version}: the ticket is not replicated yet"
        ))),
        Some(stored) if stored >= version => Ok(Handled::Duplicate),
        Some(stored) => Err(HandleError::NotYet(format!(
            "ticket {id} version {version}: the replica is at version {stored}"
        ))),
    }
}

/// Applies a ticket's republished whole state when it is newer than the replica (or the
/// replica is missing): versions lost on the way are skipped, an older state changes
/// nothing.
async fn ticket_snapshot(
    conn: &mut AnyConnection,
    id: &str,
    version: i64,
    title: &str,
    price: Price,
) -> Result<Handled, HandleError> {
    let changed = sqlx::query(
        "INSERT INTO tickets (id, title, price, version) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET title = excluded.title, price = excluded.price, version = excluded.version \
         WHERE tickets.version < excluded.version",
    )
    .bind(id)
    .bind(title)
    .bind(price)
    .bind(version)
    .execute(conn)
    .await?
    .rows_affected();
    if changed == 0 {
        return Ok(Handled::Duplicate);
    }
    tracing::info!(ticket_id = %id, version, "ticket replica set from a republished state");
    Ok(Handled::Applied)
}

/// Cancels order `order_id` if it is still live (created or awaiting payment); returns
/// its `order:cancelled`. A paid or cancelled order is left as it is.
pub(crate) async fn cancel_live(
    conn: &mut AnyConnection,
    order_id: &str,
) -> Result<Option<TicketingEvent>, sqlx::Error> {
    let row = sqlx::query(
        "UPDATE orders SET status = 'cancelled', version = version + 1 WHERE id = $1 AND status IN ('created', 'awaiting:payment') RETURNING version, ticket_id",
    )
    .bind(order_id)
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        Ok(TicketingEvent::from(OrderCancelled {
            id: OrderId::from(order_id),
            version: row.try_get("version")?,
            ticket: TicketRef {
                id: TicketId::from_string(row.try_get("ticket_id")?),
            },
        }))
    })
    .transpose()
}

/// The status of order `order_id`; an order this service never created is a malformed
/// event (expirations and payments follow this service's own `order:created`).
async fn status_of(conn: &mut AnyConnection, order_id: &str) -> Result<OrderStatus, HandleError> {
    let status: Option<String> = sqlx::query("SELECT status FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_optional(conn)
        .await?
        .map(|row| row.try_get(0))
        .transpose()?;
    let Some(status) = status else {
        return Err(HandleError::Malformed(ApiError::field(
            "data.orderId",
            format!("unknown order {order_id}"),
        )));
    };
    OrderStatus::parse(&status).ok_or_else(|| {
        HandleError::Transient(anyhow::anyhow!(
            "unknown order status {status:?} in the database"
        ))
    })
}

/// Cancels an order payments closed unpaid (its time ran out), unless it is already
/// cancelled: payments decides paid or expired once per order, so this never meets a
/// payment of the same order.
async fn expired(
    change: &mut Change,
    cause: &Envelope,
    order_id: &str,
) -> Result<Handled, HandleError> {
    if let Some(cancelled) = cancel_live(change, order_id).await? {
        let correlation = cause
            .correlation_id
            .clone()
            .or_else(|| Some(cause.id.clone()));
        change
            .publish(&cancelled.into_envelope(correlation))
            .await?;
        tracing::info!(%order_id, "order expired");
        return Ok(Handled::Applied);
    }
    let status = status_of(change, order_id).await?;
    tracing::debug!(%order_id, status = status.as_str(), "expiration of an order that is no longer live");
    Ok(Handled::Ignored)
}

/// Completes a paid order. A payment for a cancelled order changes nothing (the ticket
/// may be another order's by now): payments refunds it when it applies the cancellation.
async fn paid(
    conn: &mut AnyConnection,
    payment_id: &str,
    order_id: &str,
) -> Result<Handled, HandleError> {
    let completed = sqlx::query(
        "UPDATE orders SET status = 'complete', version = version + 1 WHERE id = $1 AND status IN ('created', 'awaiting:payment')",
    )
    .bind(order_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if completed > 0 {
        tracing::info!(%order_id, %payment_id, "order paid");
        return Ok(Handled::Applied);
    }
    match status_of(conn, order_id).await? {
        OrderStatus::Cancelled => {
            tracing::warn!(%order_id, %payment_id, "payment for a cancelled order: nothing changed, payments refunds it");
        }
        status => {
            tracing::warn!(%order_id, %payment_id, status = status.as_str(), "payment for an order that is already paid");
        }
    }
    Ok(Handled::Ignored)
}
