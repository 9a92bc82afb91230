//! The Gateway API form of each app's routing (`infra/k8s/<app>/gateway-api`, deployed by
//! the overlay `prod-gateway`): a Gateway and HTTPRoutes instead of the Ingress. The checks
//! cross-reference them: every HTTPRoute attaches to a Gateway of the manifests (and one of
//! its listeners), its hostnames are the registry's host, every backendRef is a Service of
//! the app with that port; the Gateway's listeners serve that host. The Envoy Gateway proxy
//! ([`gateway_proxy`]) is the peer the NetworkPolicies must admit to the backends.

use serde_json::Value;

use crate::checks::service_has_port;
use crate::contract::Contract;
use crate::ingress::{Backend, BackendPort, Router};
use crate::manifest::{self, Manifests};
use crate::netpol::{self, Peer};

/// The overlay of every app that deploys through the Gateway API.
pub const GATEWAY_OVERLAY: &str = "prod-gateway";

/// The API version of the Gateway API objects (standard channel).
pub const GATEWAY_API_VERSION: &str = "gateway.networking.k8s.io/v1";

/// The API group of the Gateway API.
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

/// The namespace where Envoy Gateway runs the proxies of every Gateway (its default, and
/// the one its Helm chart is installed into in infra/README.md).
pub const GATEWAY_NAMESPACE: &str = "envoy-gateway-system";

/// The GatewayClass the Gateways use (Envoy Gateway's, created in infra/README.md).
pub const GATEWAY_CLASS: &str = "eg";

/// The Gateway API kinds, validated against the published CRDs by infra/validate.sh.
pub const GATEWAY_API_KINDS: [&str; 2] = ["Gateway", "HTTPRoute"];

/// What is wrong with the TLS of HTTPS listener `l`: it must terminate TLS with
/// certificates from Secrets of the namespace.
fn tls_problems(l: &Value) -> Vec<String> {
    let lname = l["name"].as_str().unwrap_or("");
    let tls = &l["tls"];
    let mut problems = Vec::new();
    if tls["mode"].as_str().unwrap_or("Terminate") != "Terminate" {
        problems.push(format!("listener {lname}: TLS mode is not Terminate"));
    }
    let refs = tls["certificateRefs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if refs.is_empty() {
        problems.push(format!("listener {lname}: HTTPS without certificateRefs"));
    }
    for r in refs {
        let kind = r["kind"].as_str().unwrap_or("Secret");
        let group = r["group"].as_str().unwrap_or("");
        if kind != "Secret" || !group.is_empty() || !r["namespace"].is_null() {
            problems.push(format!(
                "listener {lname}: certificateRef {r} is not a Secret of the namespace"
            ));
        }
    }
    problems
}

