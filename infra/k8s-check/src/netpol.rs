//! NetworkPolicy evaluation, offline: whether a connection from a peer to a pod of the
//! rendered manifests on a port is allowed, by the rules of `networking.k8s.io/v1`.
//!
//! The manifests are applied to one namespace, whose name is not known here: the policies
//! in them are that namespace's, and it is the namespace of every workload they hold.
//!
//! - A pod is isolated for ingress when a policy of its namespace selects it
//!   (`spec.podSelector`; `{}` selects every pod) and has `Ingress` in its policy types
//!   (without `policyTypes`: always Ingress, Egress when it has `egress` rules); likewise
//!   for egress. A connection needs the source's egress and the destination's ingress
//!   allowed. A connection is allowed where isolated when some selecting policy has a rule
//!   whose peers and ports both match: no `from`/`to` (or an empty list) is every peer, no
//!   `ports` every port.
//! - A peer is `podSelector` (pods of the policy's namespace), `namespaceSelector` (every
//!   pod of the namespaces selected), both (those pods of those namespaces), or `ipBlock`.
//!   An `ipBlock` is taken to match every peer, pods as well as addresses outside the
//!   cluster (which addresses it covers depends on the network plugin): it can only make a
//!   check find more open paths, never fewer.
//! - Ports: TCP unless `protocol` says otherwise, a number (with `endPort`, a range) or a
//!   name, which is the destination pod's container port of that name.
//! - Egress of pods outside the namespace is not known here: taken as allowed.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::manifest::{self, Manifests, Workload, string_map};

/// Labels of a pod or a namespace.
pub type Labels = BTreeMap<String, String>;

/// The label every namespace has, naming it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The name the checks give the manifests' own namespace (its real name is the one they are
/// applied to).
pub const OWN_NAMESPACE: &str = "the-apps-namespace";

/// Where a connection comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    /// For messages and comparisons: a workload's `Kind/name`, or a description.
    pub id: String,
    /// `None`: the manifests' own namespace; otherwise the labels of another namespace.
    pub namespace: Option<Labels>,
    /// The pod's labels; `None` for an address outside the cluster.
    pub pod: Option<Labels>,
}

impl Peer {
    /// A pod of the manifests' own namespace.
    pub fn own(id: impl Into<String>, pod: Labels) -> Self {
        Peer {
            id: id.into(),
            namespace: None,
            pod: Some(pod),
        }
    }

    /// A pod of the namespace named `namespace`.
    pub fn in_namespace(id: impl Into<String>, namespace: &str, pod: Labels) -> Self {
        Peer {
            id: id.into(),
            namespace: Some(labels(&[(NAMESPACE_NAME_LABEL, namespace)])),
            pod: Some(pod),
        }
    }

    /// An address outside the cluster (a node port, a load balancer's client).
    pub fn external(id: impl Into<String>) -> Self {
        Peer {
            id: id.into(),
            namespace: None,
            pod: None,
        }
    }

    /// The labels of the peer's namespace.
    fn namespace_labels(&self) -> Labels {
        self.namespace
            .clone()
            .unwrap_or_else(|| labels(&[(NAMESPACE_NAME_LABEL, OWN_NAMESPACE)]))
    }
}

/// A label map from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Whether a `LabelSelector` (`matchLabels`, `matchExpressions`) matches `labels`. An empty
/// selector (`{}`) matches everything; a missing one (`null`) nothing.
pub fn label_selector_matches(selector: &Value, labels: &Labels) -> bool {
    if selector.is_null() {
        return false;
    }
    let by_labels = string_map(&selector["matchLabels"])
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap_or("");
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let value = labels.get(key).map(String::as_str);
            match e["operator"].as_str().unwrap_or("") {
                "In" => value.is_some_and(|v| values.contains(&v)),
                "NotIn" => value.is_none_or(|v| !values.contains(&v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                // an unknown operator is refused by the API server; match nothing
                _ => false,
            }
        });
    by_labels && by_expressions
}

