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

/// Field validation for JSON objects.
pub mod fields {
    use super::ApiError;
    use serde_json::Value;

    /// The body must be a JSON object.
    pub fn object(body: &Value) -> Result<&serde_json::Map<String, Value>, ApiError> {
        body.as_object()
            .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))
    }

    /// A required, non-blank string of at most `max` characters, without NUL (which
    /// PostgreSQL cannot store in text: refused on every backend alike).
    pub fn text(body: &Value, field: &str, max: usize) -> Result<String, ApiError> {
        let obj = object(body)?;
        match obj.get(field) {
            None | Some(Value::Null) => Err(ApiError::field(field, format!("{field} is required"))),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(ApiError::field(field, format!("{field} must not be empty")))
            }
            Some(Value::String(s)) if s.chars().count() > max => Err(ApiError::field(
                field,
                format!("{field} must be at most {max} characters"),
            )),
            Some(Value::String(s)) if s.contains('\0') => Err(ApiError::field(
                field,
                format!("{field} must not contain NUL characters"),
            )),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(ApiError::field(field, format!("{field} must be a string"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_fields_refuse_nul() {
        let err = fields::text(&json!({"title": "a\u{0}b"}), "title", 10).expect_err("nul");
        assert_eq!(err.errors[0].field.as_deref(), Some("title"));
        assert_eq!(
            fields::text(&json!({"title": "a b"}), "title", 10),
            Ok("a b".to_string())
        );
    }

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

    #[test]
    fn text_field_rules() {
        let body = json!({"t": "ok", "e": "  ", "n": 3, "l": "xxxx"});
        assert_eq!(fields::text(&body, "t", 10), Ok("ok".to_string()));
        for (f, max) in [("e", 10), ("n", 10), ("l", 3), ("missing", 10)] {
            let err = fields::text(&body, f, max).expect_err(f);
            assert_eq!(err.errors[0].field.as_deref(), Some(f));
        }
        assert!(fields::text(&json!([1]), "t", 10).is_err());
    }
}
