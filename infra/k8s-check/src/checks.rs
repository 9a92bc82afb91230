//! Generic cross-reference checks over rendered manifests. Each returns the problems it
//! found as messages naming the object (empty = fine). The generic hardening (resources,
//! security contexts, capabilities) is checkov's (infra/checkov.yaml).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

use crate::ingress::{Backend, BackendPort};
use crate::manifest::{Manifests, id, image_repository, list, name, string_map, target_port, text};

/// Object names are unique per kind.
pub fn unique_names(m: &Manifests) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for o in m.objects() {
        *seen.entry(id(o)).or_default() += 1;
    }
    let duplicates = seen.into_iter().filter(|(_, n)| *n > 1);
    duplicates
        .map(|(id, n)| format!("{id} appears {n} times"))
        .collect()
}

/// Every Service (but ExternalName ones) selects the pods of some workload, and each of its
/// targetPorts (number or name; default = port) is a container port of every workload it
/// selects.
pub fn services(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    for s in m.of_kind("Service") {
        let selector = string_map(&s["spec"]["selector"]);
        let selected = m.selected_workloads(&selector);
        let external = s["spec"]["type"] == "ExternalName";
        if !external && selector.is_empty() {
            problems.push(format!("{} has no selector", id(s)));
        } else if !external && selected.is_empty() {
            problems.push(format!(
                "{} selects {selector:?}: no workload has these pod labels",
                id(s)
            ));
        }
        for p in list(&s["spec"]["ports"]) {
            let target = target_port(p);
            for w in &selected {
                if !w
                    .app_containers()
                    .iter()
                    .any(|c| c.resolve_port(target).is_some())
                {
                    problems.push(format!(
                        "{} port {} -> targetPort {target}: not a container port of {}",
                        id(s),
                        p["port"],
                        w.id()
                    ));
                }
            }
        }
    }
    problems
}

/// Whether Service `service` exists and has port `port` (a number or a port name).
pub(crate) fn service_has_port(
    m: &Manifests,
    service: &str,
    port: &BackendPort,
) -> Result<(), String> {
    let s = m.get("Service", service);
    let s = s.ok_or_else(|| format!("Service {service} does not exist"))?;
    let has = |p: &Value| match port {
        BackendPort::Number(n) => p["port"] == *n,
        BackendPort::Name(name) => p["name"] == name.as_str(),
    };
    let found = list(&s["spec"]["ports"]).any(has).then_some(());
    found.ok_or_else(|| format!("Service {service} has no port {port}"))
}

/// Every Ingress backend (rules and defaultBackend) is an existing Service and port.
pub fn ingress_backends(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    for ingress in m.of_kind("Ingress") {
        let spec = &ingress["spec"];
        let paths = list(&spec["rules"]).flat_map(|r| list(&r["http"]["paths"]));
        let default = Some(&spec["defaultBackend"]).filter(|b| !b.is_null());
        for b in default.into_iter().chain(paths.map(|p| &p["backend"])) {
            let checked = Backend::from_value(b)
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    let found = service_has_port(m, &b.service, &b.port);
                    found.map_err(|e| format!("backend {b}: {e}"))
                });
            if let Err(e) = checked {
                problems.push(format!("{}: {e}", id(ingress)));
            }
        }
    }
    problems
}

/// A URL found in a configuration value: the text up to the port, host, explicit port or
/// the scheme's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundUrl {
    pub text: String,
    pub host: String,
    pub port: u64,
}

/// Finds `scheme://[user[:password]@]host[:port]` URLs (http, https, nats, tls, postgres)
/// in a text, e.g. a comma-separated list.
pub fn find_urls(text: &str) -> Vec<FoundUrl> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        let url = r"(?i)\b(https?|nats|tls|postgres(?:ql)?)://(?:[^\s/@,]*@)?([a-z0-9][a-z0-9.-]*)(?::(\d+))?";
        Regex::new(url).expect("a valid regex")
    });
    let url = |c: regex::Captures<'_>| {
        let default_port = match c[1].to_ascii_lowercase().as_str() {
            "http" => 80,
            "https" => 443,
            "nats" | "tls" => 4222,
            _ => 5432,
        };
        let port = c.get(3).and_then(|p| p.as_str().parse().ok());
        let host = c[2].to_ascii_lowercase();
        FoundUrl {
            text: c[0].to_owned(),
            host,
            port: port.unwrap_or(default_port),
        }
    };
    re.captures_iter(text).map(url).collect()
}