/// Which directions a policy governs: (ingress, egress).
fn policy_types(policy: &Value) -> (bool, bool) {
    match policy["spec"]["policyTypes"].as_array() {
        Some(types) => (
            types.iter().any(|t| t == "Ingress"),
            types.iter().any(|t| t == "Egress"),
        ),
        None => (true, !policy["spec"]["egress"].is_null()),
    }
}

/// Whether a rule's peer list matches `peer` (seen from the policy's namespace).
fn peers_match(peers: &Value, peer: &Peer) -> bool {
    let Some(list) = peers.as_array().filter(|l| !l.is_empty()) else {
        return true; // no peers listed: every peer
    };
    list.iter().any(|p| {
        if !p["ipBlock"].is_null() {
            return true;
        }
        let Some(pod) = &peer.pod else {
            return false; // outside the cluster: only an ipBlock matches
        };
        let pod_selector = &p["podSelector"];
        let namespace_selector = &p["namespaceSelector"];
        match (pod_selector.is_null(), namespace_selector.is_null()) {
            // podSelector alone: pods of the policy's namespace
            (false, true) => peer.namespace.is_none() && label_selector_matches(pod_selector, pod),
            (true, false) => label_selector_matches(namespace_selector, &peer.namespace_labels()),
            (false, false) => {
                label_selector_matches(namespace_selector, &peer.namespace_labels())
                    && label_selector_matches(pod_selector, pod)
            }
            (true, true) => false, // an empty peer is refused by the API server
        }
    })
}

/// Whether a rule's port list matches `port` (TCP) of a pod with `container_ports`.
fn ports_match(ports: &Value, port: u64, container_ports: &[(Option<&str>, u64)]) -> bool {
    let Some(list) = ports.as_array().filter(|l| !l.is_empty()) else {
        return true;
    };
    list.iter().any(|p| {
        if p["protocol"].as_str().unwrap_or("TCP") != "TCP" {
            return false;
        }
        match &p["port"] {
            Value::Null => true,
            Value::Number(n) => {
                let low = n.as_u64().unwrap_or(0);
                let high = p["endPort"].as_u64().unwrap_or(low);
                (low..=high).contains(&port)
            }
            Value::String(name) => match name.parse::<u64>() {
                Ok(n) => n == port,
                Err(_) => container_ports
                    .iter()
                    .any(|(n, number)| *n == Some(name.as_str()) && *number == port),
            },
            _ => false,
        }
    })
}

/// The container ports (name, number) of a workload's application containers.
pub fn workload_ports<'a>(w: &Workload<'a>) -> Vec<(Option<&'a str>, u64)> {
    w.app_containers().iter().flat_map(|c| c.ports()).collect()
}

/// The policies of the namespace.
pub fn policies(m: &Manifests) -> impl Iterator<Item = &Value> {
    m.of_kind("NetworkPolicy")
}

/// Whether `to` admits a connection from `from` on `port`.
pub fn ingress_allowed(m: &Manifests, from: &Peer, to: &Workload<'_>, port: u64) -> bool {
    let ports = workload_ports(to);
    let mut isolated = false;
    for p in policies(m) {
        if !policy_types(p).0 || !label_selector_matches(&p["spec"]["podSelector"], &to.pod_labels)
        {
            continue;
        }
        isolated = true;
        let rules = p["spec"]["ingress"].as_array().cloned().unwrap_or_default();
        if rules
            .iter()
            .any(|r| peers_match(&r["from"], from) && ports_match(&r["ports"], port, &ports))
        {
            return true;
        }
    }
    !isolated
}

/// Whether `from` may open a connection to `to` on `port` (its egress side).
pub fn egress_allowed(m: &Manifests, from: &Peer, to: &Workload<'_>, port: u64) -> bool {
    let (Some(pod), None) = (&from.pod, &from.namespace) else {
        return true; // outside the namespace: its policies are not known here
    };
    let destination = Peer::own(to.id(), to.pod_labels.clone());
    let ports = workload_ports(to);
    let mut isolated = false;
    for p in policies(m) {
        if !policy_types(p).1 || !label_selector_matches(&p["spec"]["podSelector"], pod) {
            continue;
        }
        isolated = true;
        let rules = p["spec"]["egress"].as_array().cloned().unwrap_or_default();
        if rules
            .iter()
            .any(|r| peers_match(&r["to"], &destination) && ports_match(&r["ports"], port, &ports))
        {
            return true;
        }
    }
    !isolated
}

