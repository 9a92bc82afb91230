//! NetworkPolicy evaluation, offline, by the rules of `networking.k8s.io/v1`: whether a
//! connection from a peer to a pod of the rendered manifests on a port is allowed. The
//! manifests are applied to one namespace (its name unknown here), that of all they hold.
//! - A pod is isolated for ingress when a policy selects it (`spec.podSelector`; `{}`
//!   selects every pod) and has `Ingress` in its policy types (without `policyTypes`: always
//!   Ingress, Egress when it has `egress` rules); likewise for egress. A connection needs
//!   the source's egress and the destination's ingress allowed: where isolated, by a rule
//!   of a selecting policy whose peers and ports both match (no `from`/`to`, or an empty
//!   list: every peer; no `ports`: every port).
//! - A peer is `podSelector` (pods of the policy's namespace), `namespaceSelector`, both,
//!   or `ipBlock`, taken to match every peer (which addresses it covers depends on the
//!   network plugin): it can only make a check find more open paths, never fewer.
//! - Ports: TCP unless `protocol` says otherwise, a number (with `endPort`, a range) or a
//!   name, the destination pod's container port of that name.
//! - Egress of pods outside the namespace is not known here: taken as allowed.

use serde_json::Value;

use crate::manifest::{self, Manifests, Map, Workload, list, string_map, text};

/// The label every namespace has, naming it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The name the checks give the manifests' own namespace.
pub const OWN_NAMESPACE: &str = "the-apps-namespace";

/// Where a connection comes from: `id` is a workload's `Kind/name` or a description;
/// `namespace` `None` for the manifests' own namespace, else its labels; `pod` the pod's
/// labels, `None` for an address outside the cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub id: String,
    pub namespace: Option<Map>,
    pub pod: Option<Map>,
}

impl Peer {
    fn new(id: impl Into<String>, namespace: Option<Map>, pod: Option<Map>) -> Self {
        Peer {
            id: id.into(),
            namespace,
            pod,
        }
    }

    /// A pod of the manifests' own namespace.
    pub fn own(id: impl Into<String>, pod: Map) -> Self {
        Peer::new(id, None, Some(pod))
    }

    /// A pod of the namespace named `namespace`.
    pub fn in_namespace(id: impl Into<String>, namespace: &str, pod: Map) -> Self {
        let namespace = labels(&[(NAMESPACE_NAME_LABEL, namespace)]);
        Peer::new(id, Some(namespace), Some(pod))
    }
}

pub fn labels(pairs: &[(&str, &str)]) -> Map {
    let pair = |(k, v): &(&str, &str)| ((*k).to_owned(), (*v).to_owned());
    pairs.iter().map(pair).collect()
}