/// What is wrong with a URL that names an in-cluster host (`svc`, `svc.ns[.svc[.cluster.
/// local]]`, or `pod-0.headless-svc...`): no such Service, or no such port. Loopback, IP
/// addresses and names outside the cluster are fine.
fn url_problem(m: &Manifests, url: &FoundUrl) -> Option<String> {
    let host = url.host.as_str();
    if host == "localhost" || host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let headless = labels.get(1).and_then(|l| m.get("Service", l));
    let headless = headless.filter(|s| s["spec"]["clusterIP"] == "None");
    let service = m.get("Service", labels[0]).or(headless);
    let in_cluster =
        labels.len() == 1 || host.ends_with(".svc") || host.ends_with(".svc.cluster.local");
    match (service, url.port) {
        (None, _) if in_cluster => Some(format!("no Service named {:?}", labels[0])),
        (Some(s), port) if !list(&s["spec"]["ports"]).any(|p| p["port"] == port) => {
            Some(format!("Service {} has no port {port}", name(s)))
        }
        _ => None,
    }
}

/// Every URL naming an in-cluster host in container environments (ConfigMaps and Secrets
/// resolved), container arguments, ConfigMaps and Secrets names an existing Service and one
/// of its ports.
pub fn service_urls(m: &Manifests) -> Vec<String> {
    let mut values: Vec<(String, String)> = Vec::new();
    for (at, _, c) in m.containers() {
        let env = m.env(&c).vars.into_iter();
        values.extend(env.map(|(k, v)| (format!("{at} env {k}"), v)));
        let args = c.command_line().into_iter();
        values.extend(args.map(|a| (format!("{at} args"), a.to_owned())));
    }
    for o in m.of_kind("ConfigMap").chain(m.of_kind("Secret")) {
        let data = if o["kind"] == "Secret" {
            m.secret_data(name(o)).unwrap_or_default()
        } else {
            string_map(&o["data"])
        };
        let at = id(o);
        values.extend(data.into_iter().map(|(k, v)| (format!("{at} key {k}"), v)));
    }
    let mut problems = BTreeSet::new();
    for (at, value) in values {
        for url in find_urls(&value) {
            if let Some(e) = url_problem(m, &url) {
                problems.insert(format!("{at}: {}: {e}", url.text));
            }
        }
    }
    problems.into_iter().collect()
}

/// ConfigMaps, Secrets and keys referenced by env/envFrom, and ConfigMaps, Secrets and
/// PersistentVolumeClaims referenced by volumes, exist; every volumeMount names a volume
/// (or a volumeClaimTemplate).
pub fn references(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    for w in m.workloads() {
        let templates = list(&w.object["spec"]["volumeClaimTemplates"]).map(name);
        let volumes = list(&w.pod_spec["volumes"]).map(|v| text(&v["name"]));
        let volumes: BTreeSet<&str> = volumes.chain(templates).collect();
        for v in list(&w.pod_spec["volumes"]) {
            let pvc = "persistentVolumeClaim";
            let sources = [
                ("configMap", "name", "ConfigMap"),
                ("secret", "secretName", "Secret"),
                (pvc, "claimName", "PersistentVolumeClaim"),
            ];
            let source = sources.into_iter().find_map(|(field, key, kind)| {
                Some((kind, v[field][key].as_str()?, v[field]["optional"] == true))
            });
            if let Some((kind, n, false)) = source
                && m.get(kind, n).is_none()
            {
                let at = format!("{} volume {}", w.id(), text(&v["name"]));
                problems.push(format!("{at}: {kind} {n} does not exist"));
            }
        }
        for c in w.containers() {
            let at = format!("{} container {}", w.id(), c.name());
            let env = m.env(&c).problems.into_iter();
            problems.extend(env.map(|p| format!("{at}: {p}")));
            for mount in list(&c.spec["volumeMounts"]).map(|v| text(&v["name"])) {
                if !volumes.contains(mount) {
                    problems.push(format!("{at}: volumeMount {mount} has no volume"));
                }
            }
        }
    }
    problems
}

/// Every project image (`switchyard/...`) is built by one of `artifacts`, and every
/// artifact is used by some container.
pub fn images_built(m: &Manifests, artifacts: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for (at, _, c) in m.containers() {
        let repo = image_repository(c.image()).to_owned();
        if c.is_project_image() && !artifacts.contains(&repo) {
            problems.push(format!(
                "{at}: image {repo} is not built by any skaffold artifact"
            ));
        }
        used.insert(repo);
    }
    for a in artifacts.difference(&used) {
        problems.push(format!(
            "skaffold builds {a}, but nothing in these manifests runs it"
        ));
    }
    problems
}

