//! A rendered set of Kubernetes objects, with lookups for workloads,
//! containers, ports and the effective environment of a container.

use std::collections::BTreeMap;

use base64::Engine as _;
use regex::Regex;
use serde_json::Value;

use crate::Error;

/// Kinds whose `spec.template` is a pod template.
pub const POD_TEMPLATE_KINDS: [&str; 5] = [
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
];

/// The images built by this project start with this prefix.
pub const PROJECT_IMAGE_PREFIX: &str = "switchyard/";

/// `kind` of an object ("" if absent).
pub fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or("")
}

/// `metadata.name` of an object ("" if absent).
pub fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("")
}

/// `Kind/name` of an object, for messages.
pub fn id(object: &Value) -> String {
    format!("{}/{}", kind(object), name(object))
}

/// A JSON object of strings (labels, selectors) as a map; other values are skipped.
pub fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// True if every `selector` entry is among `labels`; an empty selector matches nothing.
pub fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The repository part of an image reference: no tag, no digest.
pub fn image_repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    match without_digest.rfind(':') {
        // a colon after the last slash starts the tag; before it, a registry port
        Some(colon) if !without_digest[colon..].contains('/') => &without_digest[..colon],
        _ => without_digest,
    }
}

/// Rendered Kubernetes objects.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    objects: Vec<Value>,
}

/// An object with a pod template.
#[derive(Debug, Clone)]
pub struct Workload<'a> {
    /// The whole object.
    pub object: &'a Value,
    /// `spec.template.spec`.
    pub pod_spec: &'a Value,
    /// `spec.template.metadata.labels`.
    pub pod_labels: BTreeMap<String, String>,
}

impl<'a> Workload<'a> {
    /// `Kind/name`.
    pub fn id(&self) -> String {
        id(self.object)
    }

    /// The object's kind.
    pub fn kind(&self) -> &'a str {
        kind(self.object)
    }

    /// The object's name.
    pub fn name(&self) -> &'a str {
        name(self.object)
    }

    /// `spec.replicas` (None when absent).
    pub fn replicas(&self) -> Option<u64> {
        self.object["spec"]["replicas"].as_u64()
    }

    /// Application containers, then init containers.
    pub fn containers(&self) -> Vec<Container<'a>> {
        let mut out = Vec::new();
        for (field, init) in [("containers", false), ("initContainers", true)] {
            if let Some(list) = self.pod_spec[field].as_array() {
                out.extend(list.iter().map(|spec| Container { spec, init }));
            }
        }
        out
    }

    /// Application containers only.
    pub fn app_containers(&self) -> Vec<Container<'a>> {
        self.containers().into_iter().filter(|c| !c.init).collect()
    }

    /// The container with this name (application or init).
    pub fn container(&self, name: &str) -> Option<Container<'a>> {
        self.containers().into_iter().find(|c| c.name() == name)
    }
}

/// One container of a pod template.
#[derive(Debug, Clone, Copy)]
pub struct Container<'a> {
    /// The container spec.
    pub spec: &'a Value,
    /// True for an init container.
    pub init: bool,
}

