//! A page served as it is: plain HTML, CSS and JavaScript (no build step), every answer
//! with the security headers, as the apps' clients and the console serve theirs.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Scripts, styles and requests from the page's own origin only; nothing inline.
pub const STRICT_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// A file of the page: its path, its content type and its text.
pub type Asset = (&'static str, &'static str, &'static str);

/// `body` as `content_type`, revalidated at each use (`no-cache`).
pub fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `/` (the first asset: the HTML) and each asset at its path.
pub fn routes<S: Clone + Send + Sync + 'static>(assets: &'static [Asset]) -> Router<S> {
    let mut router = Router::new();
    if let Some(&(_, html_type, html)) = assets.first() {
        router = router.route("/", get(move || async move { asset(html_type, html) }));
    }
    for &(path, content_type, body) in assets {
        router = router.route(path, get(move || async move { asset(content_type, body) }));
    }
    router
}

/// The OpenAPI document of [`routes`]: the page (`page` describes it) and its assets.
pub fn openapi(service: &str, assets: &'static [Asset], page: &str) -> utoipa::openapi::OpenApi {
    use crate::openapi::File;
    let html_type = assets.first().map_or("text/html; charset=utf-8", |a| a.1);
    let files = std::iter::once(File::text("/", html_type, page)).chain(
        assets
            .iter()
            .map(|(path, content_type, _)| File::text(path, content_type, "An asset of the page")),
    );
    crate::openapi::document(service, crate::openapi::files(files))
}

/// `router` with the security headers on every answer: `policy` as its
/// Content-Security-Policy, `nosniff`, no referrer, no framing.
pub fn with_security_headers(router: Router, policy: HeaderValue) -> Router {
    router.layer(axum::middleware::map_response(
        move |mut response: Response| {
            let policy = policy.clone();
            async move {
                let headers = response.headers_mut();
                headers.insert(header::CONTENT_SECURITY_POLICY, policy);
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
        },
    ))
}
