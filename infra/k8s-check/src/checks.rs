//! Cross-reference checks over rendered manifests. Each check returns the
//! problems it found as readable messages (empty = fine).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

use crate::ingress::{Backend, BackendPort};
use crate::manifest::{self, Container, Manifests, Workload, string_map};

/// The HTTP paths the `switchyard` binary serves for probes.
pub const LIVENESS_PATH: &str = "/healthz";
/// Readiness path.
pub const READINESS_PATH: &str = "/readyz";

/// Every Service (but ExternalName ones) has a selector that matches the pod
/// template labels of at least one workload.
pub fn service_selectors(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    for s in m.of_kind("Service") {
        if s["spec"]["type"].as_str() == Some("ExternalName") {
            continue;
        }
        let selector = string_map(&s["spec"]["selector"]);
        if selector.is_empty() {
            problems.push(format!("{} has no selector", manifest::id(s)));
        } else if m.selected_workloads(&selector).is_empty() {
            problems.push(format!(
                "{} selects {selector:?}: no workload has these pod labels",
                manifest::id(s)
            ));
        }
    }
    problems
}

/// Every Service port's targetPort (number or name; default = port) is a
/// container port of every workload the Service selects.
pub fn service_target_ports(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    for s in m.of_kind("Service") {
        let selected = m.selected_workloads(&string_map(&s["spec"]["selector"]));
        for p in s["spec"]["ports"].as_array().into_iter().flatten() {
            let target = if p["targetPort"].is_null() {
                &p["port"]
            } else {
                &p["targetPort"]
            };
            for w in &selected {
                let served = w
                    .app_containers()
                    .iter()
                    .any(|c| c.resolve_port(target).is_some());
                if !served {
                    problems.push(format!(
                        "{} port {} -> targetPort {target}: not a container port of {}",
                        manifest::id(s),
                        p["port"],
                        w.id()
                    ));
                }
            }
        }
    }
    problems
}

/// The Service port a backend refers to exists.
pub(crate) fn service_has_port(
    m: &Manifests,
    service: &str,
    port: &BackendPort,
) -> Result<(), String> {
    let s = m
        .get("Service", service)
        .ok_or_else(|| format!("Service {service} does not exist"))?;
    let ports = s["spec"]["ports"].as_array().cloned().unwrap_or_default();
    let found = ports.iter().any(|p| match port {
        BackendPort::Number(n) => p["port"].as_u64() == Some(*n),
        BackendPort::Name(name) => p["name"].as_str() == Some(name.as_str()),
    });
    if found {
        Ok(())
    } else {
        Err(format!("Service {service} has no port {port}"))
    }
}

/// Every Ingress backend (rules and defaultBackend) is an existing Service and port.
pub fn ingress_backends(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    for ingress in m.of_kind("Ingress") {
        let mut backends = Vec::new();
        if !ingress["spec"]["defaultBackend"].is_null() {
            backends.push(&ingress["spec"]["defaultBackend"]);
        }
        for rule in ingress["spec"]["rules"].as_array().into_iter().flatten() {
            for p in rule["http"]["paths"].as_array().into_iter().flatten() {
                backends.push(&p["backend"]);
            }
        }
        for b in backends {
            match Backend::from_value(b) {
                Ok(backend) => {
                    if let Err(e) = service_has_port(m, &backend.service, &backend.port) {
                        problems.push(format!("{} backend {backend}: {e}", manifest::id(ingress)));
                    }
                }
                Err(e) => problems.push(format!("{}: {e}", manifest::id(ingress))),
            }
        }
    }
    problems
}

/// A URL found in a configuration value that names a host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundUrl {
    /// The URL as written (up to the port).
    pub text: String,
    /// Scheme, lower case.
    pub scheme: String,
    /// Host.
    pub host: String,
    /// Explicit port, or the scheme's default.
    pub port: Option<u64>,
}

fn url_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(?i)\b(https?|nats|tls|postgres(?:ql)?)://(?:[^\s/@,]*@)?([a-z0-9][a-z0-9.-]*)(?::(\d+))?")
            .expect("a valid regex")
    })
}

