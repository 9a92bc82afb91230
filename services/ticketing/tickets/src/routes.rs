//! `POST /api/tickets`, `GET /api/tickets`, `GET /api/tickets/:id`, `PUT /api/tickets/:id`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use switchyard_bus_client::{ReadCache, ServiceState};
use switchyard_kit::{ApiError, RequestId, ValidJson};
use switchyard_session::{Claims, HasSessions, RequireUser, Sessions};
use switchyard_ticketing_contract::{MAX_ID_LEN, TicketId, UserId, is_object_id};

use switchyard_kit::clock::unix_millis;
use switchyard_kit::openapi::ErrorBody;
use switchyard_ticketing_contract::http::{NewTicket, TicketBody};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ticket::{Ticket, ticket_columns};

/// How many times an update is tried against a ticket that others keep changing before
/// the client is asked to try again. Each lost race means another change committed, so
/// with N concurrent writers an update loses at most N - 1 times.
const MAX_ATTEMPTS: usize = 64;

/// The routes' state: the service's database and outbox, the kept list, the sessions.
#[derive(Clone)]
struct RouteState {
    service: ServiceState,
    /// The kept `GET /api/tickets`.
    cache: Arc<ReadCache<()>>,
    sessions: Sessions,
}

impl HasSessions for RouteState {
    fn sessions(&self) -> &Sessions {
        &self.sessions
    }
}

pub(crate) fn router(
    service: ServiceState,
    cache: Arc<ReadCache<()>>,
    sessions: Sessions,
) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(index, create))
        .routes(routes!(show, update))
        .with_state(RouteState {
            service,
            cache,
            sessions,
        })
}

/// The signed-in user's id, if it can travel in an event: the contract caps ids at
/// [`MAX_ID_LEN`], and a ticket whose event the bus would refuse must not be created.
fn user_id(user: &Claims) -> Result<&str, ApiError> {
    if user.id.chars().count() > MAX_ID_LEN {
        return Err(ApiError::unauthorized());
    }
    Ok(&user.id)
}

/// Sells a ticket: the signed-in user is its owner.
#[utoipa::path(post, path = "/api/tickets", tag = "tickets", request_body = NewTicket,
    security(("session" = [])),
    responses(
        (status = 201, description = "The ticket", body = TicketBody),
        (status = 400, description = "Every invalid field (`Title is required`, `Price must be greater than 0`, `Price must be at least 0.50`, …)", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
    ))]
async fn create(
    State(RouteState { service: state, .. }): State<RouteState>,
    RequireUser(user): RequireUser,
    request_id: RequestId,
    ValidJson(NewTicket { title, price }): ValidJson<NewTicket>,
) -> Result<Response, ApiError> {
    let user_id = user_id(&user)?;
    let ticket = Ticket {
        id: TicketId::generate(),
        title: title.into_string(),
        price,
        user_id: UserId::from(user_id),
        order_id: None,
        version: 0,
    };
    let mut change = state.outbox.begin().await?;
    sqlx::query(
        "INSERT INTO tickets (id, title, price, user_id, version, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(ticket.id.as_str())
    .bind(&ticket.title)
    .bind(ticket.price)
    .bind(ticket.user_id.as_str())
    .bind(ticket.version)
    .bind(unix_millis())
    .execute(&mut *change)
    .await?;
    change.publish(&ticket.created(Some(request_id.0))).await?;
    change.commit().await?;
    tracing::info!(ticket_id = %ticket.id, user_id = %ticket.user_id, "ticket created");
    Ok((StatusCode::CREATED, axum::Json(ticket.to_body())).into_response())
}

/// The tickets for sale: every ticket no order holds, oldest first.
#[utoipa::path(get, path = "/api/tickets", tag = "tickets",
    responses((status = 200, description = "The tickets no order holds", body = Vec<TicketBody>)))]
async fn index(
    State(RouteState {
        service: state,
        cache,
        ..
    }): State<RouteState>,
) -> Result<Response, ApiError> {
    let body = cache.answer(&state.outbox, (), list(&state)).await?;
    Ok(switchyard_kit::http::json_bytes(body))
}

