//! Forwarding a request to the backend its path routes to.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, SemaphorePermit};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use switchyard_ingress::{Backend, Router as IngressRouter};
use switchyard_kit::ApiError;
use switchyard_kit::request_id::{self, X_REQUEST_ID};

use crate::backends::Backends;

pub(crate) struct Proxy {
    routes: IngressRouter,
    /// Each routed backend with its replicas' base URLs, worked out once.
    bases: Vec<(Backend, Replicas)>,
    client: Client<HttpConnector, Body>,
    /// Permits of one byte each for the request bodies held ([`MAX_HELD_BODIES`]).
    held_bodies: Semaphore,
}

/// How long a replica that refused a connection is passed over: long enough not to try
/// it on every request while it restarts, short enough to have it back soon after.
const DOWN_FOR: Duration = Duration::from_secs(1);

/// The largest request body sent on to a backend run as replicas: such a body is read
/// whole before it is sent, so that a replica refusing the connection can be passed over
/// and the request sent to the next (the services take smaller bodies than this).
const MAX_REPLAYED_BODY: usize = 2 * 1024 * 1024;

/// The most request-body bytes held at once by requests to backends run as replicas: past
/// it a request is answered 503 with `Retry-After`, rather than the gateway's memory
/// growing with what its clients send (32 bodies of the largest size).
const MAX_HELD_BODIES: usize = 32 * MAX_REPLAYED_BODY;

/// A backend's replicas: requests go to each in turn, and one that refused a connection is
/// passed over for [`DOWN_FOR`] (tried last meanwhile, in case every one is down).
struct Replicas {
    urls: Vec<String>,
    targets: Vec<Target>,
    next: AtomicUsize,
    /// Per replica, until when it is passed over, in milliseconds since `epoch`.
    down_until: Vec<AtomicU64>,
    epoch: Instant,
}

/// A replica's base URL, taken apart once: a request's URI is then put together from its
/// scheme, authority and the request's path, with no text to format and parse again.
struct Target {
    base: String,
    /// `None` when the base has a path of its own (or does not parse): then the request's
    /// path is appended to it as text.
    parts: Option<(Scheme, Authority)>,
}

impl Target {
    fn new(base: &str) -> Self {
        let parts = base.parse::<Uri>().ok().and_then(|uri| {
            let plain = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
            let parts = uri.into_parts();
            match (parts.scheme, parts.authority) {
                (Some(scheme), Some(authority)) if plain => Some((scheme, authority)),
                _ => None,
            }
        });
        Target {
            base: base.to_string(),
            parts,
        }
    }

    /// The URI of `path_and_query` on this replica.
    fn uri(&self, path_and_query: &PathAndQuery) -> Option<Uri> {
        match &self.parts {
            Some((scheme, authority)) => Uri::builder()
                .scheme(scheme.clone())
                .authority(authority.clone())
                .path_and_query(path_and_query.clone())
                .build()
                .ok(),
            None => format!("{}{path_and_query}", self.base).parse().ok(),
        }
    }
}

impl Replicas {
    fn new(urls: Vec<String>) -> Self {
        Replicas {
            down_until: urls.iter().map(|_| AtomicU64::new(0)).collect(),
            targets: urls.iter().map(|u| Target::new(u)).collect(),
            urls,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The order to try the replicas in for one request: from the next in turn, the ones
    /// passed over last (as they were when the request came: each is tried once).
    fn order(&self) -> impl Iterator<Item = usize> + use<'_> {
        let n = self.urls.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = self.now();
        // At most MAX_REPLICAS (16) replicas: one bit each.
        let down = (0..n).fold(0u32, |mask, r| {
            let passed_over = self.down_until[r].load(Ordering::Relaxed) > now;
            mask | (u32::from(passed_over) << r)
        });
        let turns = move || (0..n).map(move |i| (start + i) % n);
        let is_down = move |r: &usize| down & (1 << r) != 0;
        turns()
            .filter(move |r| !is_down(r))
            .chain(turns().filter(is_down))
    }

    fn pass_over(&self, replica: usize) {
        let until = self.now().saturating_add(DOWN_FOR.as_millis() as u64);
        self.down_until[replica].store(until, Ordering::Relaxed);
    }
}

/// Answers with a `Content-Length` up to this size are read whole from the backend and
/// sent on in one write; larger ones, and streams (server-sent events), are forwarded as
/// they come. A small answer sent on piece by piece cost a write and a wake-up per piece.
const WHOLE_ANSWER_MAX: u64 = 256 * 1024;

impl Proxy {
    pub fn new(routes: IngressRouter, backends: Backends) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let mut bases: Vec<(Backend, Replicas)> = Vec::new();
        for location in routes.locations() {
            if !bases.iter().any(|(b, _)| *b == location.backend) {
                let urls = backends.addresses_of(&location.backend);
                bases.push((location.backend.clone(), Replicas::new(urls)));
            }
        }
        Proxy {
            routes,
            bases,
            client,
            held_bodies: Semaphore::new(MAX_HELD_BODIES),
        }
    }
}

