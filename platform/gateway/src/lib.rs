//! The local gateway: the stand-in for an Ingress controller on one machine.
//!
//! It reads the routing rules from the app's Ingress manifest (compiled in from the app
//! registry; `ROUTES_FILE`, or its older name `INGRESS_FILE`, reads another), so local and
//! cluster routing cannot drift. The file may hold the Ingress or the Gateway API
//! HTTPRoutes (`infra/k8s/<app>/gateway-api/httproutes.yaml`): `ROUTES_KIND` is `ingress`,
//! `httproute` or `auto` (the default: the Ingress if the file has one, else its
//! HTTPRoutes); both give the same table for the app's paths. It maps
//! each backend Service (`name:port`) to a local address, and forwards method, path, query,
//! headers and body, streaming the response (server-sent events included). A backend run
//! as several replicas gets its requests in turn, a replica that refuses connections is
//! passed over for a while ([`proxy`]). A backend that is down gives 502 with the JSON
//! error body. Every path of the public port is proxied;
//! the gateway's own `/healthz`, `/readyz` and `/metrics` are on its ops port.

pub mod backends;
mod proxy;

use std::sync::Arc;

use switchyard_ingress::{Router as IngressRouter, RoutesKind};
use switchyard_kit::server::Listeners;
use switchyard_kit::{CommonConfig, ConfigError, Env, HttpStack, Metrics, Shutdown};

pub use backends::Backends;

/// What the app gives the gateway: its Ingress, its host and where its backends run here.
#[derive(Debug, Clone)]
pub struct AppRoutes {
    /// The Ingress YAML shipped with the app.
    pub ingress_yaml: String,
    /// The host whose rules apply.
    pub host: String,
    /// Each backend Service's local address.
    pub backends: Backends,
    /// The app's AsyncAPI document, served on the ops port at `/asyncapi.json`.
    pub asyncapi: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonConfig,
    /// The routing YAML text: Ingress or HTTPRoute objects.
    pub ingress_yaml: String,
    /// Which objects of it to read (`ROUTES_KIND`); `None` detects it
    /// ([`RoutesKind::detect`]).
    pub kind: Option<RoutesKind>,
    /// The host whose rules apply (`INGRESS_HOST`); requests are routed by these rules
    /// whatever their Host header.
    pub host: String,
    pub backends: Backends,
    /// The app's AsyncAPI document (JSON), served on the ops port at `/asyncapi.json`.
    pub asyncapi: Option<String>,
}

impl Settings {
    /// Reads the settings beside `common`; `app` gives the defaults (`ROUTES_FILE` or
    /// `INGRESS_FILE`, `ROUTES_KIND`, `INGRESS_HOST` and `GATEWAY_BACKENDS` override them).
    pub fn from_env(env: &Env, common: CommonConfig, app: AppRoutes) -> Result<Self, ConfigError> {
        let file = ["ROUTES_FILE", "INGRESS_FILE"]
            .into_iter()
            .find_map(|name| env.raw(name).map(|path| (name, path)));
        let ingress_yaml = match file {
            None => app.ingress_yaml,
            Some((name, path)) => {
                std::fs::read_to_string(&path).map_err(|e| ConfigError::Malformed {
                    name: name.into(),
                    value: path.clone(),
                    reason: e.to_string(),
                })?
            }
        };
        let kind = match env.raw("ROUTES_KIND") {
            None => None,
            Some(k) if k.trim().eq_ignore_ascii_case("auto") => None,
            Some(k) => Some(RoutesKind::parse(&k).ok_or_else(|| ConfigError::Malformed {
                name: "ROUTES_KIND".into(),
                value: k.clone(),
                reason: "expected ingress, httproute or auto".into(),
            })?),
        };
        let backends = match env.raw("GATEWAY_BACKENDS") {
            None => app.backends,
            Some(spec) => Backends::parse(&spec).map_err(|reason| ConfigError::Malformed {
                name: "GATEWAY_BACKENDS".into(),
                value: spec.clone(),
                reason,
            })?,
        };
        Ok(Settings {
            common,
            ingress_yaml,
            kind,
            host: env.parse_or("INGRESS_HOST", app.host)?,
            backends,
            asyncapi: app.asyncapi,
        })
    }

    /// The routing table, checked: every backend must have a local address.
    pub fn routes(&self) -> anyhow::Result<IngressRouter> {
        let kind = match self.kind {
            Some(kind) => kind,
            None => RoutesKind::detect(&self.ingress_yaml)?,
        };
        let router = switchyard_ingress::router_from_yaml_as(&self.ingress_yaml, &self.host, kind)?;
        anyhow::ensure!(
            !router.locations().is_empty(),
            "the {kind} has no paths for host {}",
            self.host
        );
        Ok(router)
    }
}

/// The ops port's documents: the app's AsyncAPI at `/asyncapi.json`, when it has one.
fn documents(asyncapi: Option<String>) -> axum::Router {
    let Some(asyncapi) = asyncapi else {
        return axum::Router::new();
    };
    let body = axum::body::Bytes::from(asyncapi);
    axum::Router::new().route(
        "/asyncapi.json",
        axum::routing::get(move || {
            let body = body.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    body,
                )
            }
        }),
    )
}

/// Runs the gateway on `listeners` until `shutdown`.
pub async fn launch(
    settings: Settings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let routes = settings.routes()?;
    tracing::info!(kind = %routes.kind(), host = %routes.host(), "routing table");
    for location in routes.locations() {
        tracing::info!(
            path = %location.path,
            backend = %location.backend,
            to = %settings.backends.addresses_of(&location.backend).join(" | "),
            "route"
        );
    }
    let metrics = Metrics::new(&settings.common.service);
    let proxy = proxy::Proxy::new(routes, settings.backends.clone());
    // Proxied requests only get a request id (the backend behind applies the rest of the
    // service stack), so the gateway adds little to them.
    let stack = HttpStack::new(&settings.common, metrics);
    switchyard_kit::serve(
        listeners,
        proxy::router(Arc::new(proxy)),
        stack.ops_router_with(&shutdown, documents(settings.asyncapi)),
        shutdown,
        settings.common.shutdown_grace,
    )
    .await
}
