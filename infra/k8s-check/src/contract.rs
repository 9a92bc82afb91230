//! The Kubernetes part of the wire contract, as the app registry declares it: object
//! names, labels, container names, ports, the extra Services (the blog's NodePort), the
//! Ingress, the event bus's subscribers, and the operational port.

use std::sync::LazyLock;

use serde_json::Value;
use switchyard_registry::{App, BLOG, Consumes, Kind};

use crate::ingress::{Backend, BackendPort, Router, USE_REGEX_ANNOTATION};
use crate::manifest::{self, Manifests, string_map};

/// The app whose manifests live under `infra/k8s/`.
pub static APP: &App = &BLOG;

/// The container port (named `ops`) of every service's `/healthz`, `/readyz` and
/// `/metrics` in the cluster: one port for all, never targeted by a Service.
pub const OPS_PORT: u16 = 9090;

/// One deployed service of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceContract {
    /// Label `app`, container name, `SWITCHYARD_SERVICE`, image `switchyard/<app>`.
    pub app: &'static str,
    /// Container port = Service port = targetPort.
    pub port: u16,
    /// Deployment name.
    pub deployment: &'static str,
    /// ClusterIP Service name.
    pub service: &'static str,
}

/// The deployed services, from the registry.
pub static SERVICES: LazyLock<Vec<ServiceContract>> = LazyLock::new(|| {
    APP.services
        .iter()
        .filter_map(|s| {
            Some(ServiceContract {
                app: s.name,
                port: s.contract_port,
                deployment: s.deployment?,
                service: s.k8s_service?,
            })
        })
        .collect()
});

/// Whether `name` (as `switchyard serve` takes it) resolves, in the registry, to `service`
/// of [`APP`].
pub fn names_service(name: &str, service: &str) -> bool {
    switchyard_registry::resolve(name)
        .is_ok_and(|r| r.app.name == APP.name && r.service.name == service)
}

/// The contract entry of a service.
pub fn service(app: &str) -> Option<&'static ServiceContract> {
    SERVICES.iter().find(|s| s.app == app)
}

/// The Ingress.
pub static INGRESS_NAME: &str = BLOG.ingress.name;
/// Its host.
pub static INGRESS_HOST: &str = BLOG.ingress.host;
/// Its class.
pub static INGRESS_CLASS: &str = BLOG.ingress.class;

/// The event bus's `SUBSCRIBERS` in the cluster: every consuming service by name, at its
/// ClusterIP Service, with its types (the event bus reads the same syntax).
pub fn expected_subscribers() -> Vec<String> {
    APP.subscribers()
        .filter_map(|s| {
            let host = s.k8s_service?;
            let mut spec = format!("{}=http://{host}:{}", s.name, s.contract_port);
            if let Consumes::Only(types) = s.consumes {
                spec.push_str(&format!(";types={}", types.join("|")));
            }
            Some(spec)
        })
        .collect()
}

/// Checks the event bus's `SUBSCRIBERS` against the registry.
pub fn check_subscribers(m: &Manifests) -> Vec<String> {
    let Some(bus) = APP.of_kind(Kind::EventBus).next() else {
        return Vec::new();
    };
    let Some(deployment) = bus.deployment else {
        return Vec::new();
    };
    let Some(w) = m.workload("Deployment", deployment) else {
        return Vec::new();
    };
    let Some(c) = w
        .app_containers()
        .into_iter()
        .find(|c| c.name() == bus.name)
    else {
        return vec![format!(
            "Deployment {deployment}: no container {}",
            bus.name
        )];
    };
    let env = m.env(&c);
    let actual: Vec<String> = env
        .vars
        .get("SUBSCRIBERS")
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    let expected = expected_subscribers();
    if actual == expected {
        Vec::new()
    } else {
        vec![format!(
            "Deployment {deployment}: SUBSCRIBERS is {actual:?}, the registry says {expected:?}"
        )]
    }
}

