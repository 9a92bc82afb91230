//! The blog's web client (port 3000 in its contract): the blog's single page, served from assets compiled into
//! the binary. The page talks to the same origin (the gateway or the Ingress): `GET /posts`,
//! `GET /posts/stream` (live updates), `POST /posts/create`, `POST /posts/:id/comments`.
//!
//! Every answer carries a Content-Security-Policy that allows only the page's own script
//! and stylesheet (no inline script or style), and only the assets below are served.

use axum::Router;
use switchyard_kit::page::{self, Asset};
use switchyard_kit::server::Listeners;
use switchyard_kit::{CommonConfig, HttpStack, Metrics, Shutdown};

/// The policy every answer carries.
pub const CONTENT_SECURITY_POLICY: &str = page::STRICT_POLICY;

/// The assets: path, content type, bytes.
pub const ASSETS: [Asset; 3] = [
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

/// The document of [`routes`]: the page and its assets.
pub fn openapi(service: &str) -> utoipa::openapi::OpenApi {
    page::openapi(service, &ASSETS, "The blog's page")
}

/// `/` (the page) and each asset.
pub fn routes() -> Router {
    page::routes(&ASSETS)
}

/// Runs the client on `listeners` until `shutdown`.
pub async fn launch(
    common: CommonConfig,
    listeners: Listeners,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let stack = HttpStack::new(&common, Metrics::new(&common.service));
    let router = page::with_security_headers(
        stack.wrap(routes()),
        axum::http::HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
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
