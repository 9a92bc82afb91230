//! The Gateway API form of each app's routing (`infra/k8s/<app>/gateway-api`, deployed by
//! the overlay `prod-gateway`): a Gateway and HTTPRoutes instead of the Ingress.

use serde_json::Value;

use crate::Report;
use crate::contract::{Contract, Edge};
use crate::ingress::Router;
use crate::manifest::{self, Manifests, list, text};
use crate::netpol::{self, Peer};

/// The overlay of every app that deploys through the Gateway API.
pub const GATEWAY_OVERLAY: &str = "prod-gateway";

/// The Gateway API's group (validated against its CRDs by infra/validate.sh) and kinds.
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";
pub const GATEWAY_API_KINDS: [&str; 2] = ["Gateway", "HTTPRoute"];

/// Where Envoy Gateway runs every Gateway's proxies (its default, and infra/README.md's).
pub const GATEWAY_NAMESPACE: &str = "envoy-gateway-system";

/// The GatewayClass the Gateways use (Envoy Gateway's, created in infra/README.md).
pub const GATEWAY_CLASS: &str = "eg";

/// A proxy pod of Gateway `gateway`, as Envoy Gateway labels it.
pub fn gateway_proxy(gateway: &str) -> Peer {
    let pod = netpol::labels(&[
        ("app.kubernetes.io/name", "envoy"),
        ("app.kubernetes.io/component", "proxy"),
        ("app.kubernetes.io/managed-by", "envoy-gateway"),
        ("gateway.envoyproxy.io/owning-gateway-name", gateway),
    ]);
    let id = format!("the proxy of Gateway {gateway} (namespace {GATEWAY_NAMESPACE})");
    Peer::in_namespace(id, GATEWAY_NAMESPACE, pod)
}

/// The edge of the Gateway API overlay: the proxy of its Gateway; no other may reach the
/// backends (the Envoy Gateway controller, the proxy of another Gateway, ingress-nginx).
pub fn edge(c: &Contract, m: &Manifests) -> Edge {
    let gateway = m.of_kind("Gateway").next().map_or("", manifest::name);
    let pod = [
        ("app.kubernetes.io/name", "gateway-helm"),
        ("control-plane", "envoy-gateway"),
    ];
    let id = format!("the Envoy Gateway controller (namespace {GATEWAY_NAMESPACE})");
    let controller = Peer::in_namespace(id, GATEWAY_NAMESPACE, netpol::labels(&pod));
    let not_ours = gateway_proxy(&format!("not-{gateway}"));
    let others = vec![controller, not_ours, Contract::ingress_controller()];
    let router = router(m, c.app.ingress.host).ok();
    let locations = router.iter().flat_map(|r| r.locations());
    let (proxy, backends) = (gateway_proxy(gateway), locations.map(|l| l.backend.clone()));
    let backends = backends.collect();
    Edge {
        proxy,
        backends,
        others,
    }
}

/// The Secrets the HTTPS listeners of `m`'s Gateways take their certificates from.
pub fn certificate_secrets(m: &Manifests) -> Vec<String> {
    let gateways = m.of_kind("Gateway");
    let listeners = gateways.flat_map(|gw| list(&gw["spec"]["listeners"]));
    let refs = listeners.flat_map(|l| list(&l["tls"]["certificateRefs"]));
    refs.map(|r| text(&r["name"]).to_owned()).collect()
}

pub fn router(m: &Manifests, host: &str) -> Result<Router, crate::Error> {
    Ok(Router::from_http_routes(m.of_kind("HTTPRoute"), host)?)
}

/// Whether a reference names a `kind` (the default) of `group` in the same namespace.
fn local_ref(r: &Value, kind: &str, group: &str) -> bool {
    let same_kind = r["kind"].as_str().unwrap_or(kind) == kind;
    same_kind && r["group"].as_str().unwrap_or(group) == group && r["namespace"].is_null()
}