/// Checks the operational endpoints of every deployed service: a container port named
/// `ops` ([`OPS_PORT`]), `OPS_PORT` set to it, the probes on it, the scrape annotations
/// naming it, and no Service routing to it (so no Ingress can make it public).
pub fn check_ops(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    for svc in SERVICES.iter() {
        let Some(w) = m.workload("Deployment", svc.deployment) else {
            continue;
        };
        let Some(c) = w.app_containers().into_iter().find(|c| c.name() == svc.app) else {
            continue;
        };
        let at = format!("Deployment {} container {}", svc.deployment, svc.app);
        if !c
            .ports()
            .iter()
            .any(|(name, p)| *name == Some("ops") && *p == u64::from(OPS_PORT))
        {
            problems.push(format!("{at}: no container port ops = {OPS_PORT}"));
        }
        if m.env(&c).vars.get("OPS_PORT") != Some(&OPS_PORT.to_string()) {
            problems.push(format!("{at}: OPS_PORT is not {OPS_PORT}"));
        }
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let port = &c.spec[probe]["httpGet"]["port"];
            if !c.spec[probe].is_null() && c.resolve_port(port) != Some(u64::from(OPS_PORT)) {
                problems.push(format!("{at}: {probe} is not on the ops port"));
            }
        }
        let annotations = string_map(&w.object["spec"]["template"]["metadata"]["annotations"]);
        for (key, want) in [
            ("prometheus.io/scrape", "true".to_string()),
            ("prometheus.io/port", OPS_PORT.to_string()),
            ("prometheus.io/path", "/metrics".to_string()),
        ] {
            if annotations.get(key) != Some(&want) {
                problems.push(format!("{at}: pod annotation {key} is not {want:?}"));
            }
        }
        for service in m.of_kind("Service") {
            if string_map(&service["spec"]["selector"])
                .get("app")
                .map(String::as_str)
                != Some(svc.app)
            {
                continue;
            }
            for port in service["spec"]["ports"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let target = if port["targetPort"].is_null() {
                    &port["port"]
                } else {
                    &port["targetPort"]
                };
                if c.resolve_port(target) == Some(u64::from(OPS_PORT)) {
                    problems.push(format!(
                        "Service {} routes to {}'s ops port",
                        manifest::name(service),
                        svc.app
                    ));
                }
            }
        }
    }
    problems
}

/// Checks the Deployment and ClusterIP Service of a contract service.
pub fn check_service(m: &Manifests, svc: &ServiceContract) -> Vec<String> {
    let mut problems = Vec::new();
    let app_labels = |v: &Value| string_map(v).get("app").cloned();
    match m.workload("Deployment", svc.deployment) {
        None => problems.push(format!("Deployment {} is missing", svc.deployment)),
        Some(w) => {
            let d = w.object;
            if app_labels(&d["metadata"]["labels"]).as_deref() != Some(svc.app) {
                problems.push(format!(
                    "Deployment {}: label app is not {:?}",
                    svc.deployment, svc.app
                ));
            }
            let selector = string_map(&d["spec"]["selector"]["matchLabels"]);
            if selector.get("app").map(String::as_str) != Some(svc.app) {
                problems.push(format!(
                    "Deployment {}: selector app is not {:?}",
                    svc.deployment, svc.app
                ));
            }
            if w.pod_labels.get("app").map(String::as_str) != Some(svc.app) {
                problems.push(format!(
                    "Deployment {}: pod label app is not {:?}",
                    svc.deployment, svc.app
                ));
            }
            match w.app_containers().into_iter().find(|c| c.name() == svc.app) {
                None => problems.push(format!(
                    "Deployment {}: no container named {:?}",
                    svc.deployment, svc.app
                )),
                Some(c) => {
                    if !c.ports().iter().any(|(_, p)| *p == u64::from(svc.port)) {
                        problems.push(format!(
                            "Deployment {}: container {} does not expose port {}",
                            svc.deployment, svc.app, svc.port
                        ));
                    }
                    let image = manifest::image_repository(c.image());
                    if image != format!("switchyard/{}", svc.app) {
                        problems.push(format!(
                            "Deployment {}: container {} runs image {image}, not switchyard/{}",
                            svc.deployment, svc.app, svc.app
                        ));
                    }
                    let env = m.env(&c);
                    if let Some(port) = env.vars.get("PORT")
                        && port != &svc.port.to_string()
                    {
                        problems.push(format!(
                            "Deployment {}: PORT={port}, not {}",
                            svc.deployment, svc.port
                        ));
                    }
                    if let Some(name) = env.vars.get("SWITCHYARD_SERVICE")
                        && !names_service(name, svc.app)
                    {
                        problems.push(format!(
                            "Deployment {}: SWITCHYARD_SERVICE={name} is not {}/{} in the registry",
                            svc.deployment, APP.name, svc.app
                        ));
                    }
                }
            }
        }
    }
    problems.extend(check_port_service(
        m,
        svc.service,
        svc.app,
        svc.port,
        "ClusterIP",
    ));
    problems
}

