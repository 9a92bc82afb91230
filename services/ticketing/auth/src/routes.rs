//! `POST /api/users/signup`, `signin`, `signout` and `GET /api/users/currentuser`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sqlx::Row;
use switchyard_kit::clock::unix_millis;
use switchyard_kit::openapi::ErrorBody;
use switchyard_kit::{ApiError, JsonBody};
use switchyard_session::{Claims, CurrentUser, SessionUser};
use switchyard_ticketing_contract::http::{
    CurrentUser as CurrentUserBody, Empty, SignIn, SignUp, User,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AuthState;
use crate::throttle;
use crate::validate::{self, MAX_SIGNIN_PASSWORD};

pub(crate) fn router(state: AuthState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(signin))
        .routes(routes!(signout))
        .routes(routes!(current_user))
        // Behind an Arc: axum clones the state for every request.
        .with_state(Arc::new(state))
}

/// `{id, email}` with the cookie that signs in as that user.
fn signed_in(
    state: &AuthState,
    status: StatusCode,
    id: &str,
    email: &str,
) -> Result<Response, ApiError> {
    let (token, _) = state
        .sessions
        .issue(id, email)
        .map_err(ApiError::internal)?;
    Ok((
        status,
        [(header::SET_COOKIE, state.sessions.set_cookie(&token))],
        axum::Json(json!({"id": id, "email": email})),
    )
        .into_response())
}

/// Creates a user and signs it in.
#[utoipa::path(post, path = "/api/users/signup", tag = "auth", request_body = SignUp,
    responses(
        (status = 201, description = "Signed up and in: the `session` cookie is set", body = User,
            headers(("set-cookie" = String, description = "`session=…; path=/; samesite=lax; httponly` (and `secure` unless turned off)"))),
        (status = 400, description = "Every invalid field (`Email must be valid`, `Password must be between 4 and 20 characters`), or `Email in use`", body = ErrorBody),
    ))]
async fn signup(
    State(state): State<Arc<AuthState>>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let (email, password) = validate::signup(&body)?;
    let exists = sqlx::query("SELECT 1 FROM users WHERE email = $1")
        .bind(&email)
        .fetch_optional(state.db.reader())
        .await?
        .is_some();
    if exists {
        return Err(ApiError::bad_request("Email in use"));
    }
    let hash = state
        .passwords
        .hash(password)
        .await
        .map_err(ApiError::internal)?;
    let id = switchyard_ticketing_contract::object_id();
    let inserted = sqlx::query(
        "INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&id)
    .bind(&email)
    .bind(&hash)
    .bind(unix_millis())
    .execute(state.db.pool())
    .await;
    match inserted {
        Ok(_) => {}
        // Two signups of one email at the same moment: the unique constraint lets one in.
        Err(e) if switchyard_kit::db::is_unique_violation(&e) => {
            return Err(ApiError::bad_request("Email in use"));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(user_id = %id, "user signed up");
    signed_in(&state, StatusCode::CREATED, &id, &email)
}

/// Signs a user in.
#[utoipa::path(post, path = "/api/users/signin", tag = "auth", request_body = SignIn,
    responses(
        (status = 200, description = "Signed in: the `session` cookie is set", body = User,
            headers(("set-cookie" = String, description = "`session=…; path=/; samesite=lax; httponly` (and `secure` unless turned off)"))),
        (status = 400, description = "Every invalid field, or `Invalid credentials`", body = ErrorBody),
        (status = 429, description = "Too many failed sign-ins for this email or client address", body = ErrorBody),
    ))]
async fn signin(
    State(state): State<Arc<AuthState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let (email, password) = validate::signin(&body)?;
    let keys = throttle::keys(&email, &client_address(&headers, peer));
    if throttle::limited(&state.db, &state.throttle, &keys).await? {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-ins, try again later",
        ));
    }
    let user = if password.len() > MAX_SIGNIN_PASSWORD {
        None
    } else {
        let row = sqlx::query("SELECT id, password_hash FROM users WHERE email = $1")
            .bind(&email)
            .fetch_optional(state.db.reader())
            .await?;
        let (id, hash) = match row {
            Some(row) => (
                Some(row.try_get::<String, _>(0)?),
                Some(row.try_get::<String, _>(1)?),
            ),
            None => (None, None),
        };
        // An unknown email is verified against a dummy hash: the same time either way.
        let matched = state.passwords.verify(password, hash).await;
        id.filter(|_| matched)
    };
    let Some(id) = user else {
        throttle::record_failure(&state.db, &state.throttle, &keys).await?;
        return Err(ApiError::bad_request("Invalid credentials"));
    };
    throttle::clear_email(&state.db, &keys[0]).await?;
    signed_in(&state, StatusCode::OK, &id, &email)
}

/// The client's address: the last `X-Forwarded-For` entry (the one the gateway or the
/// Ingress controller in front appended; earlier ones are the client's to say), else the
/// peer.
fn client_address(headers: &HeaderMap, peer: SocketAddr) -> String {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|v| !v.is_empty())
        .map(|v| v.chars().take(64).collect())
        .unwrap_or_else(|| peer.ip().to_string())
}

/// Signs out: clears the `session` cookie.
#[utoipa::path(post, path = "/api/users/signout", tag = "auth",
    responses((status = 200, description = "Signed out", body = Empty,
        headers(("set-cookie" = String, description = "`session=; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT; httponly`")))))]
async fn signout(State(state): State<Arc<AuthState>>) -> Response {
    (
        StatusCode::OK,
        [(header::SET_COOKIE, state.sessions.clear_cookie())],
        axum::Json(json!({})),
    )
        .into_response()
}

/// Who is signed in.
#[utoipa::path(get, path = "/api/users/currentuser", tag = "auth",
    security((), ("session" = [])),
    responses((status = 200, description = "The session's user, or `null`", body = CurrentUserBody)))]
async fn current_user(CurrentUser(user): CurrentUser) -> Response {
    #[derive(serde::Serialize)]
    struct Answer<'a> {
        #[serde(rename = "currentUser")]
        current_user: Option<SessionUser<'a>>,
    }
    let current_user = user.as_deref().map(Claims::current_user);
    axum::Json(Answer { current_user }).into_response()
}
