//! The ticketing app's web client, "GitTix" (`client-srv`, port 3000 in its contract).
//!
//! One HTML shell, served for every page path (`/`, `/auth/signup`, `/auth/signin`,
//! `/auth/signout`, `/tickets/new`, `/tickets/:id`, `/orders`, `/orders/:id`, and any other
//! path without a file extension, so deep links and reloads work), plus its assets compiled
//! into the binary: `/app.js`, `/styles.css`, and `/config.json` (the settings the page needs,
//! so no inline script is ever required). The page routes on the client with the History API
//! and talks to the same origin (the gateway or the Ingress sends `/api/...` to the services);
//! the session is only the `httponly` cookie, which the page never reads.
//!
//! Every answer carries a strict Content-Security-Policy (no inline script or style, nothing
//! from another origin), except that with a Stripe publishable key configured the policy also
//! allows Stripe.js from [`STRIPE_JS_ORIGIN`] (scripts and frames) and its API (connections),
//! which the card form needs. Unknown asset paths (`/nope.js`) and `/api/...` paths that reach
//! the client answer 404 with the usual JSON error body.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use switchyard_kit::server::Listeners;
use switchyard_kit::{ApiError, CommonConfig, ConfigError, Env, HttpStack, Metrics, Shutdown};

/// The environment variable holding the Stripe publishable key (optional).
pub const STRIPE_PUBLISHABLE_KEY_VAR: &str = "STRIPE_PUBLISHABLE_KEY";

/// Where Stripe.js is loaded from when a publishable key is configured.
pub const STRIPE_JS_URL: &str = "https://js.stripe.com/v3/";

/// The origin of Stripe.js: allowed as a script and frame source only with a key.
pub const STRIPE_JS_ORIGIN: &str = "https://js.stripe.com";

/// The origin Stripe.js sends card details to (to create a token): allowed as a connection
/// target only with a key.
pub const STRIPE_API_ORIGIN: &str = "https://api.stripe.com";

/// The page shell, served for every page path.
pub const INDEX_HTML: &str = include_str!("../assets/index.html");
/// The page's script.
pub const APP_JS: &str = include_str!("../assets/app.js");
/// The page's stylesheet.
pub const STYLES_CSS: &str = include_str!("../assets/styles.css");

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JSON: &str = "application/json";

/// The page paths of the client (the shell answers any other extension-less path too).
pub const PAGE_PATHS: [&str; 8] = [
    "/",
    "/auth/signup",
    "/auth/signin",
    "/auth/signout",
    "/tickets/new",
    "/tickets/:id",
    "/orders",
    "/orders/:id",
];

/// The client's own settings (besides the common ones).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSettings {
    /// Stripe's publishable key (`STRIPE_PUBLISHABLE_KEY`, `pk_test_...` or `pk_live_...`).
    /// Without it the order page offers the test payment provider's card tokens
    /// (`tok_visa`, `tok_chargeDeclined`) instead of Stripe's card form.
    pub stripe_publishable_key: Option<String>,
}

impl ClientSettings {
    /// Reads `STRIPE_PUBLISHABLE_KEY` (optional). A value that is not a publishable key is
    /// refused, above all a secret key (`sk_...`, `rk_...`), which must never reach a browser.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let stripe_publishable_key = match env.raw(STRIPE_PUBLISHABLE_KEY_VAR) {
            None => None,
            Some(raw) => Some(check_publishable_key(raw.trim())?.to_string()),
        };
        Ok(ClientSettings {
            stripe_publishable_key,
        })
    }
}

fn check_publishable_key(key: &str) -> Result<&str, ConfigError> {
    let malformed = |reason: &str| ConfigError::Malformed {
        name: STRIPE_PUBLISHABLE_KEY_VAR.to_string(),
        // Never echo what may be a secret key into logs.
        value: if key.starts_with("pk_") {
            key.to_string()
        } else {
            "<redacted>".to_string()
        },
        reason: reason.to_string(),
    };
    if key.starts_with("sk_") || key.starts_with("rk_") {
        return Err(malformed(
            "this is a secret key; the browser must only get the publishable key (pk_...)",
        ));
    }
    if !key.starts_with("pk_") {
        return Err(malformed("a Stripe publishable key starts with pk_"));
    }
    if key.len() > 256 || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(malformed(
            "a Stripe publishable key has only letters, digits and underscores",
        ));
    }
    Ok(key)
}

