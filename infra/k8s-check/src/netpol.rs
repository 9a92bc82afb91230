//! NetworkPolicy evaluation, offline, by the rules of `networking.k8s.io/v1`: whether a
//! connection from a peer to a pod of the rendered manifests on a port is allowed.
//!
//! The manifests are applied to one namespace, whose name is not known here: the policies
//! in them are that namespace's, and it is the namespace of every workload they hold.
//!
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
    /// A pod of the manifests' own namespace.
    pub fn own(id: impl Into<String>, pod: Map) -> Self {
        Peer {
            id: id.into(),
            namespace: None,
            pod: Some(pod),
        }
    }

    /// A pod of the namespace named `namespace`.
    pub fn in_namespace(id: impl Into<String>, namespace: &str, pod: Map) -> Self {
        let namespace = Some(labels(&[(NAMESPACE_NAME_LABEL, namespace)]));
        Peer {
            id: id.into(),
            namespace,
            pod: Some(pod),
        }
    }
}

/// A label map from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Map {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
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
    !selector.is_null()
        && string_map(&selector["matchLabels"])
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        && list(&selector["matchExpressions"]).all(expression)
}

/// Which directions a policy governs: (ingress, egress).
fn policy_types(policy: &Value) -> (bool, bool) {
    match policy["spec"]["policyTypes"].as_array() {
        Some(types) => (
            types.contains(&"Ingress".into()),
            types.contains(&"Egress".into()),
        ),
        None => (true, !policy["spec"]["egress"].is_null()),
    }
}

/// Whether a rule's peer list matches `peer` (seen from the policy's namespace).
fn peers_match(peers: &Value, peer: &Peer) -> bool {
    let own = labels(&[(NAMESPACE_NAME_LABEL, OWN_NAMESPACE)]);
    let namespace = peer.namespace.as_ref().unwrap_or(&own);
    let matches = |p: &Value| {
        let (pods, namespaces) = (&p["podSelector"], &p["namespaceSelector"]);
        match (&peer.pod, pods.is_null(), namespaces.is_null()) {
            _ if !p["ipBlock"].is_null() => true,
            (None, ..) => false, // outside the cluster: only an ipBlock matches
            // podSelector alone: pods of the policy's namespace
            (Some(pod), false, true) => {
                peer.namespace.is_none() && label_selector_matches(pods, pod)
            }
            (Some(_), true, false) => label_selector_matches(namespaces, namespace),
            (Some(pod), false, false) => {
                label_selector_matches(namespaces, namespace) && label_selector_matches(pods, pod)
            }
            (Some(_), true, true) => false, // refused by the API server
        }
    };
    peers
        .as_array()
        .is_none_or(|l| l.is_empty() || l.iter().any(matches))
}

/// Whether a rule's port list matches TCP `port` of a pod with `container_ports`.
fn ports_match(ports: &Value, port: u64, container_ports: &[(Option<&str>, u64)]) -> bool {
    let matches = |p: &Value| match &p["port"] {
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
    };
    ports
        .as_array()
        .is_none_or(|l| l.is_empty() || l.iter().any(matches))
}

/// The container ports (name, number) of a workload's application containers.
pub fn workload_ports<'a>(w: &Workload<'a>) -> Vec<(Option<&'a str>, u64)> {
    w.app_containers().iter().flat_map(|c| c.ports()).collect()
}

pub fn policies(m: &Manifests) -> impl Iterator<Item = &Value> {
    m.of_kind("NetworkPolicy")
}

/// Whether the policies that select `pod` for ingress (else egress) let `peer` through.
fn side_allows(
    m: &Manifests,
    ingress: bool,
    pod: &Map,
    peer: &Peer,
    port: u64,
    to: &[(Option<&str>, u64)],
) -> bool {
    let (rules, field) = if ingress {
        ("ingress", "from")
    } else {
        ("egress", "to")
    };
    let governs = |p: &&Value| {
        let (i, e) = policy_types(p);
        (if ingress { i } else { e }) && label_selector_matches(&p["spec"]["podSelector"], pod)
    };
    let mut selecting = policies(m).filter(governs).peekable();
    let isolated = selecting.peek().is_some();
    let rule = |r: &Value| peers_match(&r[field], peer) && ports_match(&r["ports"], port, to);
    !isolated || selecting.any(|p| list(&p["spec"][rules]).any(rule))
}

