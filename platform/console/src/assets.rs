//! The console's page: plain HTML, CSS and JavaScript served as they are (no build step),
//! under a strict Content-Security-Policy like the apps' clients.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::routes::Console;

/// Scripts, styles and requests from the console itself only; nothing inline.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

const ASSETS: [(&str, &str, &str); 3] = [
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_str!("../assets/index.html"),
    ),
    (
        "/console.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/console.js"),
    ),
    (
        "/console.css",
        "text/css; charset=utf-8",
        include_str!("../assets/console.css"),
    ),
];

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `/` and each asset.
pub fn routes() -> Router<Console> {
    let (_, html_type, html) = ASSETS[0];
    let mut router = Router::new().route("/", get(move || async move { asset(html_type, html) }));
    for (path, content_type, body) in ASSETS {
        router = router.route(path, get(move || async move { asset(content_type, body) }));
    }
    router
}

/// The console's OpenAPI document: its page and assets (the JSON API is the page's own).
pub fn openapi(service: &str) -> utoipa::openapi::OpenApi {
    use switchyard_kit::openapi::File;
    let (_, html_type, _) = ASSETS[0];
    let files = std::iter::once(File::text("/", html_type, "The console's page")).chain(
        ASSETS
            .iter()
            .map(|(path, content_type, _)| File::text(path, content_type, "An asset of the page")),
    );
    switchyard_kit::openapi::document(service, switchyard_kit::openapi::files(files))
}

/// The security headers of every answer.
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
