//! The local gateway: the stand-in for ingress-nginx on one machine.
//!
//! It reads the routing rules from the project's Ingress manifest
//! (`infra/k8s/base/ingress-srv.yaml`, compiled in; `INGRESS_FILE` reads another), so local
//! and cluster routing cannot drift, maps each backend Service (`name:port`) to a local
//! address, and forwards method, path, query, headers and body, streaming the response
//! (server-sent events included). A backend that is down gives 502 with the JSON error body.

pub mod backends;
mod proxy;

use std::sync::Arc;

use switchyard_ingress::Router as IngressRouter;
use switchyard_kit::{CommonConfig, ConfigError, Env, HttpStack, Metrics, Shutdown};
use tokio::net::TcpListener;

pub use backends::Backends;

pub const SERVICE: &str = "gateway";
pub const DEFAULT_PORT: u16 = 8080;
/// The Ingress the project ships.
pub const SHIPPED_INGRESS: &str = include_str!("../../../infra/k8s/base/ingress-srv.yaml");
/// The Ingress host whose rules apply.
pub const DEFAULT_HOST: &str = "posts.com";

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
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_env(env, SERVICE, DEFAULT_PORT)?;
        let ingress_yaml = match env.raw("INGRESS_FILE") {
            None => SHIPPED_INGRESS.to_string(),
            Some(path) => std::fs::read_to_string(&path).map_err(|e| ConfigError::Malformed {
                name: "INGRESS_FILE".into(),
                value: path.clone(),
                reason: e.to_string(),
            })?,
        };
        let backends = match env.raw("GATEWAY_BACKENDS") {
            None => Backends::default(),
            Some(spec) => Backends::parse(&spec).map_err(|reason| ConfigError::Malformed {
                name: "GATEWAY_BACKENDS".into(),
                value: spec.clone(),
                reason,
            })?,
        };
        Ok(Settings {
            common,
            ingress_yaml,
            host: env.parse_or("INGRESS_HOST", DEFAULT_HOST.to_string())?,
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

/// Runs the gateway on `listener` until `shutdown`.
pub async fn launch(
    settings: Settings,
    listener: TcpListener,
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
    let metrics = Metrics::new(SERVICE);
    let proxy = proxy::Proxy::new(routes, settings.backends.clone());
    // The gateway's own endpoints get the full service stack; proxied requests only get a
    // request id (the backend behind applies the rest), so the gateway adds little to them.
    let own = HttpStack::new(&settings.common, metrics).wrap(axum::Router::new());
    let router = own.merge(proxy::router(Arc::new(proxy)));
    switchyard_kit::serve(listener, router, shutdown, settings.common.shutdown_grace).await
}