/// The Content-Security-Policy of every answer: only the page's own script, stylesheet and
/// API, no inline script or style; with a Stripe key, Stripe.js and its frames and API too.
pub fn content_security_policy(settings: &ClientSettings) -> String {
    let (script, frame, connect) = if settings.stripe_publishable_key.is_some() {
        (
            format!("'self' {STRIPE_JS_ORIGIN}"),
            STRIPE_JS_ORIGIN.to_string(),
            format!("'self' {STRIPE_API_ORIGIN}"),
        )
    } else {
        (
            "'self'".to_string(),
            "'none'".to_string(),
            "'self'".to_string(),
        )
    };
    format!(
        "default-src 'self'; script-src {script}; style-src 'self'; img-src 'self' data:; \
         font-src 'self'; connect-src {connect}; frame-src {frame}; object-src 'none'; \
         base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )
}

/// The shape of [`config_json`], for the document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct PageSettings {
    /// Stripe's publishable key (`STRIPE_PUBLISHABLE_KEY`), or `null` when payments are
    /// simulated (the page then offers Stripe's test tokens instead of a card form).
    #[schema(rename = "stripePublishableKey", required = true)]
    stripe_publishable_key: Option<String>,
}

/// The body of `/config.json`: `{"stripePublishableKey": "pk_..." | null}`.
pub fn config_json(settings: &ClientSettings) -> String {
    serde_json::json!({ "stripePublishableKey": settings.stripe_publishable_key }).to_string()
}

use switchyard_kit::page::asset;

fn shell() -> Response {
    asset(HTML, INDEX_HTML)
}

/// Whether `path` is a page of the client (answered with the shell): not an `/api/...` path
/// (those belong to the services; one that reaches the client is a 404, not a page), and its
/// last segment has no file extension (`/nope.js` is a missing asset, not a page).
pub fn is_page_path(path: &str) -> bool {
    if path == "/api" || path.starts_with("/api/") {
        return false;
    }
    let last = path.rsplit('/').next().unwrap_or("");
    !last.contains('.')
}

async fn page_or_not_found(request: Request) -> Response {
    let method = request.method();
    if (method == Method::GET || method == Method::HEAD) && is_page_path(request.uri().path()) {
        shell()
    } else {
        ApiError::not_found("Not Found").into_response()
    }
}

/// The document of [`routes`]: the page, its assets, its settings and every other path,
/// which is a page of the single-page app or a 404.
pub fn openapi(service: &str) -> utoipa::openapi::OpenApi {
    use switchyard_kit::openapi::File;
    use utoipa::PartialSchema;
    use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn, PathItemBuilder};
    use utoipa::openapi::{ContentBuilder, HttpMethod, Ref, Required, ResponseBuilder};
    let mut doc = switchyard_kit::openapi::files([
        File::text("/", HTML, "GitTix's page"),
        File::text("/index.html", HTML, "GitTix's page"),
        File::text("/app.js", JAVASCRIPT, "The page's script"),
        File::text("/styles.css", CSS, "The page's stylesheet"),
        File {
            path: "/config.json",
            content_type: JSON,
            description: "The page's settings",
            schema: PageSettings::schema(),
        },
    ]);
    let error = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build();
    let page = OperationBuilder::new()
        .summary(Some("A page of the app (its path is read by the page's script)"))
        .parameter(
            ParameterBuilder::new()
                .name("path")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("Any path: one whose last segment has no `.` and that is not under `/api` is a page"))
                .schema(Some(String::schema())),
        )
        .response(
            "200",
            ResponseBuilder::new()
                .description("The page")
                .content(HTML, ContentBuilder::new().schema(Some(String::schema())).build())
                .build(),
        )
        .response(
            "404",
            ResponseBuilder::new()
                .description("A missing asset, or an `/api` path no service answered")
                .content(JSON, error)
                .build(),
        )
        .build();
    doc.paths.paths.insert(
        "/{path}".to_string(),
        PathItemBuilder::new()
            .operation(HttpMethod::Get, page)
            .build(),
    );
    switchyard_kit::openapi::document(service, doc)
}

/// The client's routes (the security headers are added around the whole stack by
/// [`launch`]; see [`security_headers`] to embed them elsewhere).
pub fn routes(settings: &ClientSettings) -> Router {
    let config = axum::body::Bytes::from(config_json(settings));
    Router::new()
        .route("/", get(|| async { shell() }))
        .route("/index.html", get(|| async { shell() }))
        .route("/app.js", get(|| async { asset(JAVASCRIPT, APP_JS) }))
        .route("/styles.css", get(|| async { asset(CSS, STYLES_CSS) }))
        .route(
            "/config.json",
            get(move || {
                let config = config.clone();
                async move {
                    (
                        [
                            (header::CONTENT_TYPE, JSON),
                            (header::CACHE_CONTROL, "no-store"),
                        ],
                        config,
                    )
                        .into_response()
                }
            }),
        )
        .route("/{*path}", axum::routing::any(page_or_not_found))
}

