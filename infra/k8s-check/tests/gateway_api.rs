//! The Gateway API overlay of every app (`infra/k8s/<app>/overlays/prod-gateway`, rendered
//! to `target/k8s/<app>-prod-gateway.yaml`): prod with the Ingress swapped for a Gateway
//! and HTTPRoutes (`infra/k8s/<app>/gateway-api`), cross-checked like prod, its routing
//! table equal to the Ingress's, its NetworkPolicies admitting the gateway's proxies
//! instead of ingress-nginx. (infra/validate.sh checks the objects against the Gateway
//! API's CRD schemas.)
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;

use serde_json::Value;
use switchyard_k8s_check::contract::{Contract, Overlay, contracts};
use switchyard_k8s_check::gateway::{self, GATEWAY_OVERLAY};
use switchyard_k8s_check::ingress::Router;
use switchyard_k8s_check::secrets;
use switchyard_k8s_check::{Manifests, checks, manifest, parse_yaml_documents, render};

fn rendered(c: Contract, overlay: &str) -> Manifests {
    let root = render::repo_root();
    let text = render::rendered_overlay(&root, c.name(), overlay).unwrap_or_else(|e| {
        panic!(
            "cannot render {}: {e}",
            render::overlay_path(c.name(), overlay)
        )
    });
    Manifests::parse(&text).unwrap()
}

/// As the cluster sees it: with the Secrets infra/README.md creates.
fn deployed(c: Contract) -> Manifests {
    let m = rendered(c, GATEWAY_OVERLAY);
    let readme = fs::read_to_string(render::repo_root().join("infra/README.md")).unwrap();
    let mut objects = m.objects().to_vec();
    for (name, data) in secrets::readme_secrets(&readme)
        .remove(c.name())
        .unwrap_or_default()
    {
        objects.push(secrets::placeholder_secret(&name, &data));
    }
    Manifests::from_values(objects)
}

fn gateway_name(m: &Manifests) -> String {
    let gws = gateway::gateways(m);
    assert_eq!(gws.len(), 1, "one Gateway");
    manifest::name(gws[0]).to_owned()
}

