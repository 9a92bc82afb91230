//! `POST /api/payments`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use switchyard_kit::{ApiError, JsonBody, RequestId};
use switchyard_session::{HasSessions, RequireUser, Sessions};
use switchyard_ticketing_contract::MAX_ID_LEN;

use switchyard_kit::openapi::ErrorBody;
use switchyard_ticketing_contract::http::{NewPayment, Payment};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::pay::{Outcome, Payments};

/// Longest card token accepted (Stripe's are about 30 characters).
const MAX_TOKEN_LEN: usize = 255;

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
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let (token, order_id) = validate(&body)?;
    let correlation = (!request_id.is_empty()).then_some(request_id);
    // The payment runs in a task of its own: a client that goes away, or the request
    // timeout, must not cut it off between the charge and its settlement.
    let work =
        tokio::spawn(async move { state.pay(&order_id, &user.id, &token, correlation).await });
    let outcome = work.await.map_err(ApiError::internal)??;
    match outcome {
        Outcome::Paid(id) => {
            Ok((StatusCode::CREATED, axum::Json(json!({ "id": id }))).into_response())
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

/// `{token, orderId}`: both required non-empty strings; every failing field is listed.
fn validate(body: &Value) -> Result<(String, String), ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    let mut errors = Vec::new();
    let mut field = |name: &str, label: &str, max: usize| -> Option<String> {
        match obj.get(name) {
            Some(Value::String(s)) if s.trim().chars().count() > max => {
                errors.push((
                    name.to_string(),
                    format!("{label} must be at most {max} characters"),
                ));
                None
            }
            // Control characters are in no token or id (and PostgreSQL refuses NUL in text).
            Some(Value::String(s)) if s.chars().any(char::is_control) => {
                errors.push((name.to_string(), format!("{label} is malformed")));
                None
            }
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            _ => {
                errors.push((name.to_string(), format!("{label} must be provided")));
                None
            }
        }
    };
    let token = field("token", "Token", MAX_TOKEN_LEN);
    let order_id = field("orderId", "OrderId", MAX_ID_LEN);
    match (token, order_id) {
        (Some(token), Some(order_id)) => Ok((token, order_id)),
        _ => Err(ApiError::fields(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields_of(err: &ApiError) -> Vec<&str> {
        err.errors
            .iter()
            .filter_map(|e| e.field.as_deref())
            .collect()
    }

    #[test]
    fn both_fields_are_required_and_all_failures_listed() {
        assert_eq!(
            validate(&json!({"token": " tok_visa ", "orderId": "abc"})),
            Ok(("tok_visa".to_string(), "abc".to_string()))
        );
        let err = validate(&json!({})).expect_err("empty");
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(fields_of(&err), ["token", "orderId"]);
        assert_eq!(err.errors[0].message, "Token must be provided");
        for body in [
            json!({"token": "", "orderId": "  "}),
            json!({"token": null, "orderId": 12}),
            json!({"token": ["tok_visa"], "orderId": {"id": "x"}}),
        ] {
            let err = validate(&body).expect_err("bad");
            assert_eq!(fields_of(&err), ["token", "orderId"], "{body}");
        }
        let err =
            validate(&json!({"token": "tok_visa", "orderId": "x".repeat(65)})).expect_err("long");
        assert_eq!(fields_of(&err), ["orderId"]);
        let err = validate(&json!({"token": "tok_\u{0}", "orderId": "a\nb"})).expect_err("control");
        assert_eq!(fields_of(&err), ["token", "orderId"]);
        assert!(validate(&json!(["token"])).is_err());
        assert!(validate(&json!("token")).is_err());
    }
}
