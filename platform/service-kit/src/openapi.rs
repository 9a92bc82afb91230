//! The OpenAPI document each service serves at `/openapi.json` on its ops listener.
//!
//! Services describe their routes with `#[utoipa::path]` and build their routers with
//! `utoipa_axum`'s `OpenApiRouter`, so a route cannot be served without being described.
//! [`document`] adds what the shared HTTP stack answers on every route (the JSON error
//! body for a body that is not JSON or too large) and the session cookie's security
//! scheme, so that the document states every status a client can get.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use utoipa::openapi::info::License;
use utoipa::openapi::path::{Operation, OperationBuilder, PathItemBuilder};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HttpMethod, OpenApi, OpenApiBuilder, PathsBuilder, Ref, RefOr, ResponseBuilder,
    Schema,
};
use utoipa::{PartialSchema, ToSchema};

use crate::error::ErrorItem;

/// The name of the security scheme of a signed-in request: the `session` cookie.
pub const SESSION: &str = "session";

/// The body of every 4xx and 5xx answer: `{"errors":[{"message", "field"?}]}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    #[schema(min_items = 1)]
    errors: Vec<ErrorItem>,
}

/// Completes a service's document: its title and version, the error answers the HTTP
/// stack gives on every route that takes a JSON body (400 not JSON, 413 too large), the
/// error schema, and the session scheme when an operation requires it.
pub fn document(service: &str, mut doc: OpenApi) -> OpenApi {
    doc.info.title = format!("switchyard {service}");
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    // Not the defaults utoipa fills in from its own crate.
    doc.info.contact = None;
    doc.info.license = Some(License::new(env!("CARGO_PKG_LICENSE")));
    doc.info.description = Some(format!(
        "The public routes of the `{service}` service. Every 4xx and 5xx answer has the \
         `ErrorBody` JSON body."
    ));
    let mut uses_session = false;
    for item in doc.paths.paths.values_mut() {
        for operation in operations(item) {
            uses_session |= operation
                .security
                .iter()
                .flatten()
                .any(|s| serde_json::to_value(s).is_ok_and(|v| v.get(SESSION).is_some()));
            if operation.request_body.is_some() {
                add_error(operation, 400, "The body is not JSON, or is invalid");
                add_error(
                    operation,
                    413,
                    "The body is larger than the service accepts",
                );
            }
        }
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components
        .schemas
        .entry(ErrorBody::name().to_string())
        .or_insert_with(ErrorBody::schema);
    components
        .schemas
        .entry(ErrorItem::name().to_string())
        .or_insert_with(ErrorItem::schema);
    if uses_session {
        components.add_security_scheme(
            SESSION,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                SESSION,
                "base64 of {\"jwt\": <HS256 JWT of {id, email, iat}>}, set by auth's signup and signin",
            ))),
        );
    }
    doc
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
    ]
    .into_iter()
    .flatten()
}

fn add_error(operation: &mut Operation, status: u16, description: &str) {
    operation
        .responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                            .build(),
                    )
                    .build(),
            )
        });
}

/// A file served as it is: its path, content type, description and body schema
/// ([`File::text`] for a page, script or stylesheet).
pub struct File<'a> {
    pub path: &'a str,
    pub content_type: &'a str,
    pub description: &'a str,
    pub schema: RefOr<Schema>,
}

impl<'a> File<'a> {
    /// A text file (a page, a script, a stylesheet).
    pub fn text(path: &'a str, content_type: &'a str, description: &'a str) -> Self {
        File {
            path,
            content_type,
            description,
            schema: String::schema(),
        }
    }
}

/// The document of routes that answer `GET` with fixed files (a web client's page, its
/// assets and settings).
pub fn files<'a>(files: impl IntoIterator<Item = File<'a>>) -> OpenApi {
    let mut paths = PathsBuilder::new();
    for File {
        path,
        content_type,
        description,
        schema,
    } in files
    {
        paths = paths.path(
            path,
            PathItemBuilder::new()
                .operation(
                    HttpMethod::Get,
                    OperationBuilder::new()
                        .summary(Some(description))
                        .response(
                            "200",
                            ResponseBuilder::new()
                                .description(description)
                                .content(
                                    content_type,
                                    ContentBuilder::new().schema(Some(schema)).build(),
                                )
                                .build(),
                        )
                        .build(),
                )
                .build(),
        );
    }
    OpenApiBuilder::new().paths(paths).build()
}

/// `GET /openapi.json`, for the ops listener: the document, serialised once.
pub fn route(doc: &OpenApi) -> Router {
    let bytes = Bytes::from(doc.to_pretty_json().unwrap_or_else(|e| {
        tracing::error!(error = %e, "the OpenAPI document could not be serialised");
        "{}".to_string()
    }));
    Router::new().route(
        "/openapi.json",
        get(move || {
            let bytes = bytes.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], bytes).into_response() }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::openapi::request_body::RequestBodyBuilder;

    #[test]
    fn operations_with_a_body_document_the_stack_errors() {
        let doc = OpenApiBuilder::new()
            .paths(
                PathsBuilder::new()
                    .path(
                        "/things",
                        PathItemBuilder::new()
                            .operation(
                                HttpMethod::Post,
                                OperationBuilder::new()
                                    .request_body(Some(RequestBodyBuilder::new().build()))
                                    .build(),
                            )
                            .operation(HttpMethod::Get, OperationBuilder::new().build())
                            .build(),
                    )
                    .build(),
            )
            .build();
        let doc = document("things", doc);
        let json = serde_json::to_value(&doc).expect("serialises");
        let post = &json["paths"]["/things"]["post"]["responses"];
        assert_eq!(
            post["400"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
        assert!(post.get("413").is_some());
        assert!(
            json["paths"]["/things"]["get"]["responses"]
                .get("400")
                .is_none()
        );
        assert!(json["components"]["schemas"].get("ErrorBody").is_some());
        assert!(json["components"]["schemas"].get("ErrorItem").is_some());
        assert_eq!(json["info"]["title"], "switchyard things");
    }
}
