//! Cross-references over rendered manifests that no generic tool of infra/validate.sh checks.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::contract::OPS_PORT;
use crate::manifest::{Manifests, id, image_repository, kind, list, name, string_map, text};

/// A URL in a configuration value: its text (up to the port), host, port (or the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundUrl {
    pub text: String,
    pub host: String,
    pub port: u64,
}

/// The `scheme://[user[:password]@]host[:port]` URLs (http, https, nats, tls, postgres) of a text.
pub fn find_urls(text: &str) -> Vec<FoundUrl> {
    static RE: LazyLock<Regex> = LazyLock::new(|| {
        let scheme = r"(?i)\b(https?|nats|tls|postgres(?:ql)?)://";
        let url = format!(r"{scheme}(?:[^\s/@,]*@)?([a-z0-9][a-z0-9.-]*)(?::(\d+))?");
        Regex::new(&url).expect("a valid regex")
    });
    let url = |c: regex::Captures<'_>| {
        let default_port = match c[1].to_ascii_lowercase().as_str() {
            "http" => 80,
            "https" => 443,
            "nats" | "tls" => 4222,
            _ => 5432,
        };
        let port = c.get(3).and_then(|p| p.as_str().parse().ok());
        let (text, host, port) = (c[0].to_owned(), c[2].to_ascii_lowercase(), port);
        let port = port.unwrap_or(default_port);
        FoundUrl { text, host, port }
    };
    RE.captures_iter(text).map(url).collect()
}

/// What is wrong with a URL naming an in-cluster host (`svc`, `svc.ns[.svc[.cluster.local]]`,
/// `pod-0.headless-svc...`). Loopback, IP addresses and names outside the cluster are fine.
fn url_problem(m: &Manifests, url: &FoundUrl) -> Option<String> {
    let host = url.host.as_str();
    if host == "localhost" || host.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let labels: Vec<&str> = host.split('.').collect();
    let headless = labels.get(1).and_then(|l| m.get("Service", l));
    let headless = headless.filter(|s| s["spec"]["clusterIP"] == "None");
    let service = m.get("Service", labels[0]).or(headless);
    let suffixes = [".svc", ".svc.cluster.local"];
    let in_cluster = labels.len() == 1 || suffixes.iter().any(|s| host.ends_with(s));
    match (service, url.port) {
        (None, _) if in_cluster => Some(format!("no Service named {:?}", labels[0])),
        (Some(s), port) if !list(&s["spec"]["ports"]).any(|p| p["port"] == port) => {
            Some(format!("Service {} has no port {port}", name(s)))
        }
        _ => None,
    }
}

/// Every in-cluster URL in env, args, ConfigMaps and Secrets names a Service and its port.
pub fn service_urls(m: &Manifests) -> Vec<String> {
    let mut values: Vec<(String, String)> = Vec::new();
    for (at, _, c) in m.containers() {
        let env = m.env(&c).into_iter();
        values.extend(env.map(|(k, v)| (format!("{at} env {k}"), v)));
        let args = c.command_line().into_iter().map(str::to_owned);
        values.extend(args.map(|a| (format!("{at} args"), a)));
    }
    for o in m.of_kind("ConfigMap").chain(m.of_kind("Secret")) {
        let (at, data) = (id(o), m.data(kind(o), name(o)).unwrap_or_default());
        values.extend(data.into_iter().map(|(k, v)| (format!("{at} key {k}"), v)));
    }
    let mut problems = BTreeSet::new();
    for (at, value) in values {
        for url in find_urls(&value) {
            let problem = url_problem(m, &url).map(|e| format!("{at}: {}: {e}", url.text));
            problems.extend(problem);
        }
    }
    problems.into_iter().collect()
}

/// The ConfigMaps, Secrets (and keys) and PersistentVolumeClaims referenced exist (unless
/// optional); every volumeMount names a volume (or a volumeClaimTemplate).
pub fn references(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    for (at, r) in m.references().into_iter().filter(|(_, r)| !r.optional) {
        let data = m.data(r.kind, r.name).unwrap_or_default();
        let missing = match (m.get(r.kind, r.name), r.key) {
            (None, _) => String::new(),
            (Some(_), Some(key)) if !data.contains_key(key) => format!("key {key} of "),
            _ => continue,
        };
        let (kind, name) = (r.kind, r.name);
        problems.push(format!("{at}: {missing}{kind} {name} does not exist"));
    }
    for (at, w, c) in m.containers() {
        let templates = list(&w.object["spec"]["volumeClaimTemplates"]).map(name);
        let volumes = list(&w.pod_spec["volumes"]).map(|v| text(&v["name"]));
        let volumes: BTreeSet<&str> = volumes.chain(templates).collect();
        let mounts = list(&c.spec["volumeMounts"]).map(|v| text(&v["name"]));
        for mount in mounts.filter(|v| !volumes.contains(v)) {
            problems.push(format!("{at}: volumeMount {mount} has no volume"));
        }
    }
    problems
}

