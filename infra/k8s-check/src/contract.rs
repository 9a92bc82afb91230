//! The Kubernetes part of the wire contract (`shared/spec/blog.md`): object
//! names, labels, container names, ports, the NodePort and the Ingress.

use serde_json::Value;

use crate::ingress::{Backend, BackendPort, Router, USE_REGEX_ANNOTATION};
use crate::manifest::{self, Manifests, string_map};

/// One service of the contract.
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

/// The six services.
pub const SERVICES: [ServiceContract; 6] = [
    ServiceContract {
        app: "posts",
        port: 4000,
        deployment: "posts-depl",
        service: "posts-clusterip-srv",
    },
    ServiceContract {
        app: "comments",
        port: 4001,
        deployment: "comments-depl",
        service: "comments-srv",
    },
    ServiceContract {
        app: "query",
        port: 4002,
        deployment: "query-depl",
        service: "query-srv",
    },
    ServiceContract {
        app: "moderation",
        port: 4003,
        deployment: "moderation-depl",
        service: "moderation-srv",
    },
    ServiceContract {
        app: "event-bus",
        port: 4005,
        deployment: "event-bus-depl",
        service: "event-bus-srv",
    },
    ServiceContract {
        app: "client",
        port: 3000,
        deployment: "client-depl",
        service: "client-srv",
    },
];

/// The contract entry of a service.
pub fn service(app: &str) -> Option<&'static ServiceContract> {
    SERVICES.iter().find(|s| s.app == app)
}

/// The NodePort Service exposing posts.
pub const NODE_PORT_SERVICE: &str = "posts-srv";
/// The Ingress.
pub const INGRESS_NAME: &str = "ingress-srv";
/// Its host.
pub const INGRESS_HOST: &str = "posts.com";
/// Its class.
pub const INGRESS_CLASS: &str = "nginx";

/// One path of the contract's Ingress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngressPath {
    /// `path`.
    pub path: &'static str,
    /// `pathType`.
    pub path_type: &'static str,
    /// Backend Service.
    pub service: &'static str,
    /// Backend port.
    pub port: u16,
}

/// The Ingress paths, in this order.
pub const INGRESS_PATHS: [IngressPath; 4] = [
    IngressPath {
        path: "/posts/create",
        path_type: "Prefix",
        service: "posts-clusterip-srv",
        port: 4000,
    },
    IngressPath {
        path: "/posts",
        path_type: "Prefix",
        service: "query-srv",
        port: 4002,
    },
    IngressPath {
        path: "/posts/?(.*)/comments",
        path_type: "ImplementationSpecific",
        service: "comments-srv",
        port: 4001,
    },
    IngressPath {
        path: "/?(.*)",
        path_type: "ImplementationSpecific",
        service: "client-srv",
        port: 3000,
    },
];

/// Requests and the Service that must answer them through the Ingress.
pub const ROUTES: [(&str, &str, u16); 6] = [
    ("/posts/create", "posts-clusterip-srv", 4000),
    ("/posts", "query-srv", 4002),
    ("/posts/stream", "query-srv", 4002),
    ("/posts/abc123/comments", "comments-srv", 4001),
    ("/", "client-srv", 3000),
    ("/app.js", "client-srv", 3000),
];

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
                        && name != svc.app
                    {
                        problems.push(format!(
                            "Deployment {}: SWITCHYARD_SERVICE={name}, not {}",
                            svc.deployment, svc.app
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

/// Checks the NodePort Service `posts-srv` (4000 -> 4000).
pub fn check_node_port(m: &Manifests) -> Vec<String> {
    check_port_service(m, NODE_PORT_SERVICE, "posts", 4000, "NodePort")
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
    let expected: Vec<(String, String, String)> = INGRESS_PATHS
        .iter()
        .map(|p| {
            let backend = Backend {
                service: p.service.to_owned(),
                port: BackendPort::Number(u64::from(p.port)),
            };
            (
                p.path.to_owned(),
                p.path_type.to_owned(),
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
    ROUTES
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
}
