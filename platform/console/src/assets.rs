//! The console's page: plain HTML, CSS and JavaScript served as they are (no build step),
//! under the strict Content-Security-Policy of the apps' clients ([`switchyard_kit::page`]).

use axum::Router;
use switchyard_kit::page::{self, Asset};

use crate::routes::Console;

const ASSETS: [Asset; 3] = [
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

/// `/` and each asset.
pub fn routes() -> Router<Console> {
    page::routes(&ASSETS)
}

/// The console's OpenAPI document: its page and assets (the JSON API is the page's own).
pub fn openapi(service: &str) -> utoipa::openapi::OpenApi {
    page::openapi(service, &ASSETS, "The console's page")
}
