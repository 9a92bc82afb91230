//! `POST /api/orders`, `GET /api/orders`, `GET /api/orders/:orderId`,
//! `DELETE /api/orders/:orderId`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use switchyard_bus_client::{ReadCache, ServiceState};
use switchyard_kit::db::is_unique_violation;
use switchyard_kit::{ApiError, RequestId, ValidJson};
use switchyard_session::{Claims, HasSessions, RequireUser, Sessions};
use switchyard_ticketing_contract::{
    MAX_ID_LEN, OrderCreated, OrderId, OrderStatus, OrderedTicket, TicketingEvent, UserId,
    is_object_id,
};
use time::OffsetDateTime;

use switchyard_kit::clock::unix_millis;
use switchyard_kit::openapi::ErrorBody;
use switchyard_ticketing_contract::http::{NewOrder, OrderBody};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::order::{Order, Ticket, expires_at, order_columns};

/// How many times a cancellation re-reads an order that changed under it. An order
/// changes status at most twice (to cancelled or complete, both final), so a few suffice.
const MAX_ATTEMPTS: usize = 8;

/// What the routes share.
#[derive(Clone)]
pub(crate) struct OrdersState {
    pub service: ServiceState,
    pub expiration_window: Duration,
    /// Each user's `GET /api/orders`, kept between changes ([`ReadCache`]).
    pub lists: Arc<ReadCache<String>>,
    pub sessions: Sessions,
}

impl HasSessions for OrdersState {
    fn sessions(&self) -> &Sessions {
        &self.sessions
    }
}

pub(crate) fn router(state: OrdersState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(index, create))
        .routes(routes!(show, cancel))
        .with_state(state)
}

fn reserved() -> ApiError {
    ApiError::bad_request("Ticket is already reserved")
}

/// The signed-in user's id, if it can travel in an event: the contract caps ids at
/// [`MAX_ID_LEN`], and an order whose event the bus would refuse must not be created.
fn user_id(user: &Claims) -> Result<&str, ApiError> {
    if user.id.chars().count() > MAX_ID_LEN {
        return Err(ApiError::unauthorized());
    }
    Ok(&user.id)
}

/// Whether an order that holds the ticket exists.
async fn is_reserved(state: &ServiceState, ticket_id: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "SELECT 1 FROM orders WHERE ticket_id = $1 AND status IN ('created', 'awaiting:payment', 'complete')",
    )
    .bind(ticket_id)
    .fetch_optional(state.db.reader())
    .await?
    .is_some())
}

/// Reserves a ticket for the signed-in user until the order expires or is paid.
#[utoipa::path(post, path = "/api/orders", tag = "orders", request_body = NewOrder,
    security(("session" = [])),
    responses(
        (status = 201, description = "The order, its ticket reserved", body = OrderBody),
        (status = 400, description = "`TicketId must be provided`, or `Ticket is already reserved`", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
        (status = 404, description = "No such ticket", body = ErrorBody),
    ))]
async fn create(
    State(state): State<OrdersState>,
    RequireUser(user): RequireUser,
    request_id: RequestId,
    ValidJson(NewOrder { ticket_id }): ValidJson<NewOrder>,
) -> Result<Response, ApiError> {
    let user_id = user_id(&user)?;
    let ticket_id = ticket_id.as_str();
    let service = &state.service;
    let ticket = {
        let mut conn = service.db.reader().acquire().await?;
        Ticket::find(&mut conn, ticket_id)
            .await?
            .ok_or_else(|| ApiError::not_found("Not Found"))?
    };
    // The common case answered without a write; the unique index below decides races.
    if is_reserved(service, ticket_id).await? {
        return Err(reserved());
    }
    let order = Order {
        id: OrderId::generate(),
        user_id: UserId::from(user_id),
        status: OrderStatus::Created,
        expires_at: expires_at(OffsetDateTime::now_utc(), state.expiration_window)
            .ok_or_else(|| ApiError::internal("the expiration window overflows the calendar"))?,
        version: 0,
        ticket,
    };
    let mut change = service.outbox.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO orders (id, user_id, status, expires_at, ticket_id, version, created_at, ticket_title, ticket_price) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(order.id.as_str())
    .bind(order.user_id.as_str())
    .bind(order.status.as_str())
    .bind(&order.expires_at)
    .bind(order.ticket.id.as_str())
    .bind(order.version)
    .bind(unix_millis())
    // What the buyer was shown and is charged: an edit of the ticket later does not change
    // the order.
    .bind(&order.ticket.title)
    .bind(order.ticket.price)
    .execute(&mut *change)
    .await;
    match inserted {
        Ok(_) => {}
        // Another order took the ticket since the check: one live order per ticket.
        Err(e) if is_unique_violation(&e) => {
            change.rollback().await?;
            tracing::debug!(%ticket_id, "another order took the ticket first");
            return Err(reserved());
        }
        Err(e) => return Err(e.into()),
    }
    let event = TicketingEvent::from(OrderCreated {
        id: order.id.clone(),
        version: order.version,
        status: order.status,
        user_id: order.user_id.clone(),
        expires_at: order.expires_at.clone(),
        ticket: OrderedTicket {
            id: order.ticket.id.clone(),
            price: order.ticket.price,
        },
    })
    .into_envelope(Some(request_id.0));
    change.publish(&event).await?;
    change.commit().await?;
    tracing::info!(order_id = %order.id, ticket_id = %order.ticket.id, user_id = %order.user_id, "order created");
    Ok((StatusCode::CREATED, axum::Json(order.to_body())).into_response())
}

