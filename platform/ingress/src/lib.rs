//! Ingress routing as ingress-nginx evaluates it: the one routing table shared by the
//! Kubernetes Ingress `ingress-srv`, the local gateway, and the manifest checks.
//!
//! With `nginx.ingress.kubernetes.io/use-regex: "true"` (or a rewrite-target)
//! on any Ingress of a host, every path of that host becomes a location
//! `~* "^<path>"`: a case-insensitive regex anchored at the start of the URI.
//! ingress-nginx writes the locations sorted by path, descending, then (stable)
//! by path length, longest first; nginx takes the first regex that matches.
//!
//! Without regexes, `Exact` paths match the whole URI, `Prefix` paths match by
//! path element, `ImplementationSpecific` paths as an nginx prefix, and the
//! longest match wins.
//!
//! The same table can come from Gateway API `HTTPRoute`s (`gateway.networking.k8s.io/v1`,
//! [`RoutesKind::HttpRoute`]): `Exact` matches the whole path, `PathPrefix` by path
//! element, both case-sensitively; `RegularExpression` must match the whole path (Envoy's
//! reading, RE2 syntax). The order is Envoy Gateway's, which the Gateway API spec fixes for
//! the standard matches and leaves to the implementation for regexes: every `Exact`, then
//! every `RegularExpression`, then every `PathPrefix`, each longest first, ties in input
//! order (route, rule, match). Only path matches and single Service backends are read:
//! a rule with header, query or method matches, filters, or several backends is an error,
//! since the local gateway could not honour it.

use std::fmt;

use regex::{Regex, RegexBuilder};
use serde_json::Value;

/// Errors reading Ingress objects.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A YAML document could not be parsed.
    #[error("YAML: {0}")]
    Yaml(String),
    /// An Ingress path is not a valid regular expression.
    #[error("Ingress path {path:?} is not a valid regex: {source}")]
    Regex {
        /// The Ingress path.
        path: String,
        /// The regex error.
        #[source]
        source: regex::Error,
    },
    /// The input does not have the expected shape.
    #[error("{0}")]
    Invalid(String),
}

/// Which objects a routing table is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutesKind {
    /// `networking.k8s.io/v1` `Ingress` objects, as ingress-nginx reads them.
    Ingress,
    /// `gateway.networking.k8s.io/v1` `HTTPRoute` objects.
    HttpRoute,
}

impl RoutesKind {
    /// The object kind: `Ingress`, `HTTPRoute`.
    pub fn kind(self) -> &'static str {
        match self {
            RoutesKind::Ingress => "Ingress",
            RoutesKind::HttpRoute => "HTTPRoute",
        }
    }

    /// Parses `ingress` or `httproute` (any case; `HTTPRoute` too).
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "ingress" => Some(RoutesKind::Ingress),
            "httproute" | "httproutes" | "gateway" | "gateway-api" => Some(RoutesKind::HttpRoute),
            _ => None,
        }
    }

    /// The kind of a YAML text: `Ingress` if it holds an Ingress, else `HTTPRoute` if it
    /// holds an HTTPRoute.
    pub fn detect(text: &str) -> Result<Self, Error> {
        let docs = parse_documents(text)?;
        let has = |kind: &str| docs.iter().any(|d| d["kind"] == kind);
        if has("Ingress") {
            Ok(RoutesKind::Ingress)
        } else if has("HTTPRoute") {
            Ok(RoutesKind::HttpRoute)
        } else {
            Err(Error::Invalid(
                "no Ingress or HTTPRoute object found".into(),
            ))
        }
    }
}

impl fmt::Display for RoutesKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

fn parse_documents(text: &str) -> Result<Vec<Value>, Error> {
    serde_saphyr::from_multiple(text).map_err(|e| Error::Yaml(e.to_string()))
}

/// The routing table of `host` from a YAML text holding Ingress objects (other kinds are
/// skipped).
pub fn router_from_yaml(text: &str, host: &str) -> Result<Router, Error> {
    router_from_yaml_as(text, host, RoutesKind::Ingress)
}

/// The routing table of `host` from the objects of `kind` in a YAML text (other kinds are
/// skipped; [`RoutesKind::detect`] finds the kind).
pub fn router_from_yaml_as(text: &str, host: &str, kind: RoutesKind) -> Result<Router, Error> {
    let docs = parse_documents(text)?;
    let objects: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind.kind()).collect();
    if objects.is_empty() {
        return Err(Error::Invalid(format!("no {kind} object found")));
    }
    match kind {
        RoutesKind::Ingress => Router::new(objects, host),
        RoutesKind::HttpRoute => Router::from_http_routes(objects, host),
    }
}