/// Whether a connection from `from` to `to` on `port` is allowed, both sides considered.
pub fn allowed(m: &Manifests, from: &Peer, to: &Workload<'_>, port: u64) -> bool {
    egress_allowed(m, from, to, port) && ingress_allowed(m, from, to, port)
}

/// One connection: who, to which workload, on which port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Path {
    /// [`Peer::id`] of the source.
    pub from: String,
    /// `Kind/name` of the destination workload.
    pub to: String,
    /// The destination container port.
    pub port: u64,
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
        for peer in peers {
            for &port in &ports {
                if allowed(m, peer, &w, port) {
                    out.push(Path {
                        from: peer.id.clone(),
                        to: w.id(),
                        port,
                    });
                }
            }
        }
    }
    out.sort();
    out
}

/// The peers every policy set is probed with: every workload of the manifests (as itself),
/// strangers in the namespace (a pod with an unknown `app`, a pod without labels), each
/// workload's labels worn by a pod of another namespace, the ingress controller and
/// Prometheus in their namespaces, and an address outside the cluster.
pub fn probe_peers(m: &Manifests, controller: &Peer, monitoring: &Peer) -> Vec<Peer> {
    let mut peers: Vec<Peer> = m
        .workloads()
        .iter()
        .map(|w| Peer::own(w.id(), w.pod_labels.clone()))
        .collect();
    peers.push(Peer::own(
        "a pod labelled app=stranger in the namespace",
        labels(&[("app", "stranger")]),
    ));
    peers.push(Peer::own(
        "an unlabelled pod in the namespace",
        Labels::new(),
    ));
    for w in m.workloads() {
        peers.push(Peer::in_namespace(
            format!("a pod of namespace elsewhere labelled like {}", w.id()),
            "elsewhere",
            w.pod_labels.clone(),
        ));
    }
    peers.push(controller.clone());
    peers.push(monitoring.clone());
    peers.push(Peer::external("an address outside the cluster"));
    peers
}

/// Whether a policy denies all incoming connections to every pod of the namespace
/// (`podSelector: {}`, policy type Ingress, no rule): the default for pods no other policy
/// selects, including pods added later.
pub fn denies_ingress_by_default(m: &Manifests) -> bool {
    policies(m).any(|p| {
        let spec = &p["spec"];
        let selector = &spec["podSelector"];
        let selects_every_pod = selector.is_object()
            && selector["matchLabels"]
                .as_object()
                .is_none_or(|o| o.is_empty())
            && selector["matchExpressions"]
                .as_array()
                .is_none_or(|a| a.is_empty());
        selects_every_pod
            && policy_types(p).0
            && spec["ingress"].as_array().is_none_or(|r| r.is_empty())
    })
}

