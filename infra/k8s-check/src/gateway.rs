//! The Gateway API form of each app's routing (`infra/k8s/<app>/gateway-api`, deployed by
//! the overlay `prod-gateway`): a Gateway and HTTPRoutes instead of the Ingress. Every
//! HTTPRoute attaches to a Gateway of the manifests (and one of its listeners), its
//! hostnames are the registry's host, every backendRef is a public Service of the app with
//! that port; the Gateway's listeners serve that host. The Envoy Gateway proxy
//! ([`gateway_proxy`]) is the peer the NetworkPolicies must admit to the backends.

use serde_json::Value;

use crate::checks::service_has_port;
use crate::contract::Contract;
use crate::ingress::{Backend, BackendPort, Router};
use crate::manifest::{self, Manifests, list, text};
use crate::netpol::{self, Peer};

/// The overlay of every app that deploys through the Gateway API.
pub const GATEWAY_OVERLAY: &str = "prod-gateway";

/// The API version and group of the Gateway API objects (standard channel).
pub const GATEWAY_API_VERSION: &str = "gateway.networking.k8s.io/v1";
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

/// The namespace where Envoy Gateway runs the proxies of every Gateway (its default, and
/// the one its Helm chart is installed into in infra/README.md).
pub const GATEWAY_NAMESPACE: &str = "envoy-gateway-system";

/// The GatewayClass the Gateways use (Envoy Gateway's, created in infra/README.md).
pub const GATEWAY_CLASS: &str = "eg";

/// The Gateway API kinds, validated against the published CRDs by infra/validate.sh.
pub const GATEWAY_API_KINDS: [&str; 2] = ["Gateway", "HTTPRoute"];

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
    let controller = netpol::labels(&[
        ("app.kubernetes.io/name", "gateway-helm"),
        ("control-plane", "envoy-gateway"),
    ]);
    vec![
        Peer::in_namespace(
            format!("the Envoy Gateway controller (namespace {GATEWAY_NAMESPACE})"),
            GATEWAY_NAMESPACE,
            controller,
        ),
        gateway_proxy(&format!("not-{gateway}")),
        Contract::ingress_controller(),
    ]
}

/// The Secrets the HTTPS listeners of `m`'s Gateways take their certificates from.
pub fn certificate_secrets(m: &Manifests) -> Vec<String> {
    let listeners = m
        .of_kind("Gateway")
        .flat_map(|gw| list(&gw["spec"]["listeners"]));
    let refs = listeners.flat_map(|l| list(&l["tls"]["certificateRefs"]));
    refs.filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect()
}

/// The backends of every HTTPRoute of the manifests.
pub fn http_route_backends(m: &Manifests) -> Vec<Backend> {
    let rules = m
        .of_kind("HTTPRoute")
        .flat_map(|r| list(&r["spec"]["rules"]));
    let refs = rules.flat_map(|rule| list(&rule["backendRefs"]));
    let backend = |r: &Value| {
        let (service, port) = (r["name"].as_str()?.to_owned(), r["port"].as_u64()?);
        Some(Backend {
            service,
            port: BackendPort::Number(port),
        })
    };
    refs.filter_map(backend).collect()
}

/// The routing table of `host` from the manifests' HTTPRoutes.
pub fn router(m: &Manifests, host: &str) -> Result<Router, crate::Error> {
    Ok(Router::from_http_routes(m.of_kind("HTTPRoute"), host)?)
}

/// Whether a reference (`parentRefs`, `backendRefs`, `certificateRefs`) names an object
/// of kind `kind` (the default) and group `group` of the same namespace.
fn local_ref(r: &Value, kind: &str, group: &str) -> bool {
    r["kind"].as_str().unwrap_or(kind) == kind
        && r["group"].as_str().unwrap_or(group) == group
        && r["namespace"].is_null()
}

/// What is wrong with a Gateway: its version and class, its listeners (the registry's host,
/// routes of the namespace only, HTTPS terminating TLS with Secrets of the namespace), and
/// HTTPS for an app whose session cookie is `secure` (a browser keeps it over HTTPS only).
fn gateway_problems(c: &Contract, gw: &Value) -> Vec<String> {
    let (name, host) = (manifest::name(gw), c.app.ingress.host);
    let mut problems = Vec::new();
    if gw["apiVersion"] != GATEWAY_API_VERSION {
        problems.push(format!("apiVersion is not {GATEWAY_API_VERSION}"));
    }
    if gw["spec"]["gatewayClassName"] != GATEWAY_CLASS {
        problems.push(format!("gatewayClassName is not {GATEWAY_CLASS}"));
    }
    let listeners: Vec<&Value> = list(&gw["spec"]["listeners"]).collect();
    if listeners.is_empty() {
        problems.push("no listener".to_owned());
    }
    let secure_cookie = c.app.local_env.iter().any(|(k, _)| *k == "COOKIE_SECURE");
    if secure_cookie && !listeners.iter().any(|l| l["protocol"] == "HTTPS") {
        problems.push(format!(
            "{} keeps its users signed in with a secure cookie, and there is no HTTPS listener",
            c.app.name
        ));
    }
    for l in listeners {
        let at = format!("listener {}", text(&l["name"]));
        if l["hostname"] != host {
            let hostname = &l["hostname"];
            problems.push(format!(
                "{at}: hostname is {hostname}, the registry's host is {host}"
            ));
        }
        if l["allowedRoutes"]["namespaces"]["from"] != "Same" {
            problems.push(format!(
                "{at}: routes of other namespaces may attach (allowedRoutes.namespaces.from is not Same)"
            ));
        }
        if l["protocol"] != "HTTPS" {
            continue;
        }
        let tls = &l["tls"];
        if tls["mode"].as_str().unwrap_or("Terminate") != "Terminate" {
            problems.push(format!("{at}: TLS mode is not Terminate"));
        }
        if list(&tls["certificateRefs"]).next().is_none() {
            problems.push(format!("{at}: HTTPS without certificateRefs"));
        }
        for r in list(&tls["certificateRefs"]).filter(|r| !local_ref(r, "Secret", "")) {
            problems.push(format!(
                "{at}: certificateRef {r} is not a Secret of the namespace"
            ));
        }
    }
    problems
        .into_iter()
        .map(|p| format!("Gateway {name}: {p}"))
        .collect()
}