/// Whether a `LabelSelector` (`matchLabels`, `matchExpressions`) matches `labels`. An empty
/// selector (`{}`) matches everything; a missing one (`null`) nothing.
pub fn label_selector_matches(selector: &Value, labels: &Map) -> bool {
    let expression = |e: &Value| {
        let values: Vec<&str> = list(&e["values"]).filter_map(Value::as_str).collect();
        let value = labels.get(text(&e["key"])).map(String::as_str);
        match text(&e["operator"]) {
            "In" => value.is_some_and(|v| values.contains(&v)),
            "NotIn" => value.is_none_or(|v| !values.contains(&v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false, // refused by the API server
        }
    };
    let match_labels = string_map(&selector["matchLabels"]);
    !selector.is_null()
        && match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        && list(&selector["matchExpressions"]).all(expression)
}

/// Whether a policy governs `rules` (`ingress`, `egress`).
fn governs(policy: &Value, rules: &str) -> bool {
    match policy["spec"]["policyTypes"].as_array() {
        Some(types) => types.iter().any(|t| text(t).eq_ignore_ascii_case(rules)),
        None => rules == "ingress" || !policy["spec"]["egress"].is_null(),
    }
}

/// Whether a rule's list (`from`, `to`, `ports`) lets everything through (absent, empty)
/// or has an item that `matches`.
fn any_or_all(items: &Value, matches: impl Fn(&Value) -> bool) -> bool {
    let all = items.as_array().is_none_or(Vec::is_empty);
    all || list(items).any(matches)
}

/// Whether a rule's peer list matches `peer` (seen from the policy's namespace).
fn peers_match(peers: &Value, peer: &Peer) -> bool {
    let own = labels(&[(NAMESPACE_NAME_LABEL, OWN_NAMESPACE)]);
    let namespace = peer.namespace.as_ref().unwrap_or(&own);
    let matches = label_selector_matches;
    any_or_all(peers, |p| {
        let (pods, namespaces) = (&p["podSelector"], &p["namespaceSelector"]);
        let (in_pods, in_namespaces) = match &peer.pod {
            _ if !p["ipBlock"].is_null() => return true,
            None => return false, // outside the cluster: only an ipBlock matches
            Some(pod) => (matches(pods, pod), matches(namespaces, namespace)),
        };
        match (pods.is_null(), namespaces.is_null()) {
            // podSelector alone: pods of the policy's namespace
            (false, true) => peer.namespace.is_none() && in_pods,
            (true, false) => in_namespaces,
            (false, false) => in_namespaces && in_pods,
            (true, true) => false, // refused by the API server
        }
    })
}

/// Whether a rule's port list matches TCP `port` of a pod with `container_ports`.
fn ports_match(ports: &Value, port: u64, container_ports: &[(Option<&str>, u64)]) -> bool {
    any_or_all(ports, |p| match &p["port"] {
        _ if p["protocol"].as_str().unwrap_or("TCP") != "TCP" => false,
        Value::Null => true,
        Value::Number(n) => {
            let low = n.as_u64().unwrap_or(0);
            (low..=p["endPort"].as_u64().unwrap_or(low)).contains(&port)
        }
        Value::String(name) => match name.parse::<u64>() {
            Ok(n) => n == port,
            Err(_) => container_ports.contains(&(Some(name.as_str()), port)),
        },
        _ => false,
    })
}

pub fn workload_ports<'a>(w: &Workload<'a>) -> Vec<(Option<&'a str>, u64)> {
    w.app_containers().iter().flat_map(|c| c.ports()).collect()
}

pub fn policies(m: &Manifests) -> impl Iterator<Item = &Value> {
    m.of_kind("NetworkPolicy")
}

/// Whether `from` may connect to `to` on `port`: the destination's ingress and, for a pod
/// of the namespace, the source's egress (other namespaces' policies are not known here).
pub fn allowed(m: &Manifests, from: &Peer, to: &Workload<'_>, port: u64) -> bool {
    let ports = workload_ports(to);
    // whether the policies that select `pod` for `rules` let `peer` through
    let side = |rules: &str, pod: &Map, peer: &Peer| {
        let field = if rules == "ingress" { "from" } else { "to" };
        let selects = |p: &&Value| label_selector_matches(&p["spec"]["podSelector"], pod);
        let selecting = policies(m).filter(|p| governs(p, rules));
        let mut selecting = selecting.filter(selects).peekable();
        let isolated = selecting.peek().is_some();
        let to_port = |r: &Value| ports_match(&r["ports"], port, &ports);
        let rule = |r: &Value| peers_match(&r[field], peer) && to_port(r);
        !isolated || selecting.any(|p| list(&p["spec"][rules]).any(rule))
    };
    let egress = match (&from.pod, &from.namespace) {
        (Some(pod), None) => side("egress", pod, &Peer::own(to.id(), to.pod_labels.clone())),
        _ => true,
    };
    egress && side("ingress", &to.pod_labels, from)
}

/// One connection: a peer's id, the destination workload's `Kind/name`, its port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Path {
    pub from: String,
    pub to: String,
    pub port: u64,
}

impl Path {
    pub fn new(from: &str, to: &str, port: u64) -> Self {
        let (from, to) = (from.to_owned(), to.to_owned());
        Path { from, to, port }
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {}:{}", self.from, self.to, self.port)
    }
}

/// Every allowed connection from `peers` to every container port of every workload.
pub fn open_paths(m: &Manifests, peers: &[Peer]) -> Vec<Path> {
    let mut out = Vec::new();
    for w in m.workloads() {
        let mut ports: Vec<u64> = workload_ports(&w).into_iter().map(|(_, p)| p).collect();
        ports.sort_unstable();
        ports.dedup();
        for (peer, &port) in peers.iter().flat_map(|p| ports.iter().map(move |n| (p, n))) {
            if allowed(m, peer, &w, port) {
                out.push(Path::new(&peer.id, &w.id(), port));
            }
        }
    }
    out.sort();
    out
}

/// The peers every policy set is probed with: every workload, strangers in the namespace,
/// look-alikes in another namespace, the `edges`, and an address outside the cluster.
pub fn probe_peers(m: &Manifests, edges: &[Peer]) -> Vec<Peer> {
    let workloads = m.workloads();
    let own = |w: &Workload| Peer::own(w.id(), w.pod_labels.clone());
    let own = workloads.iter().map(own);
    let elsewhere = workloads.iter().map(|w| {
        let id = format!("a pod of namespace elsewhere labelled like {}", w.id());
        Peer::in_namespace(id, "elsewhere", w.pod_labels.clone())
    });
    let stranger = labels(&[("app", "stranger")]);
    let strangers = [
        Peer::own("a pod labelled app=stranger in the namespace", stranger),
        Peer::own("an unlabelled pod in the namespace", Map::new()),
        Peer::new("an address outside the cluster", None, None),
    ];
    let peers = own.chain(elsewhere).chain(edges.iter().cloned());
    peers.chain(strangers).collect()
}

/// Whether a policy denies all incoming connections to every pod of the namespace (the
/// default for pods no other policy selects, including pods added later).
pub fn denies_ingress_by_default(m: &Manifests) -> bool {
    let empty = |v: &Value| v.as_object().is_none_or(|o| o.is_empty());
    policies(m).any(|p| {
        let (spec, selector) = (&p["spec"], &p["spec"]["podSelector"]);
        selector.is_object()
            && empty(&selector["matchLabels"])
            && list(&selector["matchExpressions"]).next().is_none()
            && governs(p, "ingress")
            && list(&spec["ingress"]).next().is_none()
    })
}