pub(crate) fn router(proxy: Arc<Proxy>) -> Router {
    // Every path is the proxy's, /metrics included: the gateway's own operational
    // endpoints are on its ops listener, so the Ingress decides what /metrics is here.
    Router::new()
        .route("/", any(forward))
        .route("/{*path}", any(forward))
        .with_state(proxy)
        .layer(axum::middleware::from_fn(with_request_id))
}

/// The request id the backends and the client see, on every answer: the client's when it
/// is plain and short, else a fresh one (the services apply the same rule; see
/// [`switchyard_kit::request_id`]).
async fn with_request_id(mut req: Request, next: axum::middleware::Next) -> Response {
    let id = request_id::ensure(req.headers_mut());
    let mut response = next.run(req).await;
    response.headers_mut().insert(X_REQUEST_ID, id);
    response
}

/// Hop-by-hop headers: they describe one connection and are not forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Sets the `X-Forwarded-*` headers on a request about to go to a backend, adding the
/// gateway's hop to what earlier proxies recorded rather than replacing it.
///
/// - `X-Forwarded-For` is a chain: each proxy appends the address it received the request
///   from. The incoming values (all `X-Forwarded-For` headers, in order, joined by `", "`,
///   bytes kept as they came) are followed by `client_ip`, and sent as one header, so a
///   backend behind a load balancer or TLS terminator still sees the original client.
///   The left-hand entries are whatever the sender claimed: only the right-most ones,
///   added by proxies the backend trusts, identify the client.
/// - `X-Forwarded-Proto` is the scheme the *client* used. The gateway itself speaks plain
///   HTTP, but a TLS-terminating proxy in front of it sets `https`; overwriting that would
///   make backends build `http://` redirects and links. An incoming value is kept; `http`
///   is set only when there is none.
/// - `X-Forwarded-Host` is the host the client asked for, kept for the same reason; when
///   absent it is set from the request's `Host` (`host`), if any.
///
/// `client_ip` is `None` when the connection's peer address is unknown; the incoming
/// `X-Forwarded-For` is then forwarded unchanged.
fn set_forwarded_headers(
    headers: &mut HeaderMap,
    host: Option<HeaderValue>,
    client_ip: Option<&str>,
) {
    if let Some(ip) = client_ip {
        let mut chain: Vec<u8> = Vec::new();
        for value in headers.get_all(&X_FORWARDED_FOR) {
            // Skip empty values so that they do not leave a leading ", " in the chain.
            let value = value.as_bytes().trim_ascii();
            if value.is_empty() {
                continue;
            }
            if !chain.is_empty() {
                chain.extend_from_slice(b", ");
            }
            chain.extend_from_slice(value);
        }
        if !chain.is_empty() {
            chain.extend_from_slice(b", ");
        }
        chain.extend_from_slice(ip.as_bytes());
        // Every part was a valid header value already, so this only fails on a peer
        // address that is not one; then the incoming header is left as it was.
        if let Ok(value) = HeaderValue::from_bytes(&chain) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !headers.contains_key(&X_FORWARDED_HOST)
        && let Some(host) = host
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

async fn forward(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    let Some(location) = proxy.routes.route(req.uri().path()) else {
        return ApiError::not_found("no route for this path").into_response();
    };
    let Some((backend, replicas)) = proxy.bases.iter().find(|(b, _)| *b == location.backend) else {
        return ApiError::not_found("no route for this path").into_response();
    };
    let (mut parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let malformed = || ApiError::bad_request("malformed request path").into_response();
    let host = parts.headers.get(header::HOST).cloned();
    let client_ip = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    strip_hop_by_hop(&mut parts.headers);
    set_forwarded_headers(&mut parts.headers, host, client_ip.as_deref());
    if let [only] = replicas.targets.as_slice() {
        let Some(uri) = only.uri(&path_and_query) else {
            return malformed();
        };
        parts.uri = uri;
        let sent = proxy.client.request(Request::from_parts(parts, body)).await;
        return relay(sent, backend).await;
    }
    // Several replicas: the body is read first, so that it can be sent again.
    let (body, _held) = match hold_body(body, &proxy.held_bodies).await {
        Ok(held) => held,
        Err(refused) => return refused,
    };
    let idempotent = matches!(
        parts.method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    let mut refused = None;
    for replica in replicas.order() {
        let mut request = Request::new(Body::from(body.clone()));
        *request.method_mut() = parts.method.clone();
        let Some(uri) = replicas.targets[replica].uri(&path_and_query) else {
            return malformed();
        };
        *request.uri_mut() = uri;
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        match proxy.client.request(request).await {
            // Nothing was sent, or a read that got no answer (its connection went down with
            // the replica): the next replica gets it. A write that got no answer may have
            // been applied, so it is not sent twice.
            Err(e) if e.is_connect() || idempotent => {
                tracing::warn!(%backend, replica = %replicas.urls[replica], error = %e, "replica unreachable; passed over for now");
                replicas.pass_over(replica);
                refused = Some(e);
            }
            sent => return relay(sent, backend).await,
        }
    }
    match refused {
        Some(e) => unavailable(backend, &e),
        None => unavailable(backend, &"no replica"),
    }
}

/// Reads a request body whole, holding a permit per byte from `budget` until the request
/// is done: 413 past [`MAX_REPLAYED_BODY`], 503 (`Retry-After: 1`) when the budget is
/// spent, 400 if the client's body failed.
async fn hold_body(
    mut body: Body,
    budget: &Semaphore,
) -> Result<(Bytes, Option<SemaphorePermit<'_>>), Response> {
    let mut whole = BytesMut::new();
    let mut held: Option<SemaphorePermit<'_>> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ApiError::bad_request(format!("reading the body: {e}")).into_response())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if whole.len() + data.len() > MAX_REPLAYED_BODY {
            return Err(ApiError::new(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                format!("a request body is at most {MAX_REPLAYED_BODY} bytes"),
            )
            .into_response());
        }
        // Below MAX_REPLAYED_BODY, so it fits.
        let n = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let Ok(permit) = budget.try_acquire_many(n) else {
            let mut busy = ApiError::new(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "the gateway holds too many request bodies; try again shortly",
            )
            .into_response();
            busy.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Err(busy);
        };
        match &mut held {
            Some(held) => held.merge(permit),
            None => held = Some(permit),
        }
        whole.extend_from_slice(&data);
    }
    Ok((whole.freeze(), held))
}

/// The backend's answer, sent on; 502 if it gave none.
async fn relay(
    sent: Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>,
    backend: &Backend,
) -> Response {
    match sent {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let length = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let body = match length {
                Some(n) if n <= WHOLE_ANSWER_MAX => match body.collect().await {
                    Ok(whole) => Body::from(whole.to_bytes()),
                    Err(e) => return unavailable(backend, &e),
                },
                _ => Body::new(body),
            };
            Response::from_parts(parts, body)
        }
        Err(e) => unavailable(backend, &e),
    }
}

/// 502 with the JSON error body, naming the backend's service.
fn unavailable(backend: &Backend, error: &dyn std::fmt::Display) -> Response {
    tracing::warn!(%backend, %error, "backend unavailable");
    let mut err = ApiError::new(
        http::StatusCode::BAD_GATEWAY,
        format!("{} is unavailable", backend.service),
    );
    err.errors[0].field = None;
    err.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_s_uri_is_put_together_on_each_replica() {
        let pq = PathAndQuery::from_static("/api/orders?x=1");
        let plain = Target::new("http://127.0.0.1:3202");
        assert!(plain.parts.is_some());
        assert_eq!(
            plain.uri(&pq).map(|u| u.to_string()).as_deref(),
            Some("http://127.0.0.1:3202/api/orders?x=1")
        );
        let prefixed = Target::new("http://orders/v1");
        assert!(prefixed.parts.is_none());
        assert_eq!(
            prefixed.uri(&pq).map(|u| u.to_string()).as_deref(),
            Some("http://orders/v1/api/orders?x=1")
        );
    }

    #[test]
    fn replicas_take_turns_and_one_passed_over_comes_last() {
        let r = Replicas::new(vec!["a".into(), "b".into(), "c".into()]);
        let order = || r.order().collect::<Vec<_>>();
        assert_eq!(order(), [0, 1, 2]);
        assert_eq!(order(), [1, 2, 0]);
        r.pass_over(2);
        assert_eq!(order(), [0, 1, 2]);
        assert_eq!(order(), [0, 1, 2]);
        assert_eq!(order(), [1, 0, 2]);
        // Its time over, it takes its turn again.
        r.down_until[2].store(0, Ordering::Relaxed);
        assert_eq!(order(), [2, 0, 1]);
        // Every one passed over: all are still tried, in turn.
        (0..3).for_each(|k| r.pass_over(k));
        assert_eq!(order(), [0, 1, 2]);
    }

    #[tokio::test]
    async fn request_bodies_held_at_once_are_bounded() {
        let budget = Semaphore::new(10);
        let (first, held) = hold_body(Body::from("12345678"), &budget)
            .await
            .expect("held");
        assert_eq!(
            (first.as_ref(), budget.available_permits()),
            (&b"12345678"[..], 2)
        );
        let refused = hold_body(Body::from("12345"), &budget)
            .await
            .expect_err("busy");
        assert_eq!(refused.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()[header::RETRY_AFTER], "1");
        // The refused body's bytes are given back, and so are the first's when it is done.
        assert_eq!(budget.available_permits(), 2);
        drop(held);
        let (again, _held) = hold_body(Body::from("12345"), &budget).await.expect("held");
        assert_eq!(again.as_ref(), b"12345");
        let big = vec![b'x'; MAX_REPLAYED_BODY + 1];
        let budget = Semaphore::new(MAX_HELD_BODIES);
        let refused = hold_body(Body::from(big), &budget)
            .await
            .expect_err("too large");
        assert_eq!(refused.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
    }
}