/// Adds the security headers (the policy of `settings`, `nosniff`, no referrer, no framing)
/// to every answer of `router`.
pub fn security_headers(router: Router, settings: &ClientSettings) -> Router {
    let csp = HeaderValue::from_str(&content_security_policy(settings))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
    switchyard_kit::page::with_security_headers(router, csp)
}

/// Runs the client on `listeners` until `shutdown`.
pub async fn launch(
    common: CommonConfig,
    settings: ClientSettings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let stack = HttpStack::new(&common, Metrics::new(&common.service));
    let router = security_headers(stack.wrap(routes(&settings)), &settings);
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
    run: |start| {
        let common = start.common.clone();
        start
            .run(move |settings, listeners, shutdown| launch(common, settings, listeners, shutdown))
    },
};

impl switchyard_bus_client::StartSettings for ClientSettings {
    fn from_start(start: &switchyard_bus_client::Start) -> Result<Self, ConfigError> {
        ClientSettings::from_env(&start.env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<ClientSettings, ConfigError> {
        ClientSettings::from_env(&Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn the_key_is_optional() {
        assert_eq!(settings(&[]).ok(), Some(ClientSettings::default()));
        assert_eq!(
            settings(&[(STRIPE_PUBLISHABLE_KEY_VAR, "  ")]).ok(),
            Some(ClientSettings::default())
        );
        assert_eq!(
            settings(&[(STRIPE_PUBLISHABLE_KEY_VAR, " pk_test_abc123 ")])
                .ok()
                .and_then(|s| s.stripe_publishable_key),
            Some("pk_test_abc123".to_string())
        );
    }

    #[test]
    fn secret_and_odd_keys_are_refused_without_echoing_them() {
        for bad in ["sk_test_secret", "rk_live_secret", "hello", "pk_test_\"x"] {
            let err = settings(&[(STRIPE_PUBLISHABLE_KEY_VAR, bad)]).expect_err(bad);
            let text = err.to_string();
            assert!(text.contains(STRIPE_PUBLISHABLE_KEY_VAR), "{text}");
            if !bad.starts_with("pk_") {
                assert!(!text.contains(bad), "{text}");
            }
        }
    }

    #[test]
    fn the_policy_allows_stripe_only_with_a_key() {
        let without = content_security_policy(&ClientSettings::default());
        assert!(!without.contains("stripe"), "{without}");
        assert!(without.contains("script-src 'self';"), "{without}");
        let with = content_security_policy(&ClientSettings {
            stripe_publishable_key: Some("pk_test_1".into()),
        });
        assert!(
            with.contains("script-src 'self' https://js.stripe.com;"),
            "{with}"
        );
        assert!(with.contains("frame-src https://js.stripe.com;"), "{with}");
        for policy in [&without, &with] {
            assert!(!policy.contains("unsafe"), "{policy}");
            assert!(policy.starts_with("default-src 'self';"), "{policy}");
            for part in [
                "style-src 'self';",
                "object-src 'none';",
                "base-uri 'none';",
                "frame-ancestors 'none';",
                "form-action 'self'",
            ] {
                assert!(policy.contains(part), "{part} in {policy}");
            }
        }
    }

    #[test]
    fn page_paths() {
        for page in [
            "/",
            "/auth/signup",
            "/tickets/new",
            "/tickets/5f1b2c3d4e5f6a7b8c9d0e1f",
            "/orders/",
            "/something/else",
        ] {
            assert!(is_page_path(page), "{page}");
        }
        for not_page in [
            "/nope.js",
            "/favicon.ico",
            "/a/b.map",
            "/api",
            "/api/users/x",
        ] {
            assert!(!is_page_path(not_page), "{not_page}");
        }
    }

    #[test]
    fn config_json_reflects_the_key() {
        assert_eq!(
            config_json(&ClientSettings::default()),
            r#"{"stripePublishableKey":null}"#
        );
        assert_eq!(
            config_json(&ClientSettings {
                stripe_publishable_key: Some("pk_test_1".into())
            }),
            r#"{"stripePublishableKey":"pk_test_1"}"#
        );
    }
}