/// Policies whose ingress rules admit an `ipBlock` (which the checks cannot confine to the
/// pods meant).
pub fn ip_block_peers(m: &Manifests) -> Vec<String> {
    let admits_ip_block = |p: &&Value| {
        let mut peers = list(&p["spec"]["ingress"]).flat_map(|r| list(&r["from"]));
        peers.any(|peer| !peer["ipBlock"].is_null())
    };
    let blocked = policies(m).filter(admits_ip_block);
    let problem = |p: &Value| format!("{} admits an ipBlock", manifest::id(p));
    blocked.map(problem).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PODS: &str = "
kind: Deployment
metadata: {name: api}
spec:
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{ports: [{name: http, containerPort: 3000}, {name: ops, containerPort: 9090}]}]}
---
kind: StatefulSet
metadata: {name: db}
spec:
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{ports: [{name: postgres, containerPort: 5432}]}]}
";

    const POLICIES: &str = "
---
kind: NetworkPolicy
metadata: {name: deny}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
kind: NetworkPolicy
metadata: {name: web}
spec:
  podSelector: {matchExpressions: [{key: app, operator: In, values: [api]}]}
  ingress:
    - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ingress-nginx}}}]
      ports: [{port: http}]
---
kind: NetworkPolicy
metadata: {name: db}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {app: api}}}], ports: [{protocol: TCP, port: 5432}]}]
";

    fn yaml(text: &str) -> Value {
        crate::parse_yaml_documents(text).unwrap().remove(0)
    }

    fn open(text: &str) -> Vec<String> {
        let m = Manifests::parse(text).unwrap();
        let edges = [
            Peer::in_namespace("controller", "ingress-nginx", labels(&[("app", "nginx")])),
            Peer::in_namespace("prometheus", "monitoring", labels(&[("app", "prometheus")])),
        ];
        let paths = open_paths(&m, &probe_peers(&m, &edges));
        paths.iter().map(ToString::to_string).collect()
    }

    /// Selectors and whether they match `app: api, tier: web`, rules and whether they match
    /// TCP port 3000 or 9090 of a pod with ports `http` (3000) and `ops` (9090).
    const MATCHES: &str = "
        {}                                                      | true
        matchLabels: {app: api}                                 | true
        matchLabels: {app: db}                                  | false
        matchExpressions: [{key: app, operator: NotIn, values: [db]}, {key: tier, operator: Exists}] | true
        matchExpressions: [{key: tier, operator: DoesNotExist}] | false
        [{port: http}]                                          | 3000 | true
        [{port: http}]                                          | 9090 | false
        [{port: 9000, endPort: 9100}]                           | 9090 | true
        [{port: 9090, protocol: UDP}]                           | 9090 | false
    ";

    #[test]
    fn selectors_and_ports_follow_the_api_rules() {
        let l = labels(&[("app", "api"), ("tier", "web")]);
        let ports = [(Some("http"), 3000), (Some("ops"), 9090)];
        for row in MATCHES.lines().filter(|l| !l.trim().is_empty()) {
            let fields: Vec<&str> = row.split('|').map(str::trim).collect();
            let found = match fields[..] {
                [selector, _] => label_selector_matches(&yaml(selector), &l),
                [rule, port, _] => ports_match(&yaml(rule), port.parse().unwrap(), &ports),
                _ => panic!("{row}"),
            };
            assert_eq!(found.to_string(), fields[fields.len() - 1], "{row}");
        }
        assert!(!label_selector_matches(&Value::Null, &l));
        assert!(ports_match(&Value::Null, 1, &ports));
    }

    #[test]
    fn policies_open_exactly_their_paths() {
        let paths = open(PODS);
        assert!(paths.contains(&"an address outside the cluster -> StatefulSet/db:5432".into()));
        assert!(paths.contains(&"controller -> Deployment/api:9090".into()));
        let want = [
            "Deployment/api -> StatefulSet/db:5432",
            "controller -> Deployment/api:3000",
        ];
        assert_eq!(open(&format!("{PODS}{POLICIES}")), want);
        // a namespaceSelector beside a podSelector opens other namespaces
        let pods = "from: [{podSelector:";
        let loose = POLICIES.replace(pods, "from: [{namespaceSelector: {}, podSelector:");
        let paths = open(&format!("{PODS}{loose}"));
        let elsewhere = "a pod of namespace elsewhere labelled like Deployment/api";
        let path = format!("{elsewhere} -> StatefulSet/db:5432");
        assert!(paths.contains(&path), "{paths:?}");
        // egress policies close the source side
        let egress = "---\nkind: NetworkPolicy\nmetadata: {name: out}\n\
             spec: {podSelector: {matchLabels: {app: api}}, policyTypes: [Egress]}\n";
        assert_eq!(open(&format!("{PODS}{POLICIES}{egress}")), [want[1]]);
    }
}
