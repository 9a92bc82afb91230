//! A rendered set of Kubernetes objects, with lookups for workloads, containers, ports,
//! volumes and the effective environment of a container.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use base64::Engine as _;
use regex::Regex;
use serde_json::Value;

use crate::Error;

/// Labels, selectors, ConfigMap data.
pub type Map = BTreeMap<String, String>;

/// The items of a JSON array (none if the value is not one).
pub fn list(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// A string value ("" if absent).
pub fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

pub fn kind(object: &Value) -> &str {
    text(&object["kind"])
}

pub fn name(object: &Value) -> &str {
    text(&object["metadata"]["name"])
}

/// `Kind/name`, for messages.
pub fn id(object: &Value) -> String {
    format!("{}/{}", kind(object), name(object))
}

/// A JSON object of strings as a map; other values are skipped.
pub fn string_map(value: &Value) -> Map {
    let entries = value.as_object().into_iter().flatten();
    entries
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
        .collect()
}

/// True if every `selector` entry is among `labels`; an empty selector matches nothing.
pub fn selector_matches(selector: &Map, labels: &Map) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The `targetPort` of a Service port (its `port` when absent).
pub fn target_port(port: &Value) -> &Value {
    match &port["targetPort"] {
        Value::Null => &port["port"],
        target => target,
    }
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
    pub object: &'a Value,
    /// `spec.template.spec`.
    pub pod_spec: &'a Value,
    pub pod_labels: Map,
}

impl<'a> Workload<'a> {
    pub fn id(&self) -> String {
        id(self.object)
    }

    /// Application containers, then init containers.
    pub fn containers(&self) -> Vec<Container<'a>> {
        let app = list(&self.pod_spec["containers"]).map(|spec| Container { spec, init: false });
        let init =
            list(&self.pod_spec["initContainers"]).map(|spec| Container { spec, init: true });
        app.chain(init).collect()
    }

    pub fn app_containers(&self) -> Vec<Container<'a>> {
        self.containers().into_iter().filter(|c| !c.init).collect()
    }

    pub fn container(&self, name: &str) -> Option<Container<'a>> {
        self.containers().into_iter().find(|c| c.name() == name)
    }

    /// The pod volume mounted at `path` in container `c`.
    pub fn volume_at(&self, c: &Container<'_>, path: &str) -> Option<&'a Value> {
        let mount = list(&c.spec["volumeMounts"]).find(|v| v["mountPath"] == path)?;
        list(&self.pod_spec["volumes"]).find(|v| v["name"] == mount["name"])
    }
}

/// One container of a pod template.
#[derive(Debug, Clone, Copy)]
pub struct Container<'a> {
    pub spec: &'a Value,
    pub init: bool,
}

impl<'a> Container<'a> {
    pub fn name(&self) -> &'a str {
        text(&self.spec["name"])
    }

    pub fn image(&self) -> &'a str {
        text(&self.spec["image"])
    }

    /// True for images built by this project (`switchyard/...`).
    pub fn is_project_image(&self) -> bool {
        self.image().starts_with("switchyard/")
    }

    /// Declared ports as (name, containerPort).
    pub fn ports(&self) -> Vec<(Option<&'a str>, u64)> {
        list(&self.spec["ports"])
            .filter_map(|p| Some((p["name"].as_str(), p["containerPort"].as_u64()?)))
            .collect()
    }

    /// Resolves a port reference (number or port name) to a declared container port.
    pub fn resolve_port(&self, port: &Value) -> Option<u64> {
        let ports = self.ports();
        let number = match port {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        match number {
            Some(n) => ports.iter().any(|(_, p)| *p == n).then_some(n),
            None => ports
                .iter()
                .find(|(n, _)| *n == port.as_str())
                .map(|(_, p)| *p),
        }
    }

    /// `command` and `args` entries.
    pub fn command_line(&self) -> Vec<&'a str> {
        let words = list(&self.spec["command"]).chain(list(&self.spec["args"]));
        words.filter_map(Value::as_str).collect()
    }

    /// The first `env` entry named `var`.
    pub fn env_entry(&self, var: &str) -> Option<&'a Value> {
        list(&self.spec["env"]).find(|e| e["name"] == var)
    }

    /// Whether `env` sets `var` to a literal value.
    pub fn literal(&self, var: &str) -> bool {
        list(&self.spec["env"]).any(|e| e["name"] == var && !e["value"].is_null())
    }

    /// Whether `var` is read from `key` of Secret `secret`, optionally or not as `optional`.
    pub fn reads_secret(&self, var: &str, secret: &str, key: &str, optional: bool) -> bool {
        self.env_entry(var).is_some_and(|e| {
            let r = &e["valueFrom"]["secretKeyRef"];
            let is_optional = r["optional"].as_bool().unwrap_or(false);
            r["name"] == secret && r["key"] == key && is_optional == optional
        })
    }
}

