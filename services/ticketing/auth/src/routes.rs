//! `POST /api/users/signup`, `signin`, `signout` and `GET /api/users/currentuser`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sqlx::Row;
use switchyard_kit::clock::unix_millis;
use switchyard_kit::openapi::ErrorBody;
use switchyard_kit::{ApiError, ValidJson};
use switchyard_session::{Claims, CurrentUser, SessionUser};
use switchyard_ticketing_contract::http::{
    CurrentUser as CurrentUserBody, Empty, SignIn, SignUp, User,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AuthState;
use crate::password::HashError;
use crate::throttle::{self, Reservation, Rule};

/// Longest password read at sign-in: longer ones cannot have been signed up (the limit
/// there is 20 characters), and are refused before any hashing.
const MAX_SIGNIN_PASSWORD: usize = 1024;

pub(crate) fn router(state: AuthState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(signin))
        .routes(routes!(signout))
        .routes(routes!(current_user))
        // Behind an Arc: axum clones the state for every request.
        .with_state(Arc::new(state))
}

/// The answer to a request that must wait: 429 (too many attempts) or 503 (the hashing
/// queue full), with `Retry-After` in whole seconds.
fn try_again_later(status: StatusCode, message: &str, after: std::time::Duration) -> Response {
    let mut response = ApiError::new(status, message).into_response();
    let secs = after.as_secs().max(1);
    if let Ok(value) = header::HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// A hashing error as an answer: a full queue is 503 with `Retry-After`.
fn hashing_failed(e: HashError) -> Response {
    match e {
        HashError::Busy => try_again_later(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many sign-ins at once, try again shortly",
            std::time::Duration::from_secs(1),
        ),
        HashError::Failed(e) => ApiError::internal(e).into_response(),
    }
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
        axum::Json(User {
            id: id.to_string(),
            email: email.to_string(),
        }),
    )
        .into_response())
}

/// Creates a user and signs it in.
#[utoipa::path(post, path = "/api/users/signup", tag = "auth", request_body = SignUp,
    responses(
        (status = 201, description = "Signed up and in: the `session` cookie is set", body = User,
            headers(("set-cookie" = String, description = "`session=…; path=/; samesite=lax; httponly` (and `secure` unless turned off)"))),
        (status = 400, description = "Every invalid field (`Email must be valid`, `Password must be between 4 and 20 characters`), or `Email in use`", body = ErrorBody),
        (status = 429, description = "Too many sign-ups from this client address: try again after `Retry-After` seconds", body = ErrorBody,
            headers(("retry-after" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Too many passwords being hashed at once: try again after `Retry-After` seconds", body = ErrorBody,
            headers(("retry-after" = u64, description = "Seconds to wait"))),
    ))]
async fn signup(
    State(state): State<Arc<AuthState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ValidJson(SignUp { email, password }): ValidJson<SignUp>,
) -> Result<Response, ApiError> {
    let (email, password) = (email.as_str().to_string(), password.into_string());
    let client = throttle::client_address(&headers, peer, state.throttle.trusted_hops);
    let rule = Rule::Slowing {
        max: state.throttle.signups_per_client,
        window: throttle::SIGNUP_WINDOW,
        step: state.throttle.slowdown,
    };
    if let Reservation::Refused(after) =
        throttle::reserve(&state.db, &throttle::signup_key(&client), rule).await?
    {
        return Ok(try_again_later(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-ups, try again later",
            after,
        ));
    }
    let exists = sqlx::query("SELECT 1 FROM users WHERE email = $1")
        .bind(&email)
        .fetch_optional(state.db.reader())
        .await?
        .is_some();
    if exists {
        return Err(ApiError::bad_request("Email in use"));
    }
    let hash = match state.passwords.hash(password).await {
        Ok(hash) => hash,
        Err(e) => return Ok(hashing_failed(e)),
    };
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
        (status = 429, description = "Too many failed sign-ins for this email, or too many attempts from this client address: try again after `Retry-After` seconds", body = ErrorBody,
            headers(("retry-after" = u64, description = "Seconds to wait"))),
        (status = 503, description = "Too many passwords being checked at once: try again after `Retry-After` seconds", body = ErrorBody,
            headers(("retry-after" = u64, description = "Seconds to wait"))),
    ))]
async fn signin(
    State(state): State<Arc<AuthState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ValidJson(SignIn { email, password }): ValidJson<SignIn>,
) -> Result<Response, ApiError> {
    let (email, password) = (email.as_str().to_string(), password.into_string());
    let client = throttle::client_address(&headers, peer, state.throttle.trusted_hops);
    let (email_key, client_key) = throttle::signin_keys(&email, &client);
    let config = &state.throttle;
    // Each attempt reserves its place in both budgets before any hashing: however many
    // arrive at once, at most the budget's worth get a password verdict.
    let email_rule = Rule::Hard {
        max: config.max_failures,
        window: config.window,
    };
    let client_rule = Rule::Slowing {
        max: config.client_attempts,
        window: config.window,
        step: config.slowdown,
    };
    if let Reservation::Refused(after) =
        throttle::reserve(&state.db, &client_key, client_rule).await?
    {
        return Ok(try_again_later(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-ins from here, try again later",
            after,
        ));
    }
    if let Reservation::Refused(after) =
        throttle::reserve(&state.db, &email_key, email_rule).await?
    {
        return Ok(try_again_later(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-ins, try again later",
            after,
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
        match state.passwords.verify(password, hash).await {
            Ok(matched) => id.filter(|_| matched),
            Err(e) => return Ok(hashing_failed(e)),
        }
    };
    // A failure keeps its place in both budgets; a success gives them back.
    let Some(id) = user else {
        return Err(ApiError::bad_request("Invalid credentials"));
    };
    // A success costs nothing; failures keep counting in their window (a reset here
    // would hand a fresh budget to the wrong guesses racing it).
    throttle::give_back(&state.db, &email_key).await?;
    throttle::give_back(&state.db, &client_key).await?;
    signed_in(&state, StatusCode::OK, &id, &email)
}

/// Signs out: clears the `session` cookie.
#[utoipa::path(post, path = "/api/users/signout", tag = "auth",
    responses((status = 200, description = "Signed out", body = Empty,
        headers(("set-cookie" = String, description = "`session=; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT; httponly`")))))]
async fn signout(State(state): State<Arc<AuthState>>) -> Response {
    (
        StatusCode::OK,
        [(header::SET_COOKIE, state.sessions.clear_cookie())],
        axum::Json(Empty {}),
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