/// A Gateway: its class, its listeners (the registry's host, HTTPS terminating TLS), and
/// HTTPS for an app whose session cookie is `secure` (a browser keeps it over HTTPS only).
fn check_gateway(c: &Contract, gw: &Value, r: &mut Report) {
    let (host, name) = (c.app.ingress.host, manifest::name(gw));
    let listeners: Vec<&Value> = list(&gw["spec"]["listeners"]).collect();
    r.at = format!("Gateway {name}:");
    let class = &gw["spec"]["gatewayClassName"];
    r.expect("gatewayClassName", class, GATEWAY_CLASS);
    let secure = c.app.local_env.iter().any(|(k, _)| *k == "COOKIE_SECURE");
    let https = listeners.iter().any(|l| l["protocol"] == "HTTPS");
    r.check(secure && !https, "no HTTPS listener for a secure cookie");
    for l in listeners {
        r.at = format!("Gateway {name} listener {}:", text(&l["name"]));
        r.expect("hostname", &l["hostname"], host);
        // no route of another namespace may attach
        let from = &l["allowedRoutes"]["namespaces"]["from"];
        r.expect("allowedRoutes from", from, "Same");
        if l["protocol"] != "HTTPS" {
            continue;
        }
        let tls = &l["tls"];
        let mode = tls["mode"].as_str().unwrap_or("Terminate");
        r.check(mode != "Terminate", "TLS mode is not Terminate");
        let mut certificates = list(&tls["certificateRefs"]).peekable();
        let none = certificates.peek().is_none();
        r.check(none, "HTTPS without certificateRefs");
        for cert in certificates.filter(|cert| !local_ref(cert, "Secret", "")) {
            r.check(true, format!("certificateRef {cert}: no Secret here"));
        }
    }
}

/// An HTTPRoute: its parents, hostnames and backends (public Services of the app); the
/// routing table it makes, a Service backend with a port per rule, is [`router`]'s.
fn check_route(c: &Contract, m: &Manifests, route: &Value, r: &mut Report) {
    let (spec, host) = (&route["spec"], c.app.ingress.host);
    r.at = format!("HTTPRoute {}:", manifest::name(route));
    r.check(list(&spec["parentRefs"]).next().is_none(), "no parentRefs");
    for parent in list(&spec["parentRefs"]) {
        let name = text(&parent["name"]);
        let local = local_ref(parent, "Gateway", GATEWAY_API_GROUP);
        let gateway = m.get("Gateway", name).filter(|_| local);
        r.check(gateway.is_none(), format!("parentRef {parent}: no Gateway"));
        let mut listeners = gateway.iter().flat_map(|gw| list(&gw["spec"]["listeners"]));
        let section = parent["sectionName"].as_str().filter(|_| gateway.is_some());
        if let Some(section) = section.filter(|s| !listeners.any(|l| l["name"] == *s)) {
            r.check(true, format!("Gateway {name} has no listener {section}"));
        }
    }
    let hostnames: Vec<&str> = list(&spec["hostnames"]).filter_map(Value::as_str).collect();
    r.check(hostnames != [host], format!("hostnames are {hostnames:?}"));
    for backend in list(&spec["rules"]).flat_map(|rule| list(&rule["backendRefs"])) {
        let (service, port) = (text(&backend["name"]), &backend["port"]);
        r.at = format!("HTTPRoute {} backendRef {service}:", manifest::name(route));
        r.check(!backend["namespace"].is_null(), "is not of the namespace");
        let ports = m.get("Service", service).map(|s| list(&s["spec"]["ports"]));
        let found = ports.is_some_and(|mut ports| ports.any(|p| p["port"] == *port));
        r.check(!found, format!("no such Service port {port}"));
        let public = c.app.ingress.paths.iter().any(|p| p.2 == service);
        r.check(!public, "is not one of the Ingress's backends");
    }
}

/// The Gateway API objects (and no Ingress), and the contract's requests routed by them.
pub fn check(c: &Contract, m: &Manifests) -> Vec<String> {
    let mut r = Report::default();
    let (ingresses, gateways) = (m.of_kind("Ingress").count(), m.of_kind("Gateway").count());
    r.at = format!("{GATEWAY_OVERLAY}:");
    r.check(ingresses > 0, "still deploys an Ingress");
    r.check(gateways != 1, format!("{gateways} Gateways, not 1"));
    r.check(m.of_kind("HTTPRoute").next().is_none(), "no HTTPRoute");
    for gw in m.of_kind("Gateway") {
        check_gateway(c, gw, &mut r);
    }
    for route in m.of_kind("HTTPRoute") {
        check_route(c, m, route, &mut r);
    }
    match router(m, c.app.ingress.host) {
        Ok(router) => r.problems.extend(c.check_routes(&router)),
        Err(e) => r.problems.push(e.to_string()),
    }
    r.problems
}