/// Project containers have a liveness probe `GET /healthz` and a readiness probe `GET
/// /readyz` (a startup probe may use either); every probe (httpGet, tcpSocket, grpc) is on
/// a container port.
pub fn probes(m: &Manifests) -> Vec<String> {
    const HEALTHZ: &[&str] = &["/healthz"];
    const READYZ: &[&str] = &["/readyz"];
    const EITHER: &[&str] = &["/healthz", "/readyz"];
    let mut problems = Vec::new();
    let probes = [
        ("livenessProbe", HEALTHZ),
        ("readinessProbe", READYZ),
        ("startupProbe", EITHER),
    ];
    for (at, _, c) in m.containers().into_iter().filter(|(_, _, c)| !c.init) {
        let project = c.is_project_image();
        for (field, paths) in probes {
            let probe = &c.spec[field];
            let paths = if project { paths } else { &[] };
            if probe.is_null() && project && field != "startupProbe" {
                problems.push(format!("{at}: no {field}"));
            }
            let (at, http) = (format!("{at} {field}"), &probe["httpGet"]);
            if !paths.is_empty() && http.is_null() && !probe.is_null() {
                problems.push(format!("{at}: must be an httpGet probe"));
            }
            let path = http["path"].as_str().unwrap_or("/");
            if !paths.is_empty() && !http.is_null() && !paths.contains(&path) {
                problems.push(format!("{at}: path {path} is not one of {paths:?}"));
            }
            let handlers = ["httpGet", "tcpSocket", "grpc"].into_iter();
            if let Some(port) = handlers.map(|h| &probe[h]["port"]).find(|p| !p.is_null())
                && c.resolve_port(port).is_none()
            {
                problems.push(format!("{at}: port {port} is not a container port"));
            }
        }
    }
    problems
}

/// Every project container's pod waits longer before SIGKILL (terminationGracePeriodSeconds,
/// default 30) than the container drains (SHUTDOWN_GRACE_MS, default 10000).
pub fn drain_time(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    for (at, w, c) in m.containers() {
        let grace = &w.pod_spec["terminationGracePeriodSeconds"];
        let grace_s = grace.as_u64().unwrap_or(30);
        let drain = m
            .env(&c)
            .vars
            .get("SHUTDOWN_GRACE_MS")
            .and_then(|v| v.parse().ok());
        let drain_ms = drain.unwrap_or(10_000);
        if c.is_project_image() && !c.init && grace_s * 1000 <= drain_ms {
            problems.push(format!(
                "{at}: terminationGracePeriodSeconds {grace_s} does not cover SHUTDOWN_GRACE_MS {drain_ms}"
            ));
        }
    }
    problems
}

/// Every PodDisruptionBudget selects some workload.
pub fn disruption_budgets(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    for pdb in m.of_kind("PodDisruptionBudget") {
        let selector = string_map(&pdb["spec"]["selector"]["matchLabels"]);
        if m.selected_workloads(&selector).is_empty() {
            problems.push(format!("{} selects no workload", id(pdb)));
        }
    }
    problems
}

/// All of the above but [`images_built`], which needs the skaffold artifacts.
pub fn all(m: &Manifests) -> Vec<String> {
    let checks: [fn(&Manifests) -> Vec<String>; 8] = [
        unique_names,
        services,
        ingress_backends,
        service_urls,
        references,
        probes,
        drain_time,
        disruption_budgets,
    ];
    checks.iter().flat_map(|check| check(m)).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_urls_with_credentials_lists_and_default_ports() {
        let urls = find_urls("http://a:1,nats://b ,postgres://u:p%40ss@c/db https://x.example.com");
        let hosts: Vec<(&str, u64)> = urls.iter().map(|u| (u.host.as_str(), u.port)).collect();
        let want = [("a", 1), ("b", 4222), ("c", 5432), ("x.example.com", 443)];
        assert_eq!(hosts, want);
    }

    #[test]
    fn urls_name_services_and_their_ports() {
        let m = Manifests::parse(
            "kind: Service\nmetadata: {name: bus}\nspec: {ports: [{port: 4005}]}\n---\n\
             kind: Service\nmetadata: {name: pg}\nspec: {clusterIP: None, ports: [{port: 5432}]}\n",
        )
        .unwrap();
        for (url, problem) in [
            ("http://bus:4005", None),
            ("http://bus.ns.svc.cluster.local:4005", None),
            ("postgres://u:p@pg-0.pg:5432/db", None),
            (
                "https://example.com/x http://127.0.0.1:1 http://localhost:2",
                None,
            ),
            ("http://bus:4000", Some("Service bus has no port 4000")),
            ("http://nope.ns.svc:4005", Some("no Service named \"nope\"")),
            ("http://nope:80", Some("no Service named \"nope\"")),
        ] {
            let found: Vec<String> = find_urls(url)
                .iter()
                .filter_map(|u| url_problem(&m, u))
                .collect();
            assert_eq!(found.first().map(String::as_str), problem, "{url}");
        }
    }
}
