//! The one JSON error body of every 4xx and 5xx answer:
//! `{"errors":[{"message":"...","field":"..."}]}` (`field` only for a field's validation
//! error), and the JSON body extractor that answers with it.

use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

/// One error in the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ErrorItem {
    /// What is wrong, for people.
    pub message: String,
    /// The request field it is about, for a field's validation error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error answer: a status and a list of errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub errors: Vec<ErrorItem>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    errors: &'a [ErrorItem],
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            errors: vec![ErrorItem {
                message: message.into(),
                field: None,
            }],
        }
    }

    /// 400 about the request as a whole.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 400 about one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            errors: vec![ErrorItem {
                message: message.into(),
                field: Some(field.into()),
            }],
        }
    }

    /// 400 listing every failing field at once.
    pub fn fields<I, F, M>(errors: I) -> Self
    where
        I: IntoIterator<Item = (F, M)>,
        F: Into<String>,
        M: Into<String>,
    {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            errors: errors
                .into_iter()
                .map(|(field, message)| ErrorItem {
                    message: message.into(),
                    field: Some(field.into()),
                })
                .collect(),
        }
    }

    /// 401 `Not authorized`: the route needs a signed-in user, or another user's.
    pub fn unauthorized() -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "Not authorized")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 503: a dependency is unavailable; the caller may retry.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// 500: logs the cause, answers a generic message (internals are never leaked).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    /// The JSON body bytes.
    pub fn body(&self) -> Bytes {
        Bytes::from(
            serde_json::to_vec(&ErrorBody {
                errors: &self.errors,
            })
            .unwrap_or_default(),
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let messages: Vec<&str> = self.errors.iter().map(|e| e.message.as_str()).collect();
        write!(f, "{}: {}", self.status, messages.join("; "))
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.body(),
        )
            .into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&err) {
            tracing::warn!(error = %err, "database unavailable");
            return ApiError::unavailable("database unavailable, try again");
        }
        ApiError::internal(err)
    }
}

/// A request body that must be JSON (`content-type: application/json` or `*+json`).
///
/// Rejections are [`ApiError`]s: 400 for a wrong content type or malformed JSON (invalid
/// UTF-8, syntax errors, nesting deeper than 128 levels), 413 past the body limit.
#[derive(Debug, Clone)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(req.headers()) {
            return Err(ApiError::bad_request(
                "expected a JSON body with content-type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(status, "request body too large")
            } else {
                ApiError::bad_request(format!("could not read the request body: {rejection}"))
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses JSON bytes, answering 400 with the parser's message.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

fn is_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// A request body parsed into its type `T` (declared with
/// [`switchyard_wire::request_body!`]): a handler taking `ValidJson<T>` only runs with a
/// body that keeps every rule of `T`.
///
/// Rejections are [`JsonBody`]'s, then 400 listing every failing field (or that the body
/// is not a JSON object).
#[derive(Debug, Clone)]
pub struct ValidJson<T>(pub T);

impl<S: Send + Sync, T: switchyard_wire::RequestBody> FromRequest<S> for ValidJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let JsonBody(body) = JsonBody::from_request(req, state).await?;
        T::from_json(&body).map(ValidJson).map_err(ApiError::from)
    }
}

impl From<switchyard_wire::BodyError> for ApiError {
    fn from(err: switchyard_wire::BodyError) -> Self {
        match err {
            switchyard_wire::BodyError::NotAnObject => {
                ApiError::bad_request("the body must be a JSON object")
            }
            switchyard_wire::BodyError::Fields(fields) => ApiError::fields(fields),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn body_has_field_only_when_set() {
        let e = ApiError::field("title", "title is required");
        let v: Value = serde_json::from_slice(&e.body()).expect("json");
        assert_eq!(
            v,
            json!({"errors": [{"message": "title is required", "field": "title"}]})
        );
        let e = ApiError::bad_request("nope");
        let v: Value = serde_json::from_slice(&e.body()).expect("json");
        assert_eq!(v, json!({"errors": [{"message": "nope"}]}));
    }

    #[test]
    fn internal_errors_do_not_leak() {
        let e = ApiError::internal("secret path /var/db");
        assert!(!String::from_utf8_lossy(&e.body()).contains("secret"));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