/// Policies whose ingress rules admit an `ipBlock` (which the checks cannot confine to
/// the pods meant).
pub fn ip_block_peers(m: &Manifests) -> Vec<String> {
    policies(m)
        .filter(|p| {
            p["spec"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["from"].as_array().into_iter().flatten())
                .any(|peer| !peer["ipBlock"].is_null())
        })
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
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
        - name: api
          image: switchyard/api
          ports: [{name: http, containerPort: 3000}, {name: ops, containerPort: 9090}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
        - name: db
          image: postgres:17
          ports: [{name: postgres, containerPort: 5432}]
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

    fn controller() -> Peer {
        Peer::in_namespace("controller", "ingress-nginx", labels(&[("app", "nginx")]))
    }

    fn monitoring() -> Peer {
        Peer::in_namespace("prometheus", "monitoring", labels(&[("app", "prometheus")]))
    }

    fn open(text: &str) -> Vec<String> {
        let m = Manifests::parse(text).unwrap();
        open_paths(&m, &probe_peers(&m, &controller(), &monitoring()))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn selectors_follow_the_api_rules() {
        let l = labels(&[("app", "api"), ("tier", "web")]);
        let sel = |y: &str| crate::parse_yaml_documents(y).unwrap().remove(0);
        assert!(label_selector_matches(&sel("{}"), &l));
        assert!(!label_selector_matches(&Value::Null, &l));
        assert!(label_selector_matches(&sel("matchLabels: {app: api}"), &l));
        assert!(!label_selector_matches(&sel("matchLabels: {app: db}"), &l));
        assert!(label_selector_matches(
            &sel(
                "matchExpressions: [{key: app, operator: NotIn, values: [db]}, {key: tier, operator: Exists}]"
            ),
            &l
        ));
        assert!(!label_selector_matches(
            &sel("matchExpressions: [{key: tier, operator: DoesNotExist}]"),
            &l
        ));
    }

    #[test]
    fn without_policies_everything_is_open() {
        let paths = open(PODS);
        assert!(paths.contains(&"an address outside the cluster -> StatefulSet/db:5432".into()));
        assert!(paths.contains(&"controller -> Deployment/api:9090".into()));
    }

    #[test]
    fn policies_open_exactly_their_paths() {
        assert_eq!(
            open(&format!("{PODS}{POLICIES}")),
            [
                "Deployment/api -> StatefulSet/db:5432",
                "controller -> Deployment/api:3000",
            ]
        );
    }

    #[test]
    fn a_namespace_selector_beside_a_pod_selector_opens_other_namespaces() {
        let loose = POLICIES.replace(
            "- from: [{podSelector: {matchLabels: {app: api}}}]",
            "- from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: api}}}]",
        );
        let paths = open(&format!("{PODS}{loose}"));
        assert!(
            paths.contains(
                &"a pod of namespace elsewhere labelled like Deployment/api -> StatefulSet/db:5432"
                    .into()
            ),
            "{paths:?}"
        );
    }

    #[test]
    fn egress_policies_close_the_source_side() {
        let egress = format!(
            "{PODS}{POLICIES}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
             metadata: {{name: out}}\nspec: {{podSelector: {{matchLabels: {{app: api}}}}, policyTypes: [Egress]}}\n"
        );
        assert_eq!(open(&egress), ["controller -> Deployment/api:3000"]);
        let m = Manifests::parse(&format!("{PODS}{POLICIES}")).unwrap();
        assert!(ip_block_peers(&m).is_empty());
        assert!(denies_ingress_by_default(&m));
        let partial = Manifests::parse(&format!(
            "{PODS}{}",
            POLICIES.replacen(
                "podSelector: {}",
                "podSelector: {matchLabels: {app: api}}",
                1
            )
        ))
        .unwrap();
        assert!(!denies_ingress_by_default(&partial));
        let blocked = Manifests::parse(&format!(
            "{PODS}{}",
            POLICIES.replace(
                "{podSelector: {matchLabels: {app: api}}}",
                "{ipBlock: {cidr: 0.0.0.0/0}}"
            )
        ))
        .unwrap();
        assert_eq!(
            ip_block_peers(&blocked),
            ["NetworkPolicy/db admits an ipBlock"]
        );
    }

    #[test]
    fn ports_by_number_range_and_name() {
        let ports = [(Some("http"), 3000), (Some("ops"), 9090)];
        let p = |y: &str| crate::parse_yaml_documents(y).unwrap().remove(0);
        assert!(ports_match(&Value::Null, 1, &ports));
        assert!(ports_match(&p("[{port: http}]"), 3000, &ports));
        assert!(!ports_match(&p("[{port: http}]"), 9090, &ports));
        assert!(ports_match(
            &p("[{port: 9000, endPort: 9100}]"),
            9090,
            &ports
        ));
        assert!(!ports_match(
            &p("[{port: 9090, protocol: UDP}]"),
            9090,
            &ports
        ));
    }
}
