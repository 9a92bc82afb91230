//! `POST /api/tickets`, `GET /api/tickets`, `GET /api/tickets/:id`, `PUT /api/tickets/:id`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use switchyard_bus_client::{ReadCache, ServiceState};
use switchyard_kit::{ApiError, JsonBody, RequestId};
use switchyard_session::{Claims, HasSessions, RequireUser, Sessions};
use switchyard_ticketing_contract::{
    MAX_ID_LEN, MAX_PRICE, MAX_TITLE_LEN, MIN_PRICE, is_object_id, object_id, parse_price,
};

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
    /// The kept `GET /api/tickets`: only where this process is the database's only writer.
    cache: Option<Arc<ReadCache<()>>>,
    sessions: Sessions,
}

impl HasSessions for RouteState {
    fn sessions(&self) -> &Sessions {
        &self.sessions
    }
}

pub(crate) fn router(service: ServiceState, sessions: Sessions) -> OpenApiRouter {
    let cache = ReadCache::for_database(&service.db).map(Arc::new);
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

/// A checked `{title, price}`: every failing field is reported at once.
fn validate(body: &Value) -> Result<(String, f64), ApiError> {
    let mut errors = Vec::new();
    // Stored trimmed: a title of spaces is no title, and padding is never meant.
    let title = match body.get("title") {
        Some(Value::String(s)) if !s.trim().is_empty() => {
            let t = s.trim();
            if t.chars().count() > MAX_TITLE_LEN {
                errors.push((
                    "title",
                    format!("Title must be at most {MAX_TITLE_LEN} characters"),
                ));
            }
            // PostgreSQL stores no NUL in text: refused on every backend alike.
            if t.contains('\0') {
                errors.push(("title", "Title must not contain NUL characters".to_string()));
            }
            Some(t.to_string())
        }
        _ => {
            errors.push(("title", "Title is required".to_string()));
            None
        }
    };
    let price = match parse_price(body.get("price")) {
        // Below what a charge can be, a ticket could be ordered but never paid.
        Some(p) if p > 0.0 && p < MIN_PRICE => {
            errors.push(("price", format!("Price must be at least {MIN_PRICE:.2}")));
            None
        }
        // A price that rounds to 0 cents is not greater than 0.
        Some(p) if p > 0.0 => Some(p),
        _ => {
            let too_high = match body.get("price") {
                Some(Value::Number(n)) => n.as_f64().is_some_and(|p| p > MAX_PRICE),
                Some(Value::String(s)) => s.trim().parse::<f64>().is_ok_and(|p| p > MAX_PRICE),
                _ => false,
            };
            let message = if too_high {
                format!("Price must be at most {MAX_PRICE}")
            } else {
                "Price must be greater than 0".to_string()
            };
            errors.push(("price", message));
            None
        }
    };
    match (title, price) {
        (Some(title), Some(price)) if errors.is_empty() => Ok((title, price)),
        _ => Err(ApiError::fields(errors)),
    }
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
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let user_id = user_id(&user)?;
    let (title, price) = validate(&body)?;
    let ticket = Ticket {
        id: object_id(),
        title,
        price,
        user_id: user_id.to_string(),
        order_id: None,
        version: 0,
    };
    let mut change = state.outbox.begin().await?;
    sqlx::query(
        "INSERT INTO tickets (id, title, price, user_id, version, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&ticket.id)
    .bind(&ticket.title)
    .bind(ticket.price)
    .bind(&ticket.user_id)
    .bind(ticket.version)
    .bind(unix_millis())
    .execute(&mut *change)
    .await?;
    change.publish(&ticket.created(Some(request_id.0))).await?;
    change.commit().await?;
    tracing::info!(ticket_id = %ticket.id, user_id = %ticket.user_id, "ticket created");
    Ok((StatusCode::CREATED, axum::Json(ticket.to_json())).into_response())
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
    let body = ReadCache::answer(cache.as_deref(), &state.outbox, (), list(&state)).await?;
    Ok(switchyard_kit::http::json_bytes(body))
}

/// The tickets for sale, oldest first.
async fn list(state: &ServiceState) -> Result<Value, ApiError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        ticket_columns!(),
        " FROM tickets WHERE order_id IS NULL ORDER BY ord"
    ))
    .fetch_all(state.db.reader())
    .await?;
    let tickets = rows
        .iter()
        .map(|row| Ticket::from_row(row).map(|t| t.to_json()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Value::Array(tickets))
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
    Ok(axum::Json(find(&state, &id).await?.to_json()).into_response())
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
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let (title, price) = validate(&body)?;
    for attempt in 1..=MAX_ATTEMPTS {
        let read = find(&state, &id).await?;
        if read.order_id.is_some() {
            return Err(ApiError::bad_request("Cannot edit a reserved ticket"));
        }
        if read.user_id != user.id {
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
        .bind(&read.id)
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
        return Ok(axum::Json(ticket.to_json()).into_response());
    }
    tracing::warn!(ticket_id = %id, "ticket update kept losing races, giving up");
    Err(ApiError::unavailable(
        "the ticket is being changed by others, try again",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(err: ApiError) -> Vec<(String, String)> {
        err.errors
            .into_iter()
            .map(|e| (e.field.unwrap_or_default(), e.message))
            .collect()
    }

    #[test]
    fn every_failing_field_is_reported() {
        let err = validate(&json!({"title": "", "price": -10})).expect_err("both");
        assert_eq!(
            fields(err),
            vec![
                ("title".into(), "Title is required".into()),
                ("price".into(), "Price must be greater than 0".into())
            ]
        );
        let err = validate(&json!([1, 2])).expect_err("not an object");
        assert_eq!(err.errors.len(), 2);
    }

    #[test]
    fn titles_and_prices() {
        assert_eq!(
            validate(&json!({"title": " concert ", "price": "10.5"})),
            Ok(("concert".to_string(), 10.5))
        );
        for bad in [
            json!({"title": 5, "price": 10}),
            json!({"title": "   ", "price": 10}),
            json!({"price": 10}),
            json!({"title": "x".repeat(MAX_TITLE_LEN + 1), "price": 10}),
            json!({"title": "a\u{0}b", "price": 10}),
        ] {
            assert_eq!(fields(validate(&bad).expect_err("title"))[0].0, "title");
        }
        // Above 0 but under what a charge can be.
        for low in [json!(0.49), json!("0.1"), json!(0.01)] {
            let err = validate(&json!({"title": "t", "price": low})).expect_err("too low");
            assert_eq!(
                fields(err),
                vec![("price".into(), "Price must be at least 0.50".into())]
            );
        }
        assert!(validate(&json!({"title": "t", "price": 0.5})).is_ok());
        for bad in [
            json!(0),
            json!(-1),
            json!("abc"),
            json!(null),
            json!(true),
            json!(0.001),
        ] {
            let err = validate(&json!({"title": "t", "price": bad})).expect_err("price");
            assert_eq!(
                fields(err),
                vec![("price".into(), "Price must be greater than 0".into())]
            );
        }
        let err = validate(&json!({"title": "t", "price": 1e9})).expect_err("too high");
        assert_eq!(
            fields(err)[0].1,
            format!("Price must be at most {MAX_PRICE}")
        );
    }
}