/// Checks a Service: type, selector `app`, and port -> targetPort.
fn check_port_service(
    m: &Manifests,
    name: &str,
    app: &str,
    port: u16,
    service_type: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(s) = m.get("Service", name) else {
        return vec![format!("Service {name} is missing")];
    };
    let actual_type = s["spec"]["type"].as_str().unwrap_or("ClusterIP");
    if actual_type != service_type {
        problems.push(format!(
            "Service {name} is {actual_type}, not {service_type}"
        ));
    }
    if string_map(&s["spec"]["selector"])
        .get("app")
        .map(String::as_str)
        != Some(app)
    {
        problems.push(format!("Service {name}: selector app is not {app:?}"));
    }
    let ports = s["spec"]["ports"].as_array().cloned().unwrap_or_default();
    let found = ports.iter().any(|p| {
        p["port"].as_u64() == Some(u64::from(port))
            && (p["targetPort"].is_null()
                || p["targetPort"].as_u64() == Some(u64::from(port))
                || p["targetPort"].as_str() == Some(&port.to_string()))
    });
    if !found {
        problems.push(format!(
            "Service {name}: no port {port} -> targetPort {port}"
        ));
    }
    problems
}

/// Checks the extra Services the registry declares (the blog's NodePort `posts-srv`).
pub fn check_node_port(m: &Manifests) -> Vec<String> {
    APP.services
        .iter()
        .flat_map(|s| {
            s.extra_k8s_services.iter().flat_map(move |extra| {
                check_port_service(m, extra.name, s.name, s.contract_port, extra.kind)
            })
        })
        .collect()
}

/// Checks that neither the Deployment nor the Service of a service exists.
pub fn check_absent(m: &Manifests, svc: &ServiceContract) -> Vec<String> {
    let mut problems = Vec::new();
    if m.get("Deployment", svc.deployment).is_some() {
        problems.push(format!(
            "Deployment {} should not be deployed",
            svc.deployment
        ));
    }
    if m.get("Service", svc.service).is_some() {
        problems.push(format!("Service {} should not be deployed", svc.service));
    }
    problems
}

