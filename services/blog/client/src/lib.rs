//! The blog's web client (port 3000 in its contract): the blog's single page, served from assets compiled into
//! the binary. The page talks to the same origin (the gateway or the Ingress): `GET /posts`,
//! `GET /posts/stream` (live updates), `POST /posts/create`, `POST /posts/:id/comments`.
//!
//! Every answer carries a Content-Security-Policy that allows only the page's own script
//! and stylesheet (no inline script or style), and only the assets below are served.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use switchyard_kit::server::Listeners;
use switchyard_kit::{CommonConfig, HttpStack, Metrics, Shutdown};

/// The policy every answer carries.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The assets: path, content type, bytes.
pub const ASSETS: [(&str, &str, &str); 3] = [
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_str!("../assets/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/app.js"),
    ),
    (
        "/styles.css",
        "text/css; charset=utf-8",
        include_str!("../assets/styles.css"),
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

/// The document of [`routes`]: `/` and each asset.
pub fn openapi(service: &str) -> utoipa::openapi::OpenApi {
    use switchyard_kit::openapi::File;
    let (_, html_type, _) = ASSETS[0];
    let files = std::iter::once(File::text("/", html_type, "The blog's page")).chain(
        ASSETS
            .iter()
            .map(|(path, content_type, _)| File::text(path, content_type, "An asset of the page")),
    );
    switchyard_kit::openapi::document(service, switchyard_kit::openapi::files(files))
}

/// The client's routes (the security headers are added around the whole stack).
pub fn routes() -> Router {
    let (_, html_type, html) = ASSETS[0];
    let mut router = Router::new().route("/", get(move || async move { asset(html_type, html) }));
    for (path, content_type, body) in ASSETS {
        router = router.route(path, get(move || async move { asset(content_type, body) }));
    }
    router
}

async fn security_headers(mut response: Response) -> Response {
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

/// Runs the client on `listeners` until `shutdown`.
pub async fn launch(
    common: CommonConfig,
    listeners: Listeners,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let stack = HttpStack::new(&common, Metrics::new(&common.service));
    let router = stack
        .wrap(routes())
        .layer(axum::middleware::map_response(security_headers));
    switchyard_kit::serve(
        listeners,
        router,
        stack.ops_router_with(
            &shutdown,
            switchyard_kit::openapi::route(&openapi(&common.service)),
        ),
        shutdown,
        common.shutdown_grace,
    )
    .await
}

/// The service as the binary runs it (`serve`, `migrate`, `up`), registered in the registry.
pub static ENTRY: switchyard_bus_client::ServiceEntry = switchyard_bus_client::ServiceEntry {
    name: "client",
    migrations: &[],
    run: |start| start.run(launch),
};