/// Every project image is built by one of `artifacts`, and every artifact is used.
pub fn images_built(m: &Manifests, artifacts: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for (at, _, c) in m.containers() {
        let repo = image_repository(c.image()).to_owned();
        if c.is_project_image() && !artifacts.contains(&repo) {
            problems.push(format!("{at}: no skaffold artifact builds {repo}"));
        }
        used.insert(repo);
    }
    let unused = artifacts.difference(&used);
    problems.extend(unused.map(|a| format!("skaffold builds {a}, which nothing runs")));
    problems
}

/// Every probe is on a container port; a project container's are `GET /healthz` (liveness)
/// and `GET /readyz` (readiness; a startup probe, if any, either) on its port `ops`.
pub fn probes(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    let probes = [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz /readyz"),
    ];
    for (at, _, c) in m.containers().into_iter().filter(|(_, _, c)| !c.init) {
        for (field, paths) in probes {
            let probe = &c.spec[field];
            let ports = ["httpGet", "tcpSocket", "grpc"].map(|h| &probe[h]["port"]);
            let port = ports.into_iter().find(|p| !p.is_null());
            if let Some(port) = port.filter(|p| c.resolve_port(p).is_none()) {
                problems.push(format!("{at} {field}: port {port} is not a container port"));
            }
            let get = &probe["httpGet"];
            let on_ops = c.resolve_port(&get["port"]) == Some(OPS_PORT.into());
            let ok = on_ops && paths.split(' ').any(|p| get["path"] == p);
            let optional = field == "startupProbe" && probe.is_null();
            if c.is_project_image() && !ok && !optional {
                let what = format!("{field} is not GET {paths} on port ops");
                problems.push(format!("{at}: {what}: {get}"));
            }
        }
    }
    problems
}

/// Every project container's pod waits longer before SIGKILL (terminationGracePeriodSeconds,
/// default 30) than the container drains (SHUTDOWN_GRACE_MS, default 10000).
pub fn drain_time(m: &Manifests) -> Vec<String> {
    let mut problems = Vec::new();
    for (at, w, c) in m.containers().into_iter().filter(|(_, _, c)| !c.init) {
        let grace = &w.pod_spec["terminationGracePeriodSeconds"];
        let grace = grace.as_u64().unwrap_or(30);
        let drain = m.env(&c).remove("SHUTDOWN_GRACE_MS");
        let drain: u64 = drain.and_then(|d| d.parse().ok()).unwrap_or(10_000);
        if c.is_project_image() && grace * 1000 <= drain {
            let what = format!("terminationGracePeriodSeconds {grace}");
            problems.push(format!("{at}: {what} < SHUTDOWN_GRACE_MS {drain}"));
        }
    }
    problems
}

/// Every PodDisruptionBudget selects some workload.
pub fn disruption_budgets(m: &Manifests) -> Vec<String> {
    let selector = |p: &Value| string_map(&p["spec"]["selector"]["matchLabels"]);
    let pdbs = m.of_kind("PodDisruptionBudget");
    let idle = pdbs.filter(|p| m.selected_workloads(&selector(p)).is_empty());
    let problem = |p: &Value| format!("{} selects no workload", id(p));
    idle.map(problem).collect()
}

/// All of the above but [`images_built`], which needs the skaffold artifacts.
pub fn all(m: &Manifests) -> Vec<String> {
    let all = [service_urls(m), references(m), probes(m), drain_time(m)];
    [all.concat(), disruption_budgets(m)].concat()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_services_and_their_ports() {
        let urls = find_urls("http://a:1,nats://b ,postgres://u:p%40ss@c/db https://x.example.com");
        let hosts: Vec<(&str, u64)> = urls.iter().map(|u| (u.host.as_str(), u.port)).collect();
        let want = [("a", 1), ("b", 4222), ("c", 5432), ("x.example.com", 443)];
        assert_eq!(hosts, want);
        let yaml = "kind: Service\nmetadata: {name: bus}\nspec: {ports: [{port: 4005}]}\n---\n\
            kind: Service\nmetadata: {name: pg}\nspec: {clusterIP: None, ports: [{port: 5432}]}\n";
        let m = Manifests::parse(yaml).unwrap();
        let fine = "http://bus.ns.svc.cluster.local:4005 postgres://u:p@pg-0.pg:5432/db \
            https://example.com/x http://127.0.0.1:1 http://localhost:2";
        for (url, problem) in [
            (fine, None),
            ("http://bus:4000", Some("Service bus has no port 4000")),
            ("http://nope.ns.svc:4005", Some("no Service named \"nope\"")),
        ] {
            let found = find_urls(url).iter().find_map(|u| url_problem(&m, u));
            assert_eq!(found.as_deref(), problem, "{url}");
        }
    }
}