/// Checks the Ingress object: class, annotation, host, paths in order with
/// their pathTypes and backends.
pub fn check_ingress(ingress: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let name = manifest::name(ingress);
    if manifest::kind(ingress) != "Ingress" || name != INGRESS_NAME {
        problems.push(format!(
            "expected Ingress {INGRESS_NAME}, got {}",
            manifest::id(ingress)
        ));
    }
    if ingress["apiVersion"].as_str() != Some("networking.k8s.io/v1") {
        problems.push(format!(
            "Ingress {name}: apiVersion is not networking.k8s.io/v1"
        ));
    }
    if ingress["spec"]["ingressClassName"].as_str() != Some(INGRESS_CLASS) {
        problems.push(format!(
            "Ingress {name}: ingressClassName is not {INGRESS_CLASS}"
        ));
    }
    if ingress["metadata"]["annotations"][USE_REGEX_ANNOTATION].as_str() != Some("true") {
        problems.push(format!(
            "Ingress {name}: annotation {USE_REGEX_ANNOTATION} is not \"true\""
        ));
    }
    let rules = ingress["spec"]["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let Some(rule) = rules
        .iter()
        .find(|r| r["host"].as_str() == Some(INGRESS_HOST))
    else {
        problems.push(format!("Ingress {name}: no rule for host {INGRESS_HOST}"));
        return problems;
    };
    let paths = rule["http"]["paths"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let actual: Vec<(String, String, String)> = paths
        .iter()
        .map(|p| {
            let backend = Backend::from_value(&p["backend"])
                .map_or_else(|e| e.to_string(), |b| b.to_string());
            (
                p["path"].as_str().unwrap_or("").to_owned(),
                p["pathType"].as_str().unwrap_or("").to_owned(),
                backend,
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = APP
        .ingress
        .paths
        .iter()
        .map(|(path, path_type, service, port)| {
            let backend = Backend {
                service: (*service).to_owned(),
                port: BackendPort::Number(u64::from(*port)),
            };
            (
                (*path).to_owned(),
                (*path_type).to_owned(),
                backend.to_string(),
            )
        })
        .collect();
    if actual != expected {
        problems.push(format!(
            "Ingress {name}: paths of {INGRESS_HOST} are {actual:?}, the contract says {expected:?}"
        ));
    }
    problems
}

/// Checks that the contract's requests reach the contract's Services.
pub fn check_routes(router: &Router) -> Vec<String> {
    APP.routes
        .iter()
        .filter_map(|(uri, service, port)| {
            let want = format!("{service}:{port}");
            let got = router.route(uri).map(|l| l.backend.to_string());
            (got.as_deref() != Some(want.as_str())).then(|| {
                format!(
                    "{} {uri} routes to {}, expected {want}",
                    router.host(),
                    got.unwrap_or_else(|| "nothing".to_owned())
                )
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: ingress-srv
  annotations: {nginx.ingress.kubernetes.io/use-regex: "true"}
spec:
  ingressClassName: nginx
  rules:
    - host: posts.com
      http:
        paths:
          - {path: /posts/create, pathType: Prefix, backend: {service: {name: posts-clusterip-srv, port: {number: 4000}}}}
          - {path: /posts, pathType: Prefix, backend: {service: {name: query-srv, port: {number: 4002}}}}
          - {path: "/posts/?(.*)/comments", pathType: ImplementationSpecific, backend: {service: {name: comments-srv, port: {number: 4001}}}}
          - {path: "/?(.*)", pathType: ImplementationSpecific, backend: {service: {name: client-srv, port: {number: 3000}}}}
"#;

    fn parse(text: &str) -> Value {
        crate::parse_yaml_documents(text).unwrap().remove(0)
    }

    #[test]
    fn accepts_the_contract_ingress() {
        let ingress = parse(GOOD);
        assert_eq!(check_ingress(&ingress), Vec::<String>::new());
        let router = Router::new([&ingress], INGRESS_HOST).unwrap();
        assert_eq!(check_routes(&router), Vec::<String>::new());
    }

    #[test]
    fn rejects_reordered_paths_and_missing_annotation() {
        let swapped = GOOD
            .replace("- {path: /posts/create", "- {path: /TMP")
            .replace(
                "- {path: /posts, pathType: Prefix",
                "- {path: /posts/create, pathType: Prefix",
            )
            .replace("- {path: /TMP", "- {path: /posts");
        let problems = check_ingress(&parse(&swapped));
        assert_eq!(problems.len(), 1, "{problems:?}");
        let plain = GOOD.replace("\"true\"", "\"false\"");
        let ingress = parse(&plain);
        assert_eq!(check_ingress(&ingress).len(), 1);
        // without regexes "/posts/abc123/comments" goes to query and "/app.js" nowhere
        let router = Router::new([&ingress], INGRESS_HOST).unwrap();
        let problems = check_routes(&router);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("/posts/abc123/comments")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("/app.js")),
            "{problems:?}"
        );
    }

    #[test]
    fn checks_service_names_labels_and_ports() {
        let text = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: query-depl, labels: {app: query}}
spec:
  selector: {matchLabels: {app: query}}
  template:
    metadata: {labels: {app: query}}
    spec:
      containers:
        - name: query
          image: switchyard/query
          ports: [{containerPort: 4002}]
          env: [{name: PORT, value: "4002"}]
---
apiVersion: v1
kind: Service
metadata: {name: query-srv}
spec:
  selector: {app: query}
  ports: [{port: 4002, targetPort: 4002}]
"#;
        let m = Manifests::parse(text).unwrap();
        let query = service("query").unwrap();
        assert_eq!(check_service(&m, query), Vec::<String>::new());
        assert_eq!(
            check_absent(&m, service("event-bus").unwrap()),
            Vec::<String>::new()
        );
        assert_eq!(check_absent(&m, query).len(), 2);
        let wrong = Manifests::parse(
            &text
                .replace("value: \"4002\"", "value: \"4000\"")
                .replace("name: query\n", "name: q\n"),
        )
        .unwrap();
        let problems = check_service(&wrong, query);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("no container named"));
        assert!(check_node_port(&m)[0].contains("posts-srv is missing"));
    }

    #[test]
    fn ops_endpoints_must_be_on_their_own_port_and_never_routed() {
        let good = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: query-depl, labels: {app: query}}
spec:
  selector: {matchLabels: {app: query}}
  template:
    metadata:
      labels: {app: query}
      annotations: {prometheus.io/scrape: "true", prometheus.io/port: "9090", prometheus.io/path: /metrics}
    spec:
      containers:
        - name: query
          image: switchyard/query
          ports: [{name: http, containerPort: 4002}, {name: ops, containerPort: 9090}]
          env: [{name: PORT, value: "4002"}, {name: OPS_PORT, value: "9090"}]
          livenessProbe: {httpGet: {path: /healthz, port: ops}}
          readinessProbe: {httpGet: {path: /readyz, port: ops}}
---
apiVersion: v1
kind: Service
metadata: {name: query-srv}
spec:
  selector: {app: query}
  ports: [{port: 4002, targetPort: http}]
"#;
        let m = Manifests::parse(good).unwrap();
        assert_eq!(check_ops(&m), Vec::<String>::new());
        let routed =
            Manifests::parse(&good.replace("targetPort: http", "targetPort: ops")).unwrap();
        assert!(check_ops(&routed)[0].contains("routes to query's ops port"));
        let probed =
            Manifests::parse(&good.replace("/readyz, port: ops", "/readyz, port: http")).unwrap();
        assert!(check_ops(&probed)[0].contains("readinessProbe"));
        let unannotated = Manifests::parse(&good.replace(
            "prometheus.io/port: \"9090\"",
            "prometheus.io/port: \"4002\"",
        ))
        .unwrap();
        assert!(check_ops(&unannotated)[0].contains("prometheus.io/port"));
    }
}