/// Whether `from` may connect to `to` on `port`: the destination's ingress and, for a pod
/// of the namespace, the source's egress (other namespaces' policies are not known here).
pub fn allowed(m: &Manifests, from: &Peer, to: &Workload<'_>, port: u64) -> bool {
    let ports = workload_ports(to);
    let egress = match (&from.pod, &from.namespace) {
        (Some(pod), None) => {
            let destination = Peer::own(to.id(), to.pod_labels.clone());
            side_allows(m, false, pod, &destination, port, &ports)
        }
        _ => true,
    };
    egress && side_allows(m, true, &to.pod_labels, from, port, &ports)
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
        Path {
            from: from.to_owned(),
            to: to.to_owned(),
            port,
        }
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

/// The peers every policy set is probed with: every workload (as itself), strangers in the
/// namespace (an unknown `app`, no labels), each workload's labels worn by a pod of another
/// namespace, the `edges` (the ingress controller, Prometheus...), and an address outside
/// the cluster.
pub fn probe_peers(m: &Manifests, edges: &[Peer]) -> Vec<Peer> {
    let workloads = m.workloads();
    let own = workloads
        .iter()
        .map(|w| Peer::own(w.id(), w.pod_labels.clone()));
    let elsewhere = workloads.iter().map(|w| {
        let id = format!("a pod of namespace elsewhere labelled like {}", w.id());
        Peer::in_namespace(id, "elsewhere", w.pod_labels.clone())
    });
    let strangers = [
        Peer::own(
            "a pod labelled app=stranger in the namespace",
            labels(&[("app", "stranger")]),
        ),
        Peer::own("an unlabelled pod in the namespace", Map::new()),
    ];
    let outside = Peer {
        id: "an address outside the cluster".into(),
        namespace: None,
        pod: None,
    };
    let peers = own
        .chain(strangers)
        .chain(elsewhere)
        .chain(edges.iter().cloned());
    peers.chain([outside]).collect()
}

/// Whether a policy denies all incoming connections to every pod of the namespace
/// (`podSelector: {}`, Ingress, no rule): the default for pods no other policy selects,
/// including pods added later.
pub fn denies_ingress_by_default(m: &Manifests) -> bool {
    let empty = |v: &Value| v.as_object().is_none_or(|o| o.is_empty());
    policies(m).any(|p| {
        let (spec, selector) = (&p["spec"], &p["spec"]["podSelector"]);
        selector.is_object()
            && empty(&selector["matchLabels"])
            && list(&selector["matchExpressions"]).next().is_none()
            && policy_types(p).0
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
    policies(m)
        .filter(admits_ip_block)
        .map(|p| format!("{} admits an ipBlock", manifest::id(p)))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PODS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
        - {name: api, ports: [{name: http, containerPort: 3000}, {name: ops, containerPort: 9090}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, ports: [{name: postgres, containerPort: 5432}]}]
"#;

    const POLICIES: &str = r#"
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web}
spec:
  podSelector: {matchExpressions: [{key: app, operator: In, values: [api]}]}
  ingress:
    - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ingress-nginx}}}]
      ports: [{port: http}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
    - from: [{podSelector: {matchLabels: {app: api}}}]
      ports: [{protocol: TCP, port: 5432}]
"#;

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

    #[test]
    fn selectors_and_ports_follow_the_api_rules() {
        let l = labels(&[("app", "api"), ("tier", "web")]);
        for (selector, matches) in [
            ("{}", true),
            ("matchLabels: {app: api}", true),
            ("matchLabels: {app: db}", false),
            (
                "matchExpressions: [{key: app, operator: NotIn, values: [db]}, {key: tier, operator: Exists}]",
                true,
            ),
            (
                "matchExpressions: [{key: tier, operator: DoesNotExist}]",
                false,
            ),
        ] {
            assert_eq!(
                label_selector_matches(&yaml(selector), &l),
                matches,
                "{selector}"
            );
        }
        assert!(!label_selector_matches(&Value::Null, &l));
        let ports = [(Some("http"), 3000), (Some("ops"), 9090)];
        assert!(ports_match(&Value::Null, 1, &ports));
        for (rule, port, matches) in [
            ("[{port: http}]", 3000, true),
            ("[{port: http}]", 9090, false),
            ("[{port: 9000, endPort: 9100}]", 9090, true),
            ("[{port: 9090, protocol: UDP}]", 9090, false),
        ] {
            assert_eq!(
                ports_match(&yaml(rule), port, &ports),
                matches,
                "{rule} {port}"
            );
        }
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
        let loose = POLICIES.replace(
            "- from: [{podSelector:",
            "- from: [{namespaceSelector: {}, podSelector:",
        );
        let paths = open(&format!("{PODS}{loose}"));
        let elsewhere = "a pod of namespace elsewhere labelled like Deployment/api";
        assert!(
            paths.contains(&format!("{elsewhere} -> StatefulSet/db:5432")),
            "{paths:?}"
        );
        // egress policies close the source side
        let egress = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
             metadata: {name: out}\nspec: {podSelector: {matchLabels: {app: api}}, policyTypes: [Egress]}\n";
        assert_eq!(open(&format!("{PODS}{POLICIES}{egress}")), [want[1]]);
    }

    #[test]
    fn finds_default_deny_and_ip_blocks() {
        let m = |policies: &str| Manifests::parse(&format!("{PODS}{policies}")).unwrap();
        assert!(ip_block_peers(&m(POLICIES)).is_empty());
        assert!(denies_ingress_by_default(&m(POLICIES)));
        let partial = POLICIES.replacen(
            "podSelector: {}",
            "podSelector: {matchLabels: {app: api}}",
            1,
        );
        assert!(!denies_ingress_by_default(&m(&partial)));
        let blocked = POLICIES.replace(
            "{podSelector: {matchLabels: {app: api}}}",
            "{ipBlock: {cidr: 0.0.0.0/0}}",
        );
        assert_eq!(
            ip_block_peers(&m(&blocked)),
            ["NetworkPolicy/db admits an ipBlock"]
        );
    }
}
