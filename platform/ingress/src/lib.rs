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

/// The routing table of `host` from a YAML text holding Ingress objects (other kinds are
/// skipped).
pub fn router_from_yaml(text: &str, host: &str) -> Result<Router, Error> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| Error::Yaml(e.to_string()))?;
    let ingresses: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Ingress").collect();
    if ingresses.is_empty() {
        return Err(Error::Invalid("no Ingress object found".into()));
    }
    Router::new(ingresses, host)
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
    /// `pathType`.
    pub path_type: String,
    /// Where it routes.
    pub backend: Backend,
    /// The Ingress it comes from.
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
                "Prefix" => prefix_element_match(&self.path, uri),
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
    use_regex: bool,
    locations: Vec<Location>,
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
            use_regex,
            locations,
        })
    }

    /// The host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// True if the paths are regexes.
    pub fn uses_regex(&self) -> bool {
        self.use_regex
    }

    /// Locations, in the order nginx tries them (regex mode) or input order.
    pub fn locations(&self) -> &[Location] {
        &self.locations
    }

    /// The location serving a request path (query string ignored), if any.
    pub fn route(&self, uri: &str) -> Option<&Location> {
        let uri = uri.split('?').next().unwrap_or(uri);
        if self.use_regex {
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
}