impl<'a> Container<'a> {
    /// `name`.
    pub fn name(&self) -> &'a str {
        self.spec["name"].as_str().unwrap_or("")
    }

    /// `image`.
    pub fn image(&self) -> &'a str {
        self.spec["image"].as_str().unwrap_or("")
    }

    /// True for images built by this project (`switchyard/...`).
    pub fn is_project_image(&self) -> bool {
        self.image().starts_with(PROJECT_IMAGE_PREFIX)
    }

    /// Declared ports as (name, containerPort).
    pub fn ports(&self) -> Vec<(Option<&'a str>, u64)> {
        self.spec["ports"]
            .as_array()
            .map(|ports| {
                ports
                    .iter()
                    .filter_map(|p| p["containerPort"].as_u64().map(|n| (p["name"].as_str(), n)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Resolves a port reference (number or port name) to a declared container port.
    pub fn resolve_port(&self, port: &Value) -> Option<u64> {
        let ports = self.ports();
        match port {
            Value::Number(n) => n.as_u64().filter(|n| ports.iter().any(|(_, p)| p == n)),
            Value::String(s) => match s.parse::<u64>() {
                Ok(n) => ports.iter().any(|(_, p)| *p == n).then_some(n),
                Err(_) => ports
                    .iter()
                    .find(|(name, _)| *name == Some(s.as_str()))
                    .map(|(_, p)| *p),
            },
            _ => None,
        }
    }

    /// `args` and `command` entries.
    pub fn command_line(&self) -> Vec<&'a str> {
        ["command", "args"]
            .iter()
            .filter_map(|f| self.spec[*f].as_array())
            .flatten()
            .filter_map(Value::as_str)
            .collect()
    }
}

/// The environment of a container as Kubernetes would give it.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// Variable values. Values that cannot be known offline (fieldRef,
    /// resourceFieldRef) are absent.
    pub vars: BTreeMap<String, String>,
    /// How each variable was set: `value`, `configMap <name>`, `secret <name>`.
    pub sources: BTreeMap<String, String>,
    /// References to missing ConfigMaps, Secrets or keys.
    pub problems: Vec<String>,
}

impl Manifests {
    /// Parses the multi-document output of `kubectl kustomize`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let objects = crate::parse_yaml_documents(text)?;
        for (i, o) in objects.iter().enumerate() {
            if kind(o).is_empty() || name(o).is_empty() {
                return Err(Error::Invalid(format!(
                    "document {i} has no kind or metadata.name"
                )));
            }
        }
        Ok(Manifests { objects })
    }

    /// Wraps already parsed objects.
    pub fn from_values(objects: Vec<Value>) -> Self {
        Manifests { objects }
    }

    /// All objects, in input order.
    pub fn objects(&self) -> &[Value] {
        &self.objects
    }

    /// Objects of one kind.
    pub fn of_kind<'a>(&'a self, wanted: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| kind(o) == wanted)
    }

    /// The object of this kind and name.
    pub fn get(&self, wanted_kind: &str, wanted_name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|o| kind(o) == wanted_kind && name(o) == wanted_name)
    }

    /// Every object with a pod template (Deployment, StatefulSet, DaemonSet,
    /// ReplicaSet, Job, and the jobs of CronJobs).
    pub fn workloads(&self) -> Vec<Workload<'_>> {
        self.objects
            .iter()
            .filter_map(|o| {
                let template = if POD_TEMPLATE_KINDS.contains(&kind(o)) {
                    &o["spec"]["template"]
                } else if kind(o) == "CronJob" {
                    &o["spec"]["jobTemplate"]["spec"]["template"]
                } else {
                    return None;
                };
                Some(Workload {
                    object: o,
                    pod_spec: &template["spec"],
                    pod_labels: string_map(&template["metadata"]["labels"]),
                })
            })
            .collect()
    }

    /// The workload of this kind and name.
    pub fn workload(&self, wanted_kind: &str, wanted_name: &str) -> Option<Workload<'_>> {
        self.workloads()
            .into_iter()
            .find(|w| w.kind() == wanted_kind && w.name() == wanted_name)
    }

    /// Workloads whose pod labels match a selector.
    pub fn selected_workloads(&self, selector: &BTreeMap<String, String>) -> Vec<Workload<'_>> {
        self.workloads()
            .into_iter()
            .filter(|w| selector_matches(selector, &w.pod_labels))
            .collect()
    }

    /// `data` of a ConfigMap.
    pub fn config_map_data(&self, wanted: &str) -> Option<BTreeMap<String, String>> {
        self.get("ConfigMap", wanted)
            .map(|cm| string_map(&cm["data"]))
    }

    /// `data` (base64-decoded) and `stringData` of a Secret. Values that are
    /// not valid base64 UTF-8 are left out.
    pub fn secret_data(&self, wanted: &str) -> Option<BTreeMap<String, String>> {
        let secret = self.get("Secret", wanted)?;
        let mut out: BTreeMap<String, String> = string_map(&secret["data"])
            .into_iter()
            .filter_map(|(k, v)| {
                // like Go's decoder, ignore line breaks (kustomize wraps long values)
                let compact: String = v.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .ok()?;
                String::from_utf8(bytes).ok().map(|s| (k, s))
            })
            .collect();
        out.extend(string_map(&secret["stringData"]));
        Some(out)
    }

    /// The environment of a container: `envFrom` first, then `env` (which
    /// wins), with `$(VAR)` references to earlier variables expanded.
    pub fn env(&self, container: &Container<'_>) -> Env {
        let mut env = Env::default();
        if let Some(list) = container.spec["envFrom"].as_array() {
            for from in list {
                let prefix = from["prefix"].as_str().unwrap_or("");
                let (source, data) = if let Some(n) = from["configMapRef"]["name"].as_str() {
                    (format!("configMap {n}"), self.config_map_data(n))
                } else if let Some(n) = from["secretRef"]["name"].as_str() {
                    (format!("secret {n}"), self.secret_data(n))
                } else {
                    env.problems.push(format!(
                        "envFrom entry without configMapRef/secretRef: {from}"
                    ));
                    continue;
                };
                match data {
                    Some(data) => {
                        for (k, v) in data {
                            env.sources.insert(format!("{prefix}{k}"), source.clone());
                            env.vars.insert(format!("{prefix}{k}"), v);
                        }
                    }
                    None if optional(from) => {}
                    None => env
                        .problems
                        .push(format!("envFrom references missing {source}")),
                }
            }
        }
        if let Some(list) = container.spec["env"].as_array() {
            for var in list {
                let Some(var_name) = var["name"].as_str() else {
                    env.problems
                        .push(format!("env entry without a name: {var}"));
                    continue;
                };
                let from = &var["valueFrom"];
                let resolved = if from.is_null() {
                    let raw = var["value"].as_str().unwrap_or("");
                    Some((expand(raw, &env.vars), "value".to_owned()))
                } else if let Some(r) = from.get("configMapKeyRef") {
                    self.key_ref(&mut env, var_name, r, "configMap", Self::config_map_data)
                } else if let Some(r) = from.get("secretKeyRef") {
                    self.key_ref(&mut env, var_name, r, "secret", Self::secret_data)
                } else {
                    // fieldRef / resourceFieldRef: only known at run time
                    env.vars.remove(var_name);
                    env.sources
                        .insert(var_name.to_owned(), "runtime".to_owned());
                    None
                };
                if let Some((value, source)) = resolved {
                    env.vars.insert(var_name.to_owned(), value);
                    env.sources.insert(var_name.to_owned(), source);
                }
            }
        }
        env
    }

    fn key_ref(
        &self,
        env: &mut Env,
        var_name: &str,
        reference: &Value,
        what: &str,
        lookup: fn(&Self, &str) -> Option<BTreeMap<String, String>>,
    ) -> Option<(String, String)> {
        let ref_name = reference["name"].as_str().unwrap_or("");
        let key = reference["key"].as_str().unwrap_or("");
        let value = lookup(self, ref_name).and_then(|data| data.get(key).cloned());
        if value.is_none() && !optional(reference) {
            env.problems.push(format!(
                "env {var_name} references missing key {key:?} of {what} {ref_name:?}"
            ));
        }
        value.map(|v| (v, format!("{what} {ref_name}")))
    }
}