/// The environment of a container as Kubernetes would give it.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// Values; those only known at run time (fieldRef, resourceFieldRef) are absent.
    pub vars: Map,
    /// How each variable was set: `value`, `configMap <name>`, `secret <name>`, `runtime`.
    pub sources: Map,
    /// References to missing ConfigMaps, Secrets or keys.
    pub problems: Vec<String>,
}

impl Manifests {
    /// Parses the multi-document output of `kubectl kustomize`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let objects = crate::parse_yaml_documents(text)?;
        if let Some(i) = objects
            .iter()
            .position(|o| kind(o).is_empty() || name(o).is_empty())
        {
            return Err(Error::Invalid(format!(
                "document {i} has no kind or metadata.name"
            )));
        }
        Ok(Manifests { objects })
    }

    pub fn from_values(objects: Vec<Value>) -> Self {
        Manifests { objects }
    }

    pub fn objects(&self) -> &[Value] {
        &self.objects
    }

    pub fn of_kind<'a>(&'a self, wanted: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| kind(o) == wanted)
    }

    pub fn get(&self, wanted_kind: &str, wanted_name: &str) -> Option<&Value> {
        let mut all = self.objects.iter();
        all.find(|o| kind(o) == wanted_kind && name(o) == wanted_name)
    }

    /// Every object with a pod template (the jobs of CronJobs too).
    pub fn workloads(&self) -> Vec<Workload<'_>> {
        let workloads = self
            .objects
            .iter()
            .filter_map(|o| Some((o, pod_template(o)?)));
        workloads
            .map(|(object, t)| Workload {
                object,
                pod_spec: &t["spec"],
                pod_labels: string_map(&t["metadata"]["labels"]),
            })
            .collect()
    }

    /// Every container (then init container) of every workload, with `Kind/name container
    /// name` for messages.
    pub fn containers(&self) -> Vec<(String, Workload<'_>, Container<'_>)> {
        let mut out = Vec::new();
        for w in self.workloads() {
            for c in w.containers() {
                out.push((format!("{} container {}", w.id(), c.name()), w.clone(), c));
            }
        }
        out
    }

    pub fn workload(&self, wanted_kind: &str, wanted_name: &str) -> Option<Workload<'_>> {
        let mut all = self.workloads().into_iter();
        all.find(|w| kind(w.object) == wanted_kind && name(w.object) == wanted_name)
    }

    /// Container `container` of Deployment `deployment`.
    pub fn deployment_container(
        &self,
        deployment: &str,
        container: &str,
    ) -> Option<(Workload<'_>, Container<'_>)> {
        let w = self.workload("Deployment", deployment)?;
        let c = w.container(container)?;
        Some((w, c))
    }

    /// Workloads whose pod labels match a selector.
    pub fn selected_workloads(&self, selector: &Map) -> Vec<Workload<'_>> {
        let mut all = self.workloads();
        all.retain(|w| selector_matches(selector, &w.pod_labels));
        all
    }

    pub fn config_map_data(&self, wanted: &str) -> Option<Map> {
        self.get("ConfigMap", wanted)
            .map(|cm| string_map(&cm["data"]))
    }

    /// `data` (base64-decoded; values that are not base64 UTF-8 are left out) and
    /// `stringData` of a Secret.
    pub fn secret_data(&self, wanted: &str) -> Option<Map> {
        let secret = self.get("Secret", wanted)?;
        let decode = |v: String| {
            // like Go's decoder, ignore line breaks (kustomize wraps long values)
            let compact: String = v.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .ok()?;
            String::from_utf8(bytes).ok()
        };
        let data = string_map(&secret["data"]).into_iter();
        let mut out: Map = data.filter_map(|(k, v)| Some((k, decode(v)?))).collect();
        out.extend(string_map(&secret["stringData"]));
        Some(out)
    }

    /// The ConfigMap or Secret a `configMapRef`/`secretRef`/`...KeyRef` holder names.
    fn source<'v>(&self, holder: &'v Value) -> Option<(String, Option<Map>, &'v Value)> {
        if let Some(r) = holder.get("configMapRef").or(holder.get("configMapKeyRef")) {
            let n = text(&r["name"]);
            Some((format!("configMap {n}"), self.config_map_data(n), r))
        } else if let Some(r) = holder.get("secretRef").or(holder.get("secretKeyRef")) {
            let n = text(&r["name"]);
            Some((format!("secret {n}"), self.secret_data(n), r))
        } else {
            None
        }
    }

    /// The environment of a container: `envFrom` first, then `env` (which wins), with
    /// `$(VAR)` references to earlier variables expanded.
    pub fn env(&self, container: &Container<'_>) -> Env {
        let mut env = Env::default();
        for from in list(&container.spec["envFrom"]) {
            let prefix = text(&from["prefix"]);
            match self.source(from) {
                Some((source, Some(data), _)) => {
                    for (k, v) in data {
                        env.sources.insert(format!("{prefix}{k}"), source.clone());
                        env.vars.insert(format!("{prefix}{k}"), v);
                    }
                }
                Some((_, None, r)) if r["optional"] == true => {}
                Some((source, None, _)) => env
                    .problems
                    .push(format!("envFrom references missing {source}")),
                None => env.problems.push(format!(
                    "envFrom entry without configMapRef/secretRef: {from}"
                )),
            }
        }
        for var in list(&container.spec["env"]) {
            let Some(var_name) = var["name"].as_str() else {
                env.problems
                    .push(format!("env entry without a name: {var}"));
                continue;
            };
            let from = &var["valueFrom"];
            let resolved = if from.is_null() {
                Some((expand(text(&var["value"]), &env.vars), "value".to_owned()))
            } else if let Some((source, data, r)) = self.source(from) {
                let key = text(&r["key"]);
                let value = data.and_then(|d| d.get(key).cloned());
                if value.is_none() && r["optional"] != true {
                    env.problems.push(format!(
                        "env {var_name} references missing key {key:?} of {source}"
                    ));
                }
                value.map(|v| (v, source))
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
        env
    }
}

fn pod_template(o: &Value) -> Option<&Value> {
    match kind(o) {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            Some(&o["spec"]["template"])
        }
        "CronJob" => Some(&o["spec"]["jobTemplate"]["spec"]["template"]),
        _ => None,
    }
}