/// Finds `scheme://[user[:password]@]host[:port]` URLs (http, https, nats,
/// postgres) in a text, e.g. a comma-separated list.
pub fn find_urls(text: &str) -> Vec<FoundUrl> {
    url_regex()
        .captures_iter(text)
        .map(|c| {
            let scheme = c.get(1).map_or("", |m| m.as_str()).to_ascii_lowercase();
            let default_port = match scheme.as_str() {
                "http" => Some(80),
                "https" => Some(443),
                "nats" | "tls" => Some(4222),
                "postgres" | "postgresql" => Some(5432),
                _ => None,
            };
            FoundUrl {
                text: c.get(0).map_or("", |m| m.as_str()).to_owned(),
                host: c.get(2).map_or("", |m| m.as_str()).to_ascii_lowercase(),
                port: c
                    .get(3)
                    .and_then(|p| p.as_str().parse().ok())
                    .or(default_port),
                scheme,
            }
        })
        .collect()
}

/// The in-cluster Service a host names, if it is a cluster name at all:
/// `svc`, `svc.ns[.svc[.cluster.local]]`, or `pod-0.headless-svc...`.
/// Returns None for loopback, IP addresses and names outside the cluster.
fn cluster_service<'m>(m: &'m Manifests, host: &str) -> Option<Result<&'m Value, String>> {
    if host == "localhost" || host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let cluster_suffix = host.ends_with(".svc") || host.ends_with(".svc.cluster.local");
    let first = m.get("Service", labels[0]);
    if let Some(s) = first {
        return Some(Ok(s));
    }
    // pod DNS name under a headless Service
    if labels.len() >= 2
        && let Some(s) = m.get("Service", labels[1])
        && s["spec"]["clusterIP"].as_str() == Some("None")
    {
        return Some(Ok(s));
    }
    if labels.len() == 1 || cluster_suffix {
        return Some(Err(format!("no Service named {:?}", labels[0])));
    }
    None // e.g. an external host name
}