fn fail_on(what: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

#[test]
fn every_gateway_overlay_cross_references() {
    let mut problems = Vec::new();
    for c in contracts() {
        let m = &deployed(c);
        let mut p = checks::all(m);
        for svc in c.services(Overlay::Prod) {
            p.extend(c.check_service(m, &svc));
        }
        p.extend(c.check_absent(m, Overlay::Prod));
        p.extend(c.check_extra_services(m));
        p.extend(c.check_ops(m, Overlay::Prod));
        p.extend(c.check_secrets(m, Overlay::Prod));
        p.extend(c.check_bus_credentials(m, Overlay::Prod));
        p.extend(gateway::check(&c, m));
        problems.extend(
            p.into_iter()
                .map(|p| format!("{}/{GATEWAY_OVERLAY}: {p}", c.name())),
        );
    }
    fail_on("gateway overlay cross references", problems);
}

#[test]
fn gateway_overlay_network_policies_admit_the_gateway_instead_of_ingress_nginx() {
    let mut problems = Vec::new();
    for c in contracts() {
        let m = rendered(c, GATEWAY_OVERLAY);
        let gw = gateway_name(&m);
        let proxy = gateway::gateway_proxy(&gw);
        let backends = gateway::http_route_backends(&m);
        let p = c.check_network_policies_via(
            &m,
            Overlay::Prod,
            &proxy,
            &backends,
            &gateway::other_edge_peers(&gw),
        );
        problems.extend(
            p.into_iter()
                .map(|p| format!("{}/{GATEWAY_OVERLAY}: {p}", c.name())),
        );
        // the derivation found a path from the proxy to every public backend
        let needed = c.needed_paths_via(&m, Overlay::Prod, &proxy.id, &backends);
        let reached = needed.iter().filter(|p| p.from == proxy.id).count();
        let routed: std::collections::BTreeSet<&str> =
            c.app.ingress.paths.iter().map(|p| p.2).collect();
        if reached < routed.len() {
            problems.push(format!(
                "{}: the gateway needs {reached} path(s) for {} backend Service(s)",
                c.name(),
                routed.len()
            ));
        }
    }
    fail_on("gateway overlay network policies", problems);
}

#[test]
fn http_routes_give_the_ingress_routing_table() {
    for c in contracts() {
        let host = c.app.ingress.host;
        let m = rendered(c, GATEWAY_OVERLAY);
        let routes = gateway::router(&m, host).unwrap();
        let ingress = Router::new(rendered(c, "prod").of_kind("Ingress"), host).unwrap();
        let problems = c.check_routes(&routes);
        assert!(problems.is_empty(), "{}: {problems:?}", c.name());
        for (uri, ..) in c.app.routes {
            for uri in [uri.to_string(), format!("{uri}/"), format!("{uri}?q=1")] {
                assert_eq!(
                    routes.route(&uri).map(|l| l.backend.to_string()),
                    ingress.route(&uri).map(|l| l.backend.to_string()),
                    "{}: {uri}",
                    c.name()
                );
            }
        }
        // the file the local gateway reads is the deployed HTTPRoute
        let path =
            render::app_dir(&render::repo_root(), c.name()).join("gateway-api/httproutes.yaml");
        let docs = parse_yaml_documents(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            docs.len(),
            1,
            "{}: one document (the gateway reads it)",
            path.display()
        );
        let deployed = m.get("HTTPRoute", manifest::name(&docs[0])).unwrap();
        assert_eq!(deployed["spec"], docs[0]["spec"], "{}", path.display());
    }
}

/// prod-gateway is prod with the Ingress swapped for the Gateway API objects and the
/// controller's NetworkPolicy rules changed: nothing else differs.
#[test]
fn the_gateway_overlay_is_prod_with_the_edge_swapped() {
    fn by_id(m: &Manifests) -> BTreeMap<String, Value> {
        m.objects()
            .iter()
            .map(|o| (manifest::id(o), o.clone()))
            .collect()
    }
    for c in contracts() {
        let mut prod = by_id(&rendered(c, "prod"));
        let mut gw = by_id(&rendered(c, GATEWAY_OVERLAY));
        let ingress = format!("Ingress/{}", c.app.ingress.name);
        assert!(
            prod.remove(&ingress).is_some(),
            "{}: prod has {ingress}",
            c.name()
        );
        gw.retain(|id, _| {
            !gateway::GATEWAY_API_KINDS
                .iter()
                .any(|k| id.starts_with(&format!("{k}/")))
        });
        let policy = "NetworkPolicy/allow-ingress-controller";
        let (a, b) = (prod.remove(policy).unwrap(), gw.remove(policy).unwrap());
        assert_eq!(
            a["spec"]["podSelector"],
            b["spec"]["podSelector"],
            "{}: {policy}",
            c.name()
        );
        assert_ne!(
            a["spec"]["ingress"],
            b["spec"]["ingress"],
            "{}: {policy}",
            c.name()
        );
        assert_eq!(
            prod.keys().collect::<Vec<_>>(),
            gw.keys().collect::<Vec<_>>(),
            "{}: objects",
            c.name()
        );
        for (id, object) in &prod {
            assert_eq!(object, &gw[id], "{}: {id} differs from prod", c.name());
        }
    }
}

/// Every Secret a Gateway takes its certificate from is one infra/README.md tells how to
/// create (`kubectl -n <app> create secret tls <name>`): it is never committed.
#[test]
fn gateway_certificates_are_created_as_the_readme_says() {
    let readme = fs::read_to_string(render::repo_root().join("infra/README.md")).unwrap();
    let words: Vec<&str> = readme.split_whitespace().collect();
    for c in contracts() {
        let m = rendered(c, GATEWAY_OVERLAY);
        for name in gateway::certificate_secrets(&m) {
            let documented = words.windows(6).any(|w| {
                w[0] == "-n"
                    && w[1] == c.name()
                    && w[2] == "create"
                    && w[3] == "secret"
                    && w[4] == "tls"
                    && w[5] == name
            });
            assert!(
                documented,
                "{}: infra/README.md does not create the TLS Secret {name} (kubectl -n {} create secret tls {name} ...)",
                c.name(),
                c.name()
            );
            assert!(
                m.get("Secret", &name).is_none(),
                "{}: the TLS Secret {name} is committed",
                c.name()
            );
        }
    }
}