/// Expands `$(VAR)` with already defined variables; `$$(VAR)` stays literal.
fn expand(raw: &str, vars: &Map) -> String {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE
        .get_or_init(|| Regex::new(r"\$?\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)").expect("a valid regex"));
    let replace = |caps: &regex::Captures<'_>| {
        let whole = &caps[0];
        match whole.strip_prefix("$$") {
            Some(_) => whole[1..].to_owned(),
            None => vars
                .get(&caps[1])
                .cloned()
                .unwrap_or_else(|| whole.to_owned()),
        }
    };
    re.replace_all(raw, replace).into_owned()
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
  selector: {matchLabels: {app: posts}}
  template:
    metadata: {labels: {app: posts, tier: api}}
    spec:
      initContainers: [{name: migrate, image: "switchyard/posts:abc"}]
      containers:
        - name: posts
          image: switchyard/posts
          ports: [{name: http, containerPort: 4000}]
          envFrom: [{configMapRef: {name: cfg}}, {secretRef: {name: gone, optional: true}}]
          env:
            - {name: LOG_FORMAT, value: text}
            - {name: DATABASE_URL, valueFrom: {secretKeyRef: {name: db, key: posts}}}
            - {name: GREETING, valueFrom: {secretKeyRef: {name: db, key: plain}}}
            - {name: BUS, value: "$(EVENT_BUS_URL)/events and $$(KEEP)"}
            - {name: MISSING, valueFrom: {configMapKeyRef: {name: nope, key: x}}}
            - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
          volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, emptyDir: {}}]
"#;

    #[test]
    fn finds_workloads_containers_ports_and_volumes() {
        let m = Manifests::parse(SAMPLE).unwrap();
        let (w, c) = m.deployment_container("posts-depl", "posts").unwrap();
        assert_eq!((w.containers().len(), w.app_containers().len()), (2, 1));
        assert!(c.is_project_image());
        for (port, want) in [
            ("http", Some(4000)),
            ("4000", Some(4000)),
            ("metrics", None),
        ] {
            assert_eq!(c.resolve_port(&Value::from(port)), want, "{port}");
        }
        assert_eq!(c.resolve_port(&Value::from(4000)), Some(4000));
        assert_eq!(c.resolve_port(&Value::from(4001)), None);
        assert_eq!(w.volume_at(&c, "/data").unwrap()["name"], "data");
        assert!(c.reads_secret("DATABASE_URL", "db", "posts", false));
        assert!(!c.reads_secret("DATABASE_URL", "db", "posts", true));
        let selector = Map::from([("app".to_owned(), "posts".to_owned())]);
        assert_eq!(m.selected_workloads(&selector).len(), 1);
        assert!(m.selected_workloads(&Map::new()).is_empty());
        assert!(Manifests::parse("metadata: {name: x}\n").is_err());
    }

    #[test]
    fn resolves_the_environment() {
        let m = Manifests::parse(SAMPLE).unwrap();
        let env = m.env(&m.deployment_container("posts-depl", "posts").unwrap().1);
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
        for (image, repo) in [
            ("switchyard/posts", "switchyard/posts"),
            ("switchyard/posts:1.2", "switchyard/posts"),
            ("reg:5000/switchyard/posts", "reg:5000/switchyard/posts"),
            (
                "reg:5000/switchyard/posts:v1@sha256:ab",
                "reg:5000/switchyard/posts",
            ),
        ] {
            assert_eq!(image_repository(image), repo);
        }
    }
}