fn check_url(m: &Manifests, url: &FoundUrl) -> Result<(), String> {
    let Some(service) = cluster_service(m, &url.host) else {
        return Ok(());
    };
    let service = service?;
    let Some(port) = url.port else {
        return Ok(());
    };
    let ports = service["spec"]["ports"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if ports.iter().any(|p| p["port"].as_u64() == Some(port)) {
        Ok(())
    } else {
        Err(format!(
            "Service {} has no port {port}",
            manifest::name(service)
        ))
    }
}

/// Every URL in container environments (after resolving ConfigMaps and
/// Secrets), container arguments, ConfigMaps and Secrets that names an
/// in-cluster host names an existing Service and one of its ports.
pub fn service_urls(m: &Manifests) -> Vec<String> {
    let mut values: Vec<(String, String)> = Vec::new();
    for w in m.workloads() {
        for c in w.containers() {
            let env = m.env(&c);
            for (k, v) in env.vars {
                values.push((format!("{} container {} env {k}", w.id(), c.name()), v));
            }
            for arg in c.command_line() {
                values.push((
                    format!("{} container {} args", w.id(), c.name()),
                    arg.to_owned(),
                ));
            }
        }
    }
    for cm in m.of_kind("ConfigMap") {
        for (k, v) in string_map(&cm["data"]) {
            values.push((format!("{} key {k}", manifest::id(cm)), v));
        }
    }
    for s in m.of_kind("Secret") {
        for (k, v) in m.secret_data(manifest::name(s)).unwrap_or_default() {
            values.push((format!("{} key {k}", manifest::id(s)), v));
        }
    }
    let mut problems = BTreeSet::new();
    for (context, value) in values {
        for url in find_urls(&value) {
            if let Err(e) = check_url(m, &url) {
                problems.insert(format!("{context}: {}: {e}", url.text));
            }
        }
    }
    problems.into_iter().collect()
}

/// ConfigMaps, Secrets and keys referenced by env/envFrom, and ConfigMaps,
/// Secrets and PersistentVolumeClaims referenced by volumes, exist; every
/// volumeMount names a volume (or a volumeClaimTemplate).
pub fn references(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    for w in m.workloads() {
        let mut volume_names: BTreeSet<&str> = BTreeSet::new();
        for v in w.pod_spec["volumes"].as_array().into_iter().flatten() {
            let vname = v["name"].as_str().unwrap_or("");
            volume_names.insert(vname);
            let missing = if let Some(n) = v["configMap"]["name"].as_str() {
                (m.get("ConfigMap", n).is_none()
                    && !v["configMap"]["optional"].as_bool().unwrap_or(false))
                .then(|| format!("ConfigMap {n}"))
            } else if let Some(n) = v["secret"]["secretName"].as_str() {
                (m.get("Secret", n).is_none()
                    && !v["secret"]["optional"].as_bool().unwrap_or(false))
                .then(|| format!("Secret {n}"))
            } else if let Some(n) = v["persistentVolumeClaim"]["claimName"].as_str() {
                m.get("PersistentVolumeClaim", n)
                    .is_none()
                    .then(|| format!("PersistentVolumeClaim {n}"))
            } else {
                None
            };
            if let Some(what) = missing {
                problems.push(format!("{} volume {vname}: {what} does not exist", w.id()));
            }
        }
        for t in w.object["spec"]["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
        {
            volume_names.insert(manifest::name(t));
        }
        for c in w.containers() {
            for p in m.env(&c).problems {
                problems.push(format!("{} container {}: {p}", w.id(), c.name()));
            }
            for mount in c.spec["volumeMounts"].as_array().into_iter().flatten() {
                let n = mount["name"].as_str().unwrap_or("");
                if !volume_names.contains(n) {
                    problems.push(format!(
                        "{} container {}: volumeMount {n} has no volume",
                        w.id(),
                        c.name()
                    ));
                }
            }
        }
    }
    problems
}

/// Every project image (`switchyard/...`) is built by one of `artifacts`, and
/// every artifact is used by some container.
pub fn images_built(m: &Manifests, artifacts: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for w in m.workloads() {
        for c in w.containers() {
            if !c.is_project_image() {
                continue;
            }
            let repo = manifest::image_repository(c.image()).to_owned();
            if !artifacts.contains(&repo) {
                problems.push(format!(
                    "{} container {}: image {repo} is not built by any skaffold artifact",
                    w.id(),
                    c.name()
                ));
            }
            used.insert(repo);
        }
    }
    for a in artifacts.difference(&used) {
        problems.push(format!(
            "skaffold builds {a}, but nothing in these manifests runs it"
        ));
    }
    problems
}

fn probe_problems(
    w: &Workload<'_>,
    c: &Container<'_>,
    field: &str,
    allowed_paths: &[&str],
) -> Vec<String> {
    let probe = &c.spec[field];
    let mut problems = Vec::new();
    let at = format!("{} container {} {field}", w.id(), c.name());
    if probe.is_null() {
        return problems;
    }
    if let Some(http) = probe.get("httpGet") {
        let path = http["path"].as_str().unwrap_or("/");
        if !allowed_paths.is_empty() && !allowed_paths.contains(&path) {
            problems.push(format!("{at}: path {path} is not one of {allowed_paths:?}"));
        }
        if c.resolve_port(&http["port"]).is_none() {
            problems.push(format!(
                "{at}: port {} is not a container port",
                http["port"]
            ));
        }
    } else if let Some(tcp) = probe.get("tcpSocket") {
        if !allowed_paths.is_empty() {
            problems.push(format!("{at}: must be an httpGet probe"));
        }
        if c.resolve_port(&tcp["port"]).is_none() {
            problems.push(format!(
                "{at}: port {} is not a container port",
                tcp["port"]
            ));
        }
    } else if let Some(grpc) = probe.get("grpc") {
        if !allowed_paths.is_empty() {
            problems.push(format!("{at}: must be an httpGet probe"));
        }
        if c.resolve_port(&grpc["port"]).is_none() {
            problems.push(format!(
                "{at}: port {} is not a container port",
                grpc["port"]
            ));
        }
    } else if !allowed_paths.is_empty() {
        problems.push(format!("{at}: must be an httpGet probe"));
    }
    problems
}

/// Project containers have a liveness probe `GET /healthz` and a readiness
/// probe `GET /readyz` (a startup probe may use either) on a container port;
/// probes of other containers use container ports.
pub fn probes(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    for w in m.workloads() {
        for c in w.app_containers() {
            if c.is_project_image() {
                for (field, paths) in [
                    ("livenessProbe", &[LIVENESS_PATH][..]),
                    ("readinessProbe", &[READINESS_PATH][..]),
                ] {
                    if c.spec[field].is_null() {
                        problems.push(format!("{} container {}: no {field}", w.id(), c.name()));
                    }
                    problems.extend(probe_problems(&w, &c, field, paths));
                }
                problems.extend(probe_problems(
                    &w,
                    &c,
                    "startupProbe",
                    &[LIVENESS_PATH, READINESS_PATH],
                ));
            } else {
                for field in ["livenessProbe", "readinessProbe", "startupProbe"] {
                    problems.extend(probe_problems(&w, &c, field, &[]));
                }
            }
        }
    }
    problems
}

/// The drain: every project container's pod waits longer before SIGKILL
/// (terminationGracePeriodSeconds) than the container drains (SHUTDOWN_GRACE_MS, default
/// 10000). The generic hardening (resources, security contexts, capabilities) is
/// checkov's (infra/checkov.yaml).
pub fn drain_time(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    for w in m.workloads() {
        let grace_s = w.pod_spec["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30);
        for c in w.containers() {
            if !c.is_project_image() || c.init {
                continue;
            }
            let grace_ms = m
                .env(&c)
                .vars
                .get("SHUTDOWN_GRACE_MS")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(10_000);
            if grace_s * 1000 <= grace_ms {
                problems.push(format!(
                    "{} container {}: terminationGracePeriodSeconds {grace_s} does not cover SHUTDOWN_GRACE_MS {grace_ms}",
                    w.id(),
                    c.name()
                ));
            }
        }
    }
    problems
}

/// Every PodDisruptionBudget selects some workload.
pub fn disruption_budgets(m: &Manifests) -> Vec<String> {
    m.of_kind("PodDisruptionBudget")
        .filter(|pdb| {
            m.selected_workloads(&string_map(&pdb["spec"]["selector"]["matchLabels"]))
                .is_empty()
        })
        .map(|pdb| format!("{} selects no workload", manifest::id(pdb)))
        .collect()
}

/// Object names are unique per kind.
pub fn unique_names(m: &Manifests) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for o in m.objects() {
        *seen.entry(manifest::id(o)).or_default() += 1;
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, n)| format!("{id} appears {n} times"))
        .collect()
}

/// All of the above but [`images_built`], which needs the skaffold artifacts.
pub fn all(m: &Manifests) -> Vec<String> {
    [
        unique_names(m),
        service_selectors(m),
        service_target_ports(m),
        ingress_backends(m),
        service_urls(m),
        references(m),
        probes(m),
        drain_time(m),
        disruption_budgets(m),
    ]
    .concat()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data:
  EVENT_BUS_URL: http://event-bus-srv:4005
  EXTERNAL: https://example.com/x
  LOCAL: http://127.0.0.1:4000/healthz
---
apiVersion: v1
kind: Secret
metadata: {name: db}
stringData: {posts: "postgres://u:p@postgres-0.postgres:5432/posts"}
---
apiVersion: v1
kind: Service
metadata: {name: event-bus-srv}
spec:
  selector: {app: event-bus}
  ports: [{name: bus, port: 4005, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: postgres}
spec:
  clusterIP: None
  selector: {app: postgres}
  ports: [{port: 5432}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ing}
spec:
  rules:
    - host: posts.com
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: event-bus-srv, port: {name: bus}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: event-bus-depl}
spec:
  selector: {matchLabels: {app: event-bus}}
  template:
    metadata: {labels: {app: event-bus}}
    spec:
      terminationGracePeriodSeconds: 20
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: event-bus
          image: switchyard/event-bus
          ports: [{name: http, containerPort: 4005}]
          envFrom: [{configMapRef: {name: cfg}}]
          env:
            - {name: SUBSCRIBERS, value: "http://event-bus-srv:4005,http://event-bus-srv.default.svc.cluster.local:4005"}
            - {name: DATABASE_URL, valueFrom: {secretKeyRef: {name: db, key: posts}}}
          livenessProbe: {httpGet: {path: /healthz, port: http}}
          readinessProbe: {httpGet: {path: /readyz, port: 4005}}
          resources: {requests: {cpu: 10m, memory: 32Mi}, limits: {cpu: 500m, memory: 128Mi}}
          securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
          volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, emptyDir: {}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: postgres}
spec:
  selector: {matchLabels: {app: postgres}}
  template:
    metadata: {labels: {app: postgres}}
    spec:
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: postgres
          image: postgres:17
          ports: [{containerPort: 5432}]
          readinessProbe: {exec: {command: [pg_isready]}}
          resources: {requests: {cpu: 10m, memory: 32Mi}, limits: {cpu: 500m, memory: 128Mi}}
          securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
          volumeMounts: [{name: data, mountPath: /var/lib/postgresql/data}]
  volumeClaimTemplates: [{metadata: {name: data}}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: bus-pdb}
spec: {minAvailable: 1, selector: {matchLabels: {app: event-bus}}}
"#;

    fn good() -> Manifests {
        Manifests::parse(GOOD).unwrap()
    }

    fn broken(from: &str, to: &str) -> Manifests {
        assert!(GOOD.contains(from), "{from}");
        Manifests::parse(&GOOD.replacen(from, to, 1)).unwrap()
    }

    #[test]
    fn a_consistent_set_has_no_problems() {
        assert_eq!(all(&good()), Vec::<String>::new());
        let artifacts = BTreeSet::from(["switchyard/event-bus".to_owned()]);
        assert_eq!(images_built(&good(), &artifacts), Vec::<String>::new());
    }

    #[test]
    fn finds_urls_with_credentials_lists_and_default_ports() {
        let urls = find_urls("http://a:1,nats://b ,postgres://u:p%40ss@c/db https://x.example.com");
        let hosts: Vec<(&str, Option<u64>)> =
            urls.iter().map(|u| (u.host.as_str(), u.port)).collect();
        assert_eq!(
            hosts,
            [
                ("a", Some(1)),
                ("b", Some(4222)),
                ("c", Some(5432)),
                ("x.example.com", Some(443))
            ]
        );
    }

    #[test]
    fn detects_selector_and_target_port_mismatches() {
        let m = broken("selector: {app: event-bus}", "selector: {app: bus}");
        assert_eq!(service_selectors(&m).len(), 1);
        let m = broken("targetPort: http", "targetPort: web");
        assert_eq!(service_target_ports(&m).len(), 1);
    }

    #[test]
    fn detects_bad_ingress_backends() {
        let m = broken("port: {name: bus}", "port: {number: 80}");
        assert_eq!(ingress_backends(&m).len(), 1);
        let m = broken("name: event-bus-srv, port", "name: nothing-srv, port");
        assert!(ingress_backends(&m)[0].contains("does not exist"));
    }

    #[test]
    fn detects_urls_to_missing_services_or_ports() {
        let m = broken("http://event-bus-srv:4005,", "http://event-bus:4005,");
        let problems = service_urls(&m);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("SUBSCRIBERS"), "{problems:?}");
        let m = broken(
            "EVENT_BUS_URL: http://event-bus-srv:4005",
            "EVENT_BUS_URL: http://event-bus-srv:4000",
        );
        // once in the ConfigMap, once in the container that imports it
        assert_eq!(service_urls(&m).len(), 2);
        let m = broken("@postgres-0.postgres:5432", "@postgres:5433");
        assert_eq!(service_urls(&m).len(), 2);
        let m = broken(
            "event-bus-srv.default.svc.cluster.local",
            "bus.default.svc.cluster.local",
        );
        assert_eq!(service_urls(&m).len(), 1);
    }

    #[test]
    fn detects_missing_references() {
        let m = broken("key: posts", "key: comments");
        assert_eq!(references(&m).len(), 1);
        let m = broken(
            "name: data, mountPath: /data",
            "name: cache, mountPath: /data",
        );
        assert_eq!(references(&m).len(), 1);
    }

    #[test]
    fn detects_images_without_artifacts_and_unused_artifacts() {
        let artifacts = BTreeSet::from(["switchyard/posts".to_owned()]);
        assert_eq!(images_built(&good(), &artifacts).len(), 2);
    }

    #[test]
    fn detects_wrong_probes() {
        let m = broken("path: /healthz", "path: /health");
        assert_eq!(probes(&m).len(), 1);
        let m = broken("path: /readyz, port: 4005", "path: /readyz, port: 4006");
        assert_eq!(probes(&m).len(), 1);
        let m = broken("readinessProbe: {httpGet: {path: /readyz, port: 4005}}", "");
        assert_eq!(probes(&m).len(), 1);
    }

    #[test]
    fn detects_a_grace_period_shorter_than_the_drain() {
        assert!(drain_time(&good()).is_empty());
        let m = broken(
            "terminationGracePeriodSeconds: 20",
            "terminationGracePeriodSeconds: 5",
        );
        assert_eq!(drain_time(&m).len(), 1);
    }

    #[test]
    fn detects_pdbs_without_workloads_and_duplicates() {
        let m = broken(
            "matchLabels: {app: event-bus}}}",
            "matchLabels: {app: nope}}}",
        );
        assert_eq!(disruption_budgets(&m).len(), 1);
        let dup =
            format!("{GOOD}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cfg}}\n");
        assert_eq!(unique_names(&Manifests::parse(&dup).unwrap()).len(), 1);
    }
}
