//! The local gateway: the stand-in for an Ingress controller on one machine.
//!
//! It reads the routing rules from the app's Ingress manifest (compiled in from the app
//! registry; `INGRESS_FILE` reads another), so local and cluster routing cannot drift, maps
//! each backend Service (`name:port`) to a local address, and forwards method, path, query,
//! headers and body, streaming the response (server-sent events included). A backend that
//! is down gives 502 with the JSON error body. Every path of the public port is proxied;
//! the gateway's own `/healthz`, `/readyz` and `/metrics` are on its ops port.

pub mod backends;
mod proxy;

use std::sync::Arc;

use switchyard_ingress::Router as IngressRouter;
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
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonConfig,
    /// The Ingress YAML text.
    pub ingress_yaml: String,
    /// The host whose rules apply (`INGRESS_HOST`); requests are routed by these rules
    /// whatever their Host header.
    pub host: String,
    pub backends: Backends,
}

impl Settings {
    /// Reads the settings beside `common`; `app` gives the defaults (`INGRESS_FILE`,
    /// `INGRESS_HOST` and `GATEWAY_BACKENDS` override them).
    pub fn from_env(env: &Env, common: CommonConfig, app: AppRoutes) -> Result<Self, ConfigError> {
        let ingress_yaml = match env.raw("INGRESS_FILE") {
            None => app.ingress_yaml,
            Some(path) => std::fs::read_to_string(&path).map_err(|e| ConfigError::Malformed {
                name: "INGRESS_FILE".into(),
                value: path.clone(),
                reason: e.to_string(),
            })?,
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
            host: env.parse_or("INGRESS_HOST", app.host)?,
            backends,
        })
    }

    /// The routing table, checked: every backend must have a local address.
    pub fn routes(&self) -> anyhow::Result<IngressRouter> {
        let router = switchyard_ingress::router_from_yaml(&self.ingress_yaml, &self.host)?;
        anyhow::ensure!(
            !router.locations().is_empty(),
            "the Ingress has no paths for host {}",
            self.host
        );
        Ok(router)
    }
}

/// Runs the gateway on `listeners` until `shutdown`.
pub async fn launch(
    settings: Settings,
    listeners: Listeners,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let routes = settings.routes()?;
    for location in routes.locations() {
        tracing::info!(
            path = %location.path,
            backend = %location.backend,
            to = %settings.backends.address_of(&location.backend),
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
        stack.ops_router(&shutdown),
        shutdown,
        settings.common.shutdown_grace,
    )
    .await
}