/// What is wrong with an HTTPRoute: its version, its parents (Gateways of the manifests,
/// and their listeners), its hostnames (the registry's host), its backends (public
/// Services of the app, with the port).
fn route_problems(c: &Contract, m: &Manifests, route: &Value) -> Vec<String> {
    let (name, host) = (manifest::name(route), c.app.ingress.host);
    let mut problems = Vec::new();
    if route["apiVersion"] != GATEWAY_API_VERSION {
        problems.push(format!("apiVersion is not {GATEWAY_API_VERSION}"));
    }
    if list(&route["spec"]["parentRefs"]).next().is_none() {
        problems.push("no parentRefs".to_owned());
    }
    for parent in list(&route["spec"]["parentRefs"]) {
        let pname = text(&parent["name"]);
        let listeners = m
            .get("Gateway", pname)
            .map(|gw| list(&gw["spec"]["listeners"]));
        let section = parent["sectionName"].as_str();
        if !local_ref(parent, "Gateway", GATEWAY_API_GROUP) {
            problems.push(format!(
                "parentRef {parent} is not a Gateway of the namespace"
            ));
        } else if listeners.is_none() {
            problems.push(format!("parentRef Gateway {pname} does not exist"));
        } else if let (Some(mut listeners), Some(section)) = (listeners, section)
            && !listeners.any(|l| l["name"] == section)
        {
            problems.push(format!("Gateway {pname} has no listener {section}"));
        }
    }
    let hostnames: Vec<&str> = list(&route["spec"]["hostnames"])
        .filter_map(Value::as_str)
        .collect();
    if hostnames != [host] {
        problems.push(format!(
            "hostnames are {hostnames:?}, the registry's host is {host}"
        ));
    }
    for rule in list(&route["spec"]["rules"]) {
        if list(&rule["backendRefs"]).next().is_none() {
            problems.push("a rule without backendRefs".to_owned());
        }
        for r in list(&rule["backendRefs"]) {
            let service = text(&r["name"]);
            if !local_ref(r, "Service", "") {
                problems.push(format!("backendRef {r} is not a Service of the namespace"));
                continue;
            }
            let Some(port) = r["port"].as_u64() else {
                problems.push(format!("backendRef {service} has no port"));
                continue;
            };
            if let Err(e) = service_has_port(m, service, &BackendPort::Number(port)) {
                problems.push(format!("backendRef {service}:{port}: {e}"));
            }
            if !c.app.ingress.paths.iter().any(|p| p.2 == service) {
                problems.push(format!(
                    "backendRef {service} is not a public Service of {} (the Ingress's backends)",
                    c.app.name
                ));
            }
        }
    }
    problems
        .into_iter()
        .map(|p| format!("HTTPRoute {name}: {p}"))
        .collect()
}

/// Checks the Gateway API objects of `m`, an overlay that deploys through the Gateway API
/// (so without an Ingress), against the app's contract: one Gateway, HTTPRoutes, and the
/// contract's requests routed by them.
pub fn check(c: &Contract, m: &Manifests) -> Vec<String> {
    let mut problems: Vec<String> = m
        .of_kind("Ingress")
        .map(|i| {
            format!(
                "{}: the Gateway API overlay still deploys an Ingress",
                manifest::id(i)
            )
        })
        .collect();
    let gateways = m.of_kind("Gateway").count();
    if gateways != 1 {
        problems.push(format!("{gateways} Gateway objects, expected 1"));
    }
    problems.extend(m.of_kind("Gateway").flat_map(|gw| gateway_problems(c, gw)));
    if m.of_kind("HTTPRoute").next().is_none() {
        problems.push("no HTTPRoute".to_owned());
    }
    problems.extend(m.of_kind("HTTPRoute").flat_map(|r| route_problems(c, m, r)));
    match router(m, c.app.ingress.host) {
        Ok(r) => problems.extend(c.check_routes(&r)),
        Err(e) => problems.push(e.to_string()),
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_are_peers_of_the_gateway_namespace() {
        assert!(gateway_proxy("blog-gateway").id.contains(GATEWAY_NAMESPACE));
        assert_eq!(other_edge_peers("blog-gateway").len(), 3);
    }
}