fn optional(reference: &Value) -> bool {
    reference["optional"].as_bool().unwrap_or(false)
        || reference["configMapRef"]["optional"]
            .as_bool()
            .unwrap_or(false)
        || reference["secretRef"]["optional"]
            .as_bool()
            .unwrap_or(false)
}

/// Expands `$(VAR)` with already defined variables; `$$(VAR)` stays literal.
fn expand(raw: &str, vars: &BTreeMap<String, String>) -> String {
    static_regex()
        .replace_all(raw, |caps: &regex::Captures<'_>| {
            let whole = caps.get(0).map_or("", |m| m.as_str());
            if whole.starts_with("$$") {
                return whole[1..].to_owned();
            }
            let var = caps.get(1).map_or("", |m| m.as_str());
            vars.get(var).cloned().unwrap_or_else(|| whole.to_owned())
        })
        .into_owned()
}

fn static_regex() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\$?\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)").expect("a valid regex"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {LOG_FORMAT: json, EVENT_BUS_URL: "http://bus:4005"}
---
apiVersion: v1
kind: Secret
metadata: {name: db}
data:
  posts: |
    cG9zdGdyZXM6Ly91OnBA
    cGc6NTQzMi9wb3N0cw==
stringData: {plain: hello}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: posts-depl}
spec:
  replicas: 2
  selector: {matchLabels: {app: posts}}
  template:
    metadata: {labels: {app: posts, tier: api}}
    spec:
      initContainers:
        - name: migrate
          image: switchyard/posts:abc
      containers:
        - name: posts
          image: switchyard/posts
          ports: [{name: http, containerPort: 4000}]
          envFrom: [{configMapRef: {name: cfg}}]
          env:
            - {name: LOG_FORMAT, value: text}
            - {name: DATABASE_URL, valueFrom: {secretKeyRef: {name: db, key: posts}}}
            - {name: GREETING, valueFrom: {secretKeyRef: {name: db, key: plain}}}
            - {name: BUS, value: "$(EVENT_BUS_URL)/events and $$(KEEP)"}
            - {name: MISSING, valueFrom: {configMapKeyRef: {name: nope, key: x}}}
            - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
