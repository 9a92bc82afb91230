//! The gateway's yardstick: the least a reverse proxy does on this machine. An axum server
//! that forwards every request to one backend with the same HTTP client as the gateway
//! (hyper-util's pooled client, `TCP_NODELAY`) and streams the answer back, with nothing
//! else: no routing table, no request id, no header rewriting. Scenario 5 runs it in front
//! of query in the same run as the gateway, so "gateway / bare proxy" says what the
//! gateway's own work costs and "bare proxy / direct" what any proxy costs here.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::Ctx;
use crate::procs::Reference;

/// Serves the bare proxy on 127.0.0.1:`port`, forwarding to `to` (`http://host:port`).
pub fn serve(port: u16, to: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let base: Arc<str> = to.trim_end_matches('/').into();
    rt.block_on(async move {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<HttpConnector, Body> =
            Client::builder(TokioExecutor::new()).build(connector);
        let app = Router::new().fallback(move |req: Request| {
            let (client, base) = (client.clone(), base.clone());
            async move { forward(&client, &base, req).await }
        });
        crate::serve_until_stopped(port, app).await
    })
}

async fn forward(client: &Client<HttpConnector, Body>, base: &str, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = match format!("{base}{path}").parse::<Uri>() {
        Ok(uri) => uri,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => response.map(Body::new),
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// A running bare proxy (a child process of the bench), stopped when dropped.
pub struct BareProxy(Reference);

impl BareProxy {
    /// Starts one in front of `to` and waits until `path` answers through it.
    pub async fn start(ctx: &Ctx, to: &str, path: &str) -> anyhow::Result<BareProxy> {
        let args = [std::ffi::OsStr::new("--to"), std::ffi::OsStr::new(to)];
        Ok(BareProxy(
            Reference::start(ctx, "bare-proxy", &args, path).await?,
        ))
    }

    pub fn url(&self, path: &str) -> String {
        self.0.url(path)
    }
}