/// The tickets for sale, oldest first.
async fn list(state: &ServiceState) -> Result<Vec<TicketBody>, ApiError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        ticket_columns!(),
        " FROM tickets WHERE order_id IS NULL ORDER BY ord"
    ))
    .fetch_all(state.db.reader())
    .await?;
    Ok(rows
        .iter()
        .map(|row| Ticket::from_row(row).map(|t| t.to_body()))
        .collect::<Result<Vec<_>, _>>()?)
}

/// The ticket `id`; an id that is not an entity id names no ticket (404, like an unknown
/// one, where the original answered a cast error).
async fn find(state: &ServiceState, id: &str) -> Result<Ticket, ApiError> {
    if !is_object_id(id) {
        return Err(ApiError::not_found("Not Found"));
    }
    let mut conn = state.db.reader().acquire().await?;
    Ticket::find(&mut conn, id)
        .await?
        .ok_or_else(|| ApiError::not_found("Not Found"))
}

/// One ticket.
#[utoipa::path(get, path = "/api/tickets/{id}", tag = "tickets",
    params(("id" = String, Path, description = "The ticket's id (24 hexadecimal digits)")),
    responses(
        (status = 200, description = "The ticket", body = TicketBody),
        (status = 404, description = "No such ticket", body = ErrorBody),
    ))]
async fn show(
    State(RouteState { service: state, .. }): State<RouteState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(find(&state, &id).await?.to_body()).into_response())
}

/// Applies `{title, price}` to the version of the ticket it read, re-reading and checking
/// again when another change got there first, so no concurrent update is lost and each
/// gets its own version.
/// Changes a ticket's title and price: only its owner can, and not while an order holds it.
#[utoipa::path(put, path = "/api/tickets/{id}", tag = "tickets",
    params(("id" = String, Path, description = "The ticket's id (24 hexadecimal digits)")),
    request_body = NewTicket,
    security(("session" = [])),
    responses(
        (status = 200, description = "The ticket, its version bumped", body = TicketBody),
        (status = 400, description = "Every invalid field, or `Cannot edit a reserved ticket`", body = ErrorBody),
        (status = 401, description = "Not signed in, or not the ticket's owner", body = ErrorBody),
        (status = 404, description = "No such ticket", body = ErrorBody),
        (status = 503, description = "Others kept changing the ticket; try again", body = ErrorBody),
    ))]
async fn update(
    State(RouteState { service: state, .. }): State<RouteState>,
    RequireUser(user): RequireUser,
    request_id: RequestId,
    Path(id): Path<String>,
    ValidJson(NewTicket { title, price }): ValidJson<NewTicket>,
) -> Result<Response, ApiError> {
    let title = title.into_string();
    for attempt in 1..=MAX_ATTEMPTS {
        let read = find(&state, &id).await?;
        if read.order_id.is_some() {
            return Err(ApiError::bad_request("Cannot edit a reserved ticket"));
        }
        if read.user_id != user.id.as_str() {
            return Err(ApiError::unauthorized());
        }
        let mut change = state.outbox.begin().await?;
        let row = sqlx::query(concat!(
            "UPDATE tickets SET title = $1, price = $2, version = version + 1 ",
            "WHERE id = $3 AND version = $4 RETURNING ",
            ticket_columns!()
        ))
        .bind(&title)
        .bind(price)
        .bind(read.id.as_str())
        .bind(read.version)
        .fetch_optional(&mut *change)
        .await?;
        let Some(row) = row else {
            // Another change committed since the read: check again against what it left.
            change.rollback().await?;
            tracing::debug!(ticket_id = %id, attempt, "ticket changed meanwhile, retrying");
            continue;
        };
        let ticket = Ticket::from_row(&row)?;
        change.publish(&ticket.updated(Some(request_id.0))).await?;
        change.commit().await?;
        tracing::info!(ticket_id = %ticket.id, version = ticket.version, "ticket updated");
        return Ok(axum::Json(ticket.to_body()).into_response());
    }
    tracing::warn!(ticket_id = %id, "ticket update kept losing races, giving up");
    Err(ApiError::unavailable(
        "the ticket is being changed by others, try again",
    ))
}