/// The annotation that turns Ingress paths into regexes.
pub const USE_REGEX_ANNOTATION: &str = "nginx.ingress.kubernetes.io/use-regex";
/// An annotation that makes ingress-nginx use regex locations too.
pub const REWRITE_TARGET_ANNOTATION: &str = "nginx.ingress.kubernetes.io/rewrite-target";

/// The port of an Ingress backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendPort {
    /// `port.number`.
    Number(u64),
    /// `port.name`.
    Name(String),
}

impl fmt::Display for BackendPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendPort::Number(n) => write!(f, "{n}"),
            BackendPort::Name(n) => write!(f, "{n}"),
        }
    }
}

/// A Service backend of an Ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// `service.name`.
    pub service: String,
    /// `service.port`.
    pub port: BackendPort,
}

impl Backend {
    /// Parses `{service: {name, port: {number|name}}}`.
    pub fn from_value(value: &Value) -> Result<Self, Error> {
        let service = &value["service"];
        let name = service["name"]
            .as_str()
            .ok_or_else(|| Error::Invalid(format!("backend without service.name: {value}")))?;
        let port = if let Some(n) = service["port"]["number"].as_u64() {
            BackendPort::Number(n)
        } else if let Some(n) = service["port"]["name"].as_str() {
            BackendPort::Name(n.to_owned())
        } else {
            return Err(Error::Invalid(format!(
                "backend {name} without port.number or port.name"
            )));
        };
        Ok(Backend {
            service: name.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.service, self.port)
    }
}

/// One path of an Ingress rule.
#[derive(Debug, Clone)]
pub struct Location {
    /// `path`.
    pub path: String,
    /// `pathType` (Ingress) or `path.type` (HTTPRoute: `Exact`, `PathPrefix`,
    /// `RegularExpression`).
    pub path_type: String,
    /// Where it routes.
    pub backend: Backend,
    /// The Ingress (or HTTPRoute) it comes from.
    pub ingress: String,
    regex: Option<Regex>,
}

impl Location {
    /// True if this location matches a request path.
    pub fn matches(&self, uri: &str) -> bool {
        match &self.regex {
            Some(re) => re.is_match(uri),
            None => match self.path_type.as_str() {
                "Exact" => uri == self.path,
                "Prefix" | "PathPrefix" => prefix_element_match(&self.path, uri),
                _ => uri.starts_with(&self.path),
            },
        }
    }
}

/// `Prefix` semantics: element-wise prefix of the `/`-separated path.
fn prefix_element_match(path: &str, uri: &str) -> bool {
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        return true;
    }
    uri == path
        || uri
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The routing table of one host.
#[derive(Debug, Clone)]
pub struct Router {
    host: String,
    kind: RoutesKind,
    use_regex: bool,
    locations: Vec<Location>,
}

/// The rank of an HTTPRoute path match type in Envoy Gateway's order.
fn http_route_rank(path_type: &str) -> u8 {
    match path_type {
        "Exact" => 0,
        "RegularExpression" => 1,
        _ => 2,
    }
}

/// Whether an HTTPRoute `hostnames` entry (`*.example.com` wildcards included) accepts
/// `host`.
fn hostname_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .and_then(|label| label.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty()),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// The Service of an HTTPRoute `backendRef` (`{name, port, kind: Service, group: ""}`).
fn backend_ref(route: &str, value: &Value) -> Result<Backend, Error> {
    let kind = value["kind"].as_str().unwrap_or("Service");
    let group = value["group"].as_str().unwrap_or("");
    if kind != "Service" || !group.is_empty() {
        return Err(Error::Invalid(format!(
            "HTTPRoute {route}: backendRef {value} is not a Service"
        )));
    }
    let name = value["name"]
        .as_str()
        .ok_or_else(|| Error::Invalid(format!("HTTPRoute {route}: backendRef without name")))?;
    let port = value["port"].as_u64().ok_or_else(|| {
        Error::Invalid(format!("HTTPRoute {route}: backendRef {name} without port"))
    })?;
    Ok(Backend {
        service: name.to_owned(),
        port: BackendPort::Number(port),
    })
}

impl Router {
    /// Builds the routing table of `host` from Ingress objects.
    pub fn new<'a>(
        ingresses: impl IntoIterator<Item = &'a Value>,
        host: &str,
    ) -> Result<Self, Error> {
        let mut use_regex = false;
        let mut raw = Vec::new();
        for ingress in ingresses {
            let mut for_host = false;
            let ingress_name = ingress["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            for rule in ingress["spec"]["rules"].as_array().into_iter().flatten() {
                if rule["host"].as_str() != Some(host) {
                    continue;
                }
                for_host = true;
                for p in rule["http"]["paths"].as_array().into_iter().flatten() {
                    let path = p["path"].as_str().unwrap_or("/").to_owned();
                    let path_type = p["pathType"]
                        .as_str()
                        .unwrap_or("ImplementationSpecific")
                        .to_owned();
                    let backend = Backend::from_value(&p["backend"])?;
                    raw.push((path, path_type, backend, ingress_name.clone()));
                }
            }
            if for_host {
                let annotations = &ingress["metadata"]["annotations"];
                use_regex |= annotations[USE_REGEX_ANNOTATION].as_str() == Some("true")
                    || annotations[REWRITE_TARGET_ANNOTATION].is_string();
            }
        }
        let mut locations = raw
            .into_iter()
            .map(|(path, path_type, backend, ingress)| {
                let regex = if use_regex {
                    Some(
                        RegexBuilder::new(&format!("^{path}"))
                            .case_insensitive(true)
                            .build()
                            .map_err(|source| Error::Regex {
                                path: path.clone(),
                                source,
                            })?,
                    )
                } else {
                    None
                };
                Ok(Location {
                    path,
                    path_type,
                    backend,
                    ingress,
                    regex,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        if use_regex {
            // as ingress-nginx: by path descending, then stable by length descending
            locations.sort_by(|a, b| b.path.cmp(&a.path));
            locations.sort_by_key(|l| std::cmp::Reverse(l.path.len()));
        }
        Ok(Router {
            host: host.to_owned(),
            kind: RoutesKind::Ingress,
            use_regex,
            locations,
        })
    }

    /// Builds the routing table of `host` from Gateway API HTTPRoute objects (the module
    /// documentation gives the semantics). Routes whose `hostnames` do not accept `host`
    /// are skipped; a route without hostnames accepts every host.
    pub fn from_http_routes<'a>(
        routes: impl IntoIterator<Item = &'a Value>,
        host: &str,
    ) -> Result<Self, Error> {
        let mut locations = Vec::new();
        let mut use_regex = false;
        for route in routes {
            let name = route["metadata"]["name"].as_str().unwrap_or("").to_owned();
            let spec = &route["spec"];
            let hostnames: Vec<&str> = spec["hostnames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if !hostnames.is_empty() && !hostnames.iter().any(|h| hostname_matches(h, host)) {
                continue;
            }
            for rule in spec["rules"].as_array().into_iter().flatten() {
                if rule["filters"].as_array().is_some_and(|f| !f.is_empty()) {
                    return Err(Error::Invalid(format!(
                        "HTTPRoute {name}: filters are not supported here"
                    )));
                }
                let refs = rule["backendRefs"].as_array().cloned().unwrap_or_default();
                let [backend] = refs.as_slice() else {
                    return Err(Error::Invalid(format!(
                        "HTTPRoute {name}: a rule needs exactly one backendRef, it has {}",
                        refs.len()
                    )));
                };
                if backend["filters"].as_array().is_some_and(|f| !f.is_empty()) {
                    return Err(Error::Invalid(format!(
                        "HTTPRoute {name}: backendRef filters are not supported here"
                    )));
                }
                let backend = backend_ref(&name, backend)?;
                let default_match = [serde_json::json!({})];
                let matches = match rule["matches"].as_array() {
                    Some(m) if !m.is_empty() => m.as_slice(),
                    _ => &default_match,
                };
                for m in matches {
                    for unsupported in ["headers", "queryParams", "method"] {
                        if !m[unsupported].is_null() {
                            return Err(Error::Invalid(format!(
                                "HTTPRoute {name}: {unsupported} matches are not supported here"
                            )));
                        }
                    }
                    let path_type = m["path"]["type"].as_str().unwrap_or("PathPrefix");
                    let path = m["path"]["value"].as_str().unwrap_or("/").to_owned();
                    let regex = match path_type {
                        "Exact" | "PathPrefix" => None,
                        "RegularExpression" => {
                            use_regex = true;
                            Some(Regex::new(&format!("^(?:{path})$")).map_err(|source| {
                                Error::Regex {
                                    path: path.clone(),
                                    source,
                                }
                            })?)
                        }
                        other => {
                            return Err(Error::Invalid(format!(
                                "HTTPRoute {name}: unknown path match type {other:?}"
                            )));
                        }
                    };
                    locations.push(Location {
                        path,
                        path_type: path_type.to_owned(),
                        backend: backend.clone(),
                        ingress: name.clone(),
                        regex,
                    });
                }
            }
        }
        // stable: ties keep the input order
        locations.sort_by_key(|l| {
            (
                http_route_rank(&l.path_type),
                std::cmp::Reverse(l.path.len()),
            )
        });
        Ok(Router {
            host: host.to_owned(),
            kind: RoutesKind::HttpRoute,
            use_regex,
            locations,
        })
    }

    /// What the table was read from.
    pub fn kind(&self) -> RoutesKind {
        self.kind
    }

    /// The host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// True if the paths are regexes (Ingress), or if any match is a `RegularExpression`
    /// (HTTPRoute).
    pub fn uses_regex(&self) -> bool {
        self.use_regex
    }

    /// Locations, in the order nginx tries them (regex mode), in input order (Ingress
    /// without regexes), or in precedence order (HTTPRoute).
    pub fn locations(&self) -> &[Location] {
        &self.locations
    }

    /// The location serving a request path (query string ignored), if any.
    pub fn route(&self, uri: &str) -> Option<&Location> {
        let uri = uri.split('?').next().unwrap_or(uri);
        if self.use_regex || self.kind == RoutesKind::HttpRoute {
            return self.locations.iter().find(|l| l.matches(uri));
        }
        let exact = self
            .locations
            .iter()
            .find(|l| l.path_type == "Exact" && l.matches(uri));
        exact.or_else(|| {
            self.locations
                .iter()
                .filter(|l| l.path_type != "Exact" && l.matches(uri))
                .max_by_key(|l| l.path.len())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ingress(use_regex: bool, paths: &[(&str, &str, &str, u64)]) -> Value {
        let paths: Vec<Value> = paths
            .iter()
            .map(|(path, path_type, svc, port)| {
                serde_json::json!({
                    "path": path, "pathType": path_type,
                    "backend": {"service": {"name": svc, "port": {"number": port}}}
                })
            })
            .collect();
        let mut annotations = serde_json::Map::new();
        if use_regex {
            annotations.insert(USE_REGEX_ANNOTATION.into(), "true".into());
        }
        serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "ingress-srv", "annotations": annotations},
            "spec": {"ingressClassName": "nginx",
                     "rules": [{"host": "posts.com", "http": {"paths": paths}}]}
        })
    }

    const CONTRACT: [(&str, &str, &str, u64); 4] = [
        ("/posts/create", "Prefix", "posts-clusterip-srv", 4000),
        ("/posts", "Prefix", "query-srv", 4002),
        (
            "/posts/?(.*)/comments",
            "ImplementationSpecific",
            "comments-srv",
            4001,
        ),
        ("/?(.*)", "ImplementationSpecific", "client-srv", 3000),
    ];

    fn target(router: &Router, uri: &str) -> String {
        router
            .route(uri)
            .map(|l| l.backend.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn regex_locations_are_sorted_like_ingress_nginx() {
        let router = Router::new([&ingress(true, &CONTRACT)], "posts.com").unwrap();
        assert!(router.uses_regex());
        let order: Vec<&str> = router.locations().iter().map(|l| l.path.as_str()).collect();
        // "/posts" and "/?(.*)" have the same length: "/posts" > "/?(.*)" bytewise
        assert_eq!(
            order,
            ["/posts/?(.*)/comments", "/posts/create", "/posts", "/?(.*)"]
        );
    }

    #[test]
    fn routes_the_contract_requests() {
        let router = Router::new([&ingress(true, &CONTRACT)], "posts.com").unwrap();
        for (uri, want) in [
            ("/posts/create", "posts-clusterip-srv:4000"),
            ("/posts", "query-srv:4002"),
            ("/posts/stream", "query-srv:4002"),
            ("/posts/abc123/comments", "comments-srv:4001"),
            ("/POSTS/abc123/COMMENTS", "comments-srv:4001"),
            ("/posts?x=1", "query-srv:4002"),
            ("/", "client-srv:3000"),
            ("/app.js", "client-srv:3000"),
        ] {
            assert_eq!(target(&router, uri), want, "{uri}");
        }
    }

    #[test]
    fn same_length_ties_are_broken_by_descending_path() {
        // reversed input order: the result does not depend on it
        let mut reversed = CONTRACT;
        reversed.reverse();
        let router = Router::new([&ingress(true, &reversed)], "posts.com").unwrap();
        assert_eq!(target(&router, "/posts"), "query-srv:4002");
        assert_eq!(target(&router, "/posts/create"), "posts-clusterip-srv:4000");
    }

    #[test]
    fn first_match_wins_even_if_a_later_path_is_more_specific() {
        // "/?(.*)x" (7 chars) sorts before "/posts" (6) and catches "/postsx"
        let router = Router::new(
            [&ingress(
                true,
                &[
                    ("/posts", "Prefix", "a", 1),
                    ("/?(.*)x", "ImplementationSpecific", "b", 2),
                ],
            )],
            "posts.com",
        )
        .unwrap();
        assert_eq!(target(&router, "/postsx"), "b:2");
        assert_eq!(target(&router, "/posts"), "a:1");
    }

    #[test]
    fn without_regex_prefix_and_exact_semantics_apply() {
        let router = Router::new(
            [&ingress(
                false,
                &[
                    ("/posts", "Prefix", "query", 1),
                    ("/posts/create", "Exact", "posts", 2),
                    ("/", "Prefix", "client", 3),
                ],
            )],
            "posts.com",
        )
        .unwrap();
        assert!(!router.uses_regex());
        assert_eq!(target(&router, "/posts/create"), "posts:2");
        assert_eq!(target(&router, "/posts/create/x"), "query:1");
        assert_eq!(target(&router, "/postsx"), "client:3");
        assert_eq!(target(&router, "/posts/1/comments"), "query:1");
    }

    #[test]
    fn other_hosts_are_ignored_and_bad_regexes_reported() {
        let router = Router::new([&ingress(true, &CONTRACT)], "example.com").unwrap();
        assert!(router.locations().is_empty());
        assert!(router.route("/").is_none());
        let bad = ingress(true, &[("/(", "ImplementationSpecific", "x", 1)]);
        assert!(matches!(
            Router::new([&bad], "posts.com"),
            Err(Error::Regex { .. })
        ));
    }

    fn http_route(hostnames: &[&str], rules: &[(&str, &str, &str, u64)]) -> Value {
        let rules: Vec<Value> = rules
            .iter()
            .map(|(path_type, path, svc, port)| {
                serde_json::json!({
                    "matches": [{"path": {"type": path_type, "value": path}}],
                    "backendRefs": [{"name": svc, "port": port}]
                })
            })
            .collect();
        serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "blog-routes"},
            "spec": {"parentRefs": [{"name": "blog-gateway"}], "hostnames": hostnames,
                     "rules": rules}
        })
    }

    /// The blog's HTTPRoute (infra/k8s/blog/gateway-api/httproutes.yaml), in a
    /// deliberately different order: precedence does not depend on it.
    const BLOG_ROUTE: [(&str, &str, &str, u64); 4] = [
        ("PathPrefix", "/", "client-srv", 3000),
        ("PathPrefix", "/posts", "query-srv", 4002),
        ("PathPrefix", "/posts/create", "posts-clusterip-srv", 4000),
        (
            "RegularExpression",
            "(?i)^/posts/?(.*)/comments.*$",
            "comments-srv",
            4001,
        ),
    ];

    #[test]
    fn http_routes_follow_envoy_gateway_precedence() {
        let route = http_route(&["posts.com"], &BLOG_ROUTE);
        let router = Router::from_http_routes([&route], "posts.com").unwrap();
        assert_eq!(router.kind(), RoutesKind::HttpRoute);
        let order: Vec<&str> = router.locations().iter().map(|l| l.path.as_str()).collect();
        assert_eq!(
            order,
            [
                "(?i)^/posts/?(.*)/comments.*$",
                "/posts/create",
                "/posts",
                "/"
            ]
        );
        let exact = http_route(
            &[],
            &[
                ("PathPrefix", "/posts", "query", 1),
                ("RegularExpression", "/posts/.*", "regex", 2),
                ("Exact", "/posts/x", "exact", 3),
            ],
        );
        let router = Router::from_http_routes([&exact], "any.host").unwrap();
        assert_eq!(target(&router, "/posts/x"), "exact:3");
        assert_eq!(target(&router, "/posts/y"), "regex:2");
        assert_eq!(target(&router, "/posts"), "query:1");
    }

    #[test]
    fn http_routes_route_the_contract_requests_like_the_ingress() {
        let ingress = Router::new([&ingress(true, &CONTRACT)], "posts.com").unwrap();
        let route = http_route(&["posts.com"], &BLOG_ROUTE);
        let routes = Router::from_http_routes([&route], "posts.com").unwrap();
        for uri in [
            "/posts/create",
            "/posts/create/",
            "/posts/create?x=1",
            "/posts",
            "/posts/",
            "/posts?x=1",
            "/posts/stream",
            "/posts/abc123/comments",
            "/posts/abc123/comments/",
            "/posts/abc123/comments?x=1",
            "/POSTS/abc123/COMMENTS",
            "/posts/create/comments",
            "/posts//comments",
            "/",
            "/app.js",
            "/some/page",
        ] {
            assert_eq!(target(&routes, uri), target(&ingress, uri), "{uri}");
        }
    }

    /// Where the PathPrefix matches part from the Ingress's prefix regexes: paths that run
    /// on past a prefix without a `/`, and case variants. No backend serves any of them.
    #[test]
    fn http_routes_differ_from_the_regexes_only_off_segment_and_in_case() {
        let ingress = Router::new([&ingress(true, &CONTRACT)], "posts.com").unwrap();
        let route = http_route(&["posts.com"], &BLOG_ROUTE);
        let routes = Router::from_http_routes([&route], "posts.com").unwrap();
        for (uri, by_ingress, by_route) in [
            ("/postsx", "query-srv:4002", "client-srv:3000"),
            ("/POSTS", "query-srv:4002", "client-srv:3000"),
            (
                "/posts/createx",
                "posts-clusterip-srv:4000",
                "query-srv:4002",
            ),
            (
                "/Posts/Create",
                "posts-clusterip-srv:4000",
                "client-srv:3000",
            ),
        ] {
            assert_eq!(target(&ingress, uri), by_ingress, "{uri} by the Ingress");
            assert_eq!(target(&routes, uri), by_route, "{uri} by the HTTPRoute");
        }
    }

    #[test]
    fn http_route_hostnames_select_the_routes() {
        let route = http_route(&["*.example.com"], &BLOG_ROUTE);
        assert!(
            !Router::from_http_routes([&route], "a.example.com")
                .unwrap()
                .locations()
                .is_empty()
        );
        for host in ["example.com", "posts.com"] {
            assert!(
                Router::from_http_routes([&route], host)
                    .unwrap()
                    .locations()
                    .is_empty()
            );
        }
    }

    #[test]
    fn kinds_are_detected_and_unsupported_rules_rejected() {
        let yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  rules:\n    - backendRefs: [{name: client-srv, port: 3000}]\n";
        assert_eq!(RoutesKind::detect(yaml).unwrap(), RoutesKind::HttpRoute);
        let router = router_from_yaml_as(yaml, "posts.com", RoutesKind::HttpRoute).unwrap();
        // no matches: PathPrefix /
        assert_eq!(target(&router, "/anything"), "client-srv:3000");
        assert!(router_from_yaml_as(yaml, "posts.com", RoutesKind::Ingress).is_err());
        assert!(RoutesKind::detect("kind: Service\n").is_err());
        assert_eq!(RoutesKind::parse("HTTPRoute"), Some(RoutesKind::HttpRoute));
        assert_eq!(RoutesKind::parse("ingress"), Some(RoutesKind::Ingress));
        assert_eq!(RoutesKind::parse("nginx"), None);

        let mut headers = http_route(&[], &BLOG_ROUTE);
        headers["spec"]["rules"][0]["matches"][0]["headers"] =
            serde_json::json!([{"name": "x", "value": "y"}]);
        let mut split = http_route(&[], &BLOG_ROUTE);
        split["spec"]["rules"][0]["backendRefs"] =
            serde_json::json!([{"name": "a", "port": 1}, {"name": "b", "port": 2}]);
        let mut filters = http_route(&[], &BLOG_ROUTE);
        filters["spec"]["rules"][0]["filters"] = serde_json::json!([{"type": "URLRewrite"}]);
        let mut not_a_service = http_route(&[], &BLOG_ROUTE);
        not_a_service["spec"]["rules"][0]["backendRefs"][0]["kind"] = "Backend".into();
        for bad in [headers, split, filters, not_a_service] {
            assert!(
                Router::from_http_routes([&bad], "posts.com").is_err(),
                "{bad}"
            );
        }
    }
}