/// The Secrets the HTTPS listeners of `m`'s Gateways take their certificates from.
pub fn certificate_secrets(m: &Manifests) -> Vec<String> {
    gateways(m)
        .iter()
        .flat_map(|gw| {
            gw["spec"]["listeners"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|l| {
            l["tls"]["certificateRefs"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect()
}

/// A proxy pod of Gateway `gateway`, as Envoy Gateway labels it.
pub fn gateway_proxy(gateway: &str) -> Peer {
    Peer::in_namespace(
        format!("the proxy of Gateway {gateway} (namespace {GATEWAY_NAMESPACE})"),
        GATEWAY_NAMESPACE,
        netpol::labels(&[
            ("app.kubernetes.io/name", "envoy"),
            ("app.kubernetes.io/component", "proxy"),
            ("app.kubernetes.io/managed-by", "envoy-gateway"),
            ("gateway.envoyproxy.io/owning-gateway-name", gateway),
        ]),
    )
}

/// Peers that must not reach the backends through the gateway overlay's policies: the
/// Envoy Gateway controller, the proxy of another Gateway, and ingress-nginx.
pub fn other_edge_peers(gateway: &str) -> Vec<Peer> {
    vec![
        Peer::in_namespace(
            format!("the Envoy Gateway controller (namespace {GATEWAY_NAMESPACE})"),
            GATEWAY_NAMESPACE,
            netpol::labels(&[
                ("app.kubernetes.io/name", "gateway-helm"),
                ("control-plane", "envoy-gateway"),
            ]),
        ),
        gateway_proxy(&format!("not-{gateway}")),
        Contract::ingress_controller(),
    ]
}

/// The Gateways of the manifests.
pub fn gateways(m: &Manifests) -> Vec<&Value> {
    m.of_kind("Gateway").collect()
}

/// The backends of every HTTPRoute of the manifests.
pub fn http_route_backends(m: &Manifests) -> Vec<Backend> {
    let mut out = Vec::new();
    for route in m.of_kind("HTTPRoute") {
        for rule in route["spec"]["rules"].as_array().into_iter().flatten() {
            for r in rule["backendRefs"].as_array().into_iter().flatten() {
                if let (Some(name), Some(port)) = (r["name"].as_str(), r["port"].as_u64()) {
                    out.push(Backend {
                        service: name.to_owned(),
                        port: BackendPort::Number(port),
                    });
                }
            }
        }
    }
    out
}

/// The routing table of `host` from the manifests' HTTPRoutes.
pub fn router(m: &Manifests, host: &str) -> Result<Router, crate::Error> {
    Ok(Router::from_http_routes(m.of_kind("HTTPRoute"), host)?)
}

/// Checks the Gateway API objects of `m` against the app's contract (see the module
/// documentation). `m` is an overlay that deploys through the Gateway API: it has no
/// Ingress.
pub fn check(c: &Contract, m: &Manifests) -> Vec<String> {
    let host = c.app.ingress.host;
    let mut problems = Vec::new();
    for ingress in m.of_kind("Ingress") {
        problems.push(format!(
            "{}: the Gateway API overlay still deploys an Ingress",
            manifest::id(ingress)
        ));
    }
    let gws = gateways(m);
    if gws.len() != 1 {
        problems.push(format!("{} Gateway objects, expected 1", gws.len()));
    }
    for gw in &gws {
        let name = manifest::name(gw);
        if gw["apiVersion"].as_str() != Some(GATEWAY_API_VERSION) {
            problems.push(format!(
                "Gateway {name}: apiVersion is not {GATEWAY_API_VERSION}"
            ));
        }
        if gw["spec"]["gatewayClassName"].as_str() != Some(GATEWAY_CLASS) {
            problems.push(format!(
                "Gateway {name}: gatewayClassName is not {GATEWAY_CLASS}"
            ));
        }
        let listeners = gw["spec"]["listeners"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if listeners.is_empty() {
            problems.push(format!("Gateway {name}: no listener"));
        }
        // An app whose session cookie is `secure` in the cluster (it turns that off only
        // for plain-HTTP local use) needs HTTPS: a browser keeps such a cookie over HTTPS
        // only.
        let secure_cookie = c.app.local_env.iter().any(|(k, _)| *k == "COOKIE_SECURE");
        if secure_cookie && !listeners.iter().any(|l| l["protocol"] == "HTTPS") {
            problems.push(format!(
                "Gateway {name}: {} keeps its users signed in with a secure cookie, and there is no HTTPS listener",
                c.app.name
            ));
        }
        for l in listeners.iter().filter(|l| l["protocol"] == "HTTPS") {
            problems.extend(
                tls_problems(l)
                    .into_iter()
                    .map(|p| format!("Gateway {name}: {p}")),
            );
        }
        for l in &listeners {
            let lname = l["name"].as_str().unwrap_or("");
            if l["hostname"].as_str() != Some(host) {
                problems.push(format!(
                    "Gateway {name} listener {lname}: hostname is {}, the registry's host is {host}",
                    l["hostname"]
                ));
            }
            if l["allowedRoutes"]["namespaces"]["from"].as_str() != Some("Same") {
                problems.push(format!(
                    "Gateway {name} listener {lname}: routes of other namespaces may attach (allowedRoutes.namespaces.from is not Same)"
                ));
            }
        }
    }
    let routes: Vec<&Value> = m.of_kind("HTTPRoute").collect();
    if routes.is_empty() {
        problems.push("no HTTPRoute".to_owned());
    }
    for route in routes {
        let name = manifest::name(route);
        if route["apiVersion"].as_str() != Some(GATEWAY_API_VERSION) {
            problems.push(format!(
                "HTTPRoute {name}: apiVersion is not {GATEWAY_API_VERSION}"
            ));
        }
        let parents = route["spec"]["parentRefs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if parents.is_empty() {
            problems.push(format!("HTTPRoute {name}: no parentRefs"));
        }
        for parent in &parents {
            let kind = parent["kind"].as_str().unwrap_or("Gateway");
            let group = parent["group"].as_str().unwrap_or(GATEWAY_API_GROUP);
            let pname = parent["name"].as_str().unwrap_or("");
            if kind != "Gateway" || group != GATEWAY_API_GROUP || !parent["namespace"].is_null() {
                problems.push(format!(
                    "HTTPRoute {name}: parentRef {parent} is not a Gateway of the namespace"
                ));
                continue;
            }
            let Some(gw) = m.get("Gateway", pname) else {
                problems.push(format!(
                    "HTTPRoute {name}: parentRef Gateway {pname} does not exist"
                ));
                continue;
            };
            if let Some(section) = parent["sectionName"].as_str() {
                let listed = gw["spec"]["listeners"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|l| l["name"].as_str() == Some(section));
                if !listed {
                    problems.push(format!(
                        "HTTPRoute {name}: Gateway {pname} has no listener {section}"
                    ));
                }
            }
        }
        let hostnames: Vec<&str> = route["spec"]["hostnames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if hostnames != [host] {
            problems.push(format!(
                "HTTPRoute {name}: hostnames are {hostnames:?}, the registry's host is {host}"
            ));
        }
        for rule in route["spec"]["rules"].as_array().into_iter().flatten() {
            let refs = rule["backendRefs"].as_array().cloned().unwrap_or_default();
            if refs.is_empty() {
                problems.push(format!("HTTPRoute {name}: a rule without backendRefs"));
            }
            for r in refs {
                let kind = r["kind"].as_str().unwrap_or("Service");
                let group = r["group"].as_str().unwrap_or("");
                let service = r["name"].as_str().unwrap_or("");
                if kind != "Service" || !group.is_empty() || !r["namespace"].is_null() {
                    problems.push(format!(
                        "HTTPRoute {name}: backendRef {r} is not a Service of the namespace"
                    ));
                    continue;
                }
                let Some(port) = r["port"].as_u64() else {
                    problems.push(format!(
                        "HTTPRoute {name}: backendRef {service} has no port"
                    ));
                    continue;
                };
                if let Err(e) = service_has_port(m, service, &BackendPort::Number(port)) {
                    problems.push(format!(
                        "HTTPRoute {name}: backendRef {service}:{port}: {e}"
                    ));
                }
                let of_app = c.app.ingress.paths.iter().any(|p| p.2 == service);
                if !of_app {
                    problems.push(format!(
                        "HTTPRoute {name}: backendRef {service} is not a public Service of {} (the Ingress's backends)",
                        c.app.name
                    ));
                }
            }
        }
    }
    match router(m, host) {
        Ok(r) => problems.extend(c.check_routes(&r)),
        Err(e) => problems.push(e.to_string()),
    }
    problems
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::contract::contracts;

    const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: client-srv}
spec: {ports: [{port: 3000}]}
---
apiVersion: v1
kind: Service
metadata: {name: query-srv}
spec: {ports: [{port: 4002}]}
"#;

    const GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: blog-gateway}
spec:
  gatewayClassName: eg
  listeners:
    - {name: http, protocol: HTTP, port: 80, hostname: posts.com, allowedRoutes: {namespaces: {from: Same}}}
"#;

    fn route(parent: &str, section: &str, host: &str, service: &str, port: u64) -> String {
        format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: blog-routes}}
spec:
  parentRefs: [{{name: {parent}, sectionName: {section}}}]
  hostnames: [{host}]
  rules:
    - matches: [{{path: {{type: PathPrefix, value: /}}}}]
      backendRefs: [{{name: {service}, port: {port}}}]
"#
        )
    }

    fn problems(route: &str) -> Vec<String> {
        let blog = contracts()[0];
        let m = Manifests::parse(&format!("{SERVICES}---{GATEWAY}---{route}")).unwrap();
        check(&blog, &m)
    }

    fn has(problems: &[String], needle: &str) -> bool {
        problems.iter().any(|p| p.contains(needle))
    }

    #[test]
    fn cross_references_parents_hosts_and_backends() {
        // consistent, except that / alone cannot route the blog's contract requests
        let ok = problems(&route(
            "blog-gateway",
            "http",
            "posts.com",
            "client-srv",
            3000,
        ));
        assert!(ok.iter().all(|p| p.contains(" routes to ")), "{ok:?}");
        assert!(has(
            &problems(&route(
                "other-gateway",
                "http",
                "posts.com",
                "client-srv",
                3000
            )),
            "Gateway other-gateway does not exist"
        ));
        assert!(has(
            &problems(&route(
                "blog-gateway",
                "https",
                "posts.com",
                "client-srv",
                3000
            )),
            "has no listener https"
        ));
        assert!(has(
            &problems(&route(
                "blog-gateway",
                "http",
                "ticketing.dev",
                "client-srv",
                3000
            )),
            "the registry's host is posts.com"
        ));
        assert!(has(
            &problems(&route(
                "blog-gateway",
                "http",
                "posts.com",
                "client-srv",
                3001
            )),
            "has no port 3001"
        ));
        assert!(has(
            &problems(&route(
                "blog-gateway",
                "http",
                "posts.com",
                "nope-srv",
                3000
            )),
            "Service nope-srv does not exist"
        ));
    }

    #[test]
    fn proxies_are_peers_of_the_gateway_namespace() {
        let p = gateway_proxy("blog-gateway");
        assert!(p.id.contains(GATEWAY_NAMESPACE));
        assert_eq!(other_edge_peers("blog-gateway").len(), 3);
    }
}
