//! `POST /api/payments`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use switchyard_kit::{ApiError, RequestId, ValidJson};
use switchyard_session::{HasSessions, RequireUser, Sessions};

use switchyard_kit::openapi::ErrorBody;
use switchyard_ticketing_contract::http::{NewPayment, Payment};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::pay::{Outcome, Payments};

/// The routes' state: paying, and the sessions that say who pays.
#[derive(Clone)]
struct RouteState {
    payments: Payments,
    sessions: Sessions,
}

impl HasSessions for RouteState {
    fn sessions(&self) -> &Sessions {
        &self.sessions
    }
}

pub(crate) fn router(payments: Payments, sessions: Sessions) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create))
        .with_state(RouteState { payments, sessions })
}

/// Pays for one of the signed-in user's orders, once: the charge carries an idempotency key
/// of the order, so a retried or concurrent payment never charges twice.
///
/// Signed out → 401 before the body is looked at, then 400 for the fields, then the order.
#[utoipa::path(post, path = "/api/payments", tag = "payments", request_body = NewPayment,
    security(("session" = [])),
    responses(
        (status = 201, description = "Paid: the payment's id", body = Payment),
        (status = 400, description = "Every invalid field, or the order cannot be paid (cancelled, expired or too near its expiry, paid, a payment in progress, the card refused, too many attempts)", body = ErrorBody),
        (status = 401, description = "Not signed in, or another user's order", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 503, description = "The payment provider or the database is unavailable; try again", body = ErrorBody),
    ))]
async fn create(
    State(RouteState {
        payments: state, ..
    }): State<RouteState>,
    RequireUser(user): RequireUser,
    RequestId(request_id): RequestId,
    ValidJson(NewPayment { token, order_id }): ValidJson<NewPayment>,
) -> Result<Response, ApiError> {
    let (token, order_id) = (token.into_string(), order_id.into_string());
    let correlation = (!request_id.is_empty()).then_some(request_id);
    // The payment runs in a task of its own: a client that goes away, or the request
    // timeout, must not cut it off between the charge and its settlement.
    let work =
        tokio::spawn(async move { state.pay(&order_id, &user.id, &token, correlation).await });
    let outcome = work.await.map_err(ApiError::internal)??;
    match outcome {
        Outcome::Paid(id) => {
            Ok((StatusCode::CREATED, axum::Json(Payment { id: id.into() })).into_response())
        }
        Outcome::AlreadyPaid => Err(ApiError::bad_request("Order has already been paid")),
        Outcome::InProgress => Err(ApiError::bad_request(
            "A payment for this order is already in progress",
        )),
        Outcome::Cancelled => Err(ApiError::bad_request("Cannot pay for an cancelled order")),
        Outcome::Expired => Err(ApiError::bad_request("Cannot pay for an expired order")),
        Outcome::TooManyAttempts => Err(ApiError::bad_request(
            "Too many payment attempts for this order",
        )),
        Outcome::Refused(message) => Err(ApiError::bad_request(message)),
        Outcome::Unavailable => Err(ApiError::unavailable(
            "The payment provider is unavailable, try again",
        )),
    }
}