"#;

    #[test]
    fn finds_workloads_containers_and_ports() {
        let m = Manifests::parse(SAMPLE).unwrap();
        assert_eq!(m.objects().len(), 3);
        let w = m.workload("Deployment", "posts-depl").unwrap();
        assert_eq!(w.replicas(), Some(2));
        assert_eq!(w.containers().len(), 2);
        assert_eq!(w.app_containers().len(), 1);
        let c = w.container("posts").unwrap();
        assert!(c.is_project_image());
        assert_eq!(c.resolve_port(&Value::from("http")), Some(4000));
        assert_eq!(c.resolve_port(&Value::from(4000)), Some(4000));
        assert_eq!(c.resolve_port(&Value::from("4000")), Some(4000));
        assert_eq!(c.resolve_port(&Value::from(4001)), None);
        assert_eq!(c.resolve_port(&Value::from("metrics")), None);
        let selector = BTreeMap::from([("app".to_owned(), "posts".to_owned())]);
        assert_eq!(m.selected_workloads(&selector).len(), 1);
        assert!(m.selected_workloads(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn resolves_the_environment() {
        let m = Manifests::parse(SAMPLE).unwrap();
        let w = m.workload("Deployment", "posts-depl").unwrap();
        let env = m.env(&w.container("posts").unwrap());
        assert_eq!(env.vars["LOG_FORMAT"], "text");
        assert_eq!(env.vars["EVENT_BUS_URL"], "http://bus:4005");
        assert_eq!(env.vars["DATABASE_URL"], "postgres://u:p@pg:5432/posts");
        assert_eq!(env.sources["DATABASE_URL"], "secret db");
        assert_eq!(env.vars["GREETING"], "hello");
        assert_eq!(env.vars["BUS"], "http://bus:4005/events and $(KEEP)");
        assert!(!env.vars.contains_key("POD"));
        assert_eq!(env.problems.len(), 1, "{:?}", env.problems);
        assert!(env.problems[0].contains("nope"));
    }

    #[test]
    fn strips_tags_and_digests_from_images() {
        assert_eq!(image_repository("switchyard/posts"), "switchyard/posts");
        assert_eq!(image_repository("switchyard/posts:1.2"), "switchyard/posts");
        assert_eq!(
            image_repository("reg:5000/switchyard/posts"),
            "reg:5000/switchyard/posts"
        );
        assert_eq!(
            image_repository("reg:5000/switchyard/posts:v1@sha256:ab"),
            "reg:5000/switchyard/posts"
        );
    }

    #[test]
    fn rejects_documents_without_kind() {
        assert!(Manifests::parse("metadata: {name: x}\n").is_err());
    }
}