/// The signed-in user's orders, oldest first, with their tickets.
#[utoipa::path(get, path = "/api/orders", tag = "orders",
    security(("session" = [])),
    responses(
        (status = 200, description = "The user's orders", body = Vec<OrderBody>),
        (status = 401, description = "Not signed in", body = ErrorBody),
    ))]
async fn index(
    State(state): State<OrdersState>,
    RequireUser(user): RequireUser,
) -> Result<Response, ApiError> {
    let body = state
        .lists
        .answer(
            &state.service.outbox,
            user.id.clone(),
            orders_of(&state.service, &user.id),
        )
        .await?;
    Ok(switchyard_kit::http::json_bytes(body))
}

/// The orders of user `user_id`, oldest first, with their tickets.
async fn orders_of(state: &ServiceState, user_id: &str) -> Result<Vec<OrderBody>, ApiError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders o JOIN tickets t ON t.id = o.ticket_id WHERE o.user_id = $1 ORDER BY o.ord"
    ))
    .bind(user_id)
    .fetch_all(state.db.reader())
    .await?;
    Ok(rows
        .iter()
        .map(|row| Order::from_row(row).map(|o| o.to_body()))
        .collect::<Result<Vec<_>, _>>()?)
}

/// The order `id` of `user`: 404 if there is none (an id that is not an entity id names
/// none), 401 if it is another user's.
async fn owned(state: &ServiceState, user: &Claims, id: &str) -> Result<Order, ApiError> {
    if !is_object_id(id) {
        return Err(ApiError::not_found("Not Found"));
    }
    let mut conn = state.db.reader().acquire().await?;
    let order = Order::find(&mut conn, id)
        .await?
        .ok_or_else(|| ApiError::not_found("Not Found"))?;
    if order.user_id != user.id.as_str() {
        return Err(ApiError::unauthorized());
    }
    Ok(order)
}

/// One of the signed-in user's orders.
#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "The order's id (24 hexadecimal digits)")),
    security(("session" = [])),
    responses(
        (status = 200, description = "The order", body = OrderBody),
        (status = 401, description = "Not signed in, or another user's order", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
    ))]
async fn show(
    State(state): State<OrdersState>,
    RequireUser(user): RequireUser,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(owned(&state.service, &user, &id).await?.to_body()).into_response())
}

/// Cancels the order unless it is paid. Cancelling a cancelled order succeeds without a
/// second `order:cancelled`: the first one already freed the ticket.
#[utoipa::path(delete, path = "/api/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "The order's id (24 hexadecimal digits)")),
    security(("session" = [])),
    responses(
        (status = 204, description = "Cancelled (or cancelled before): the ticket is for sale again"),
        (status = 400, description = "`Cannot cancel a complete order`", body = ErrorBody),
        (status = 401, description = "Not signed in, or another user's order", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 503, description = "The order kept changing; try again", body = ErrorBody),
    ))]
async fn cancel(
    State(state): State<OrdersState>,
    RequireUser(user): RequireUser,
    request_id: RequestId,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let service = &state.service;
    for _ in 0..MAX_ATTEMPTS {
        let order = owned(service, &user, &id).await?;
        match order.status {
            OrderStatus::Complete => {
                return Err(ApiError::bad_request("Cannot cancel a complete order"));
            }
            OrderStatus::Cancelled => return Ok(StatusCode::NO_CONTENT.into_response()),
            OrderStatus::Created | OrderStatus::AwaitingPayment => {}
        }
        let mut change = service.outbox.begin().await?;
        let Some(cancelled) = crate::handler::cancel_live(&mut change, order.id.as_str()).await?
        else {
            // Paid or cancelled since the read: answer for what it is now.
            change.rollback().await?;
            continue;
        };
        change
            .publish(&cancelled.into_envelope(Some(request_id.0)))
            .await?;
        change.commit().await?;
        tracing::info!(order_id = %order.id, "order cancelled by its user");
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    tracing::warn!(order_id = %id, "order kept changing during its cancellation");
    Err(ApiError::unavailable(
        "the order is being changed, try again",
    ))
}
