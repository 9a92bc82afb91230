//! A rendered set of Kubernetes objects, with lookups of workloads, containers and env.

use std::collections::BTreeMap;
use std::sync::LazyLock;

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

/// A string as it is, other JSON as JSON text.
pub fn as_text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
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
    let entry = |(k, v): (&String, &Value)| Some((k.clone(), v.as_str()?.to_owned()));
    entries.filter_map(entry).collect()
}

/// The `targetPort` of a Service port (its `port` when absent).
pub fn target_port(port: &Value) -> &Value {
    let t = &port["targetPort"];
    if t.is_null() { &port["port"] } else { t }
}

/// The repository part of an image reference: no tag, no digest.
pub fn image_repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        // a colon after the last slash starts the tag; before it, a registry port
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

#[derive(Debug, Clone, Default)]
pub struct Manifests {
    objects: Vec<Value>,
}

/// An object with a pod template: `pod_spec` is the template's `spec`.
#[derive(Debug, Clone)]
pub struct Workload<'a> {
    pub object: &'a Value,
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
        let init = list(&self.pod_spec["initContainers"]);
        let init = init.map(|spec| Container { spec, init: true });
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

    pub fn is_project_image(&self) -> bool {
        self.image().starts_with("switchyard/")
    }

    /// Declared ports as (name, containerPort).
    pub fn ports(&self) -> Vec<(Option<&'a str>, u64)> {
        let port = |p: &'a Value| Some((p["name"].as_str(), p["containerPort"].as_u64()?));
        list(&self.spec["ports"]).filter_map(port).collect()
    }

    /// Resolves a port reference (number or port name) to a declared container port.
    pub fn resolve_port(&self, port: &Value) -> Option<u64> {
        let ports = self.ports();
        match port.as_u64().or_else(|| port.as_str()?.parse().ok()) {
            Some(n) => ports.iter().any(|(_, p)| *p == n).then_some(n),
            None => ports.iter().find(|p| p.0 == port.as_str()).map(|p| p.1),
        }
    }

    pub fn command_line(&self) -> Vec<&'a str> {
        let words = list(&self.spec["command"]).chain(list(&self.spec["args"]));
        words.filter_map(Value::as_str).collect()
    }

    pub fn env_entry(&self, var: &str) -> Option<&'a Value> {
        list(&self.spec["env"]).find(|e| e["name"] == var)
    }

    /// Whether `env` sets `var` to a literal value.
    pub fn literal(&self, var: &str) -> bool {
        self.env_entry(var).is_some_and(|e| !e["value"].is_null())
    }

    /// Whether `var` is read from `key` of Secret `secret`, optionally or not as `optional`.
    pub fn reads_secret(&self, var: &str, secret: &str, key: &str, optional: bool) -> bool {
        let from = self.env_entry(var).map(|e| &e["valueFrom"]["secretKeyRef"]);
        from.is_some_and(|r| {
            let is_optional = r["optional"].as_bool().unwrap_or(false);
            r["name"] == secret && r["key"] == key && is_optional == optional
        })
    }
}

const PVC: &str = "PersistentVolumeClaim";

/// The fields that reference a ConfigMap, Secret or PersistentVolumeClaim from an `env`
/// entry's `valueFrom`, an `envFrom` entry or a volume: field, kind, the field of the name.
const REFERENCES: [(&str, &str, &str); 7] = [
    ("configMapKeyRef", "ConfigMap", "name"),
    ("configMapRef", "ConfigMap", "name"),
    ("secretKeyRef", "Secret", "name"),
    ("secretRef", "Secret", "name"),
    ("configMap", "ConfigMap", "name"),
    ("secret", "Secret", "secretName"),
    ("persistentVolumeClaim", PVC, "claimName"),
];

/// A reference to an object of kind `kind` (`key`: one of its keys, `None`: all of it).
#[derive(Debug, Clone)]
pub struct Ref<'a> {
    pub kind: &'static str,
    pub name: &'a str,
    pub key: Option<&'a str>,
    pub optional: bool,
}

/// The reference a `valueFrom`, `envFrom` entry or volume makes, if any.
fn reference(holder: &Value) -> Option<Ref<'_>> {
    REFERENCES.iter().find_map(|(field, kind, name)| {
        let r = &holder[field];
        Some(Ref {
            kind,
            name: r[*name].as_str()?,
            key: r["key"].as_str(),
            optional: r["optional"] == true,
        })
    })
}

impl Manifests {
    pub fn parse(text: &str) -> Result<Self, Error> {
        Ok(Manifests::from_values(crate::parse_yaml_documents(text)?))
    }

    pub fn from_values(objects: Vec<Value>) -> Self {
        Manifests { objects }
    }

    pub fn objects(&self) -> &[Value] {
        &self.objects
    }

    pub fn of_kind<'a>(&'a self, wanted: &str) -> impl Iterator<Item = &'a Value> + use<'a> {
        let wanted = wanted.to_owned();
        self.objects.iter().filter(move |o| kind(o) == wanted)
    }

    pub fn get(&self, wanted_kind: &str, wanted_name: &str) -> Option<&Value> {
        self.of_kind(wanted_kind).find(|o| name(o) == wanted_name)
    }

    /// Every object with a pod template (the jobs of CronJobs too).
    pub fn workloads(&self) -> Vec<Workload<'_>> {
        fn template(o: &Value) -> Option<&Value> {
            match kind(o) {
                "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => Some(&o["spec"]["template"]),
                "CronJob" => Some(&o["spec"]["jobTemplate"]["spec"]["template"]),
                _ => None,
            }
        }
        let workload = |object| {
            let t = template(object)?;
            let pod_labels = string_map(&t["metadata"]["labels"]);
            Some(Workload {
                object,
                pod_spec: &t["spec"],
                pod_labels,
            })
        };
        self.objects.iter().filter_map(workload).collect()
    }

    /// Every container (then init container) of every workload, with `Kind/name container c`.
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

    /// Container `c` of workload `k`/`n`.
    pub fn container(&self, k: &str, n: &str, c: &str) -> Option<(Workload<'_>, Container<'_>)> {
        let w = self.workload(k, n)?;
        Some((w.clone(), w.container(c)?))
    }

    /// Workloads whose pod labels have every entry of `selector` (an empty one selects none).
    pub fn selected_workloads(&self, selector: &Map) -> Vec<Workload<'_>> {
        let selects = |w: &Workload| selector.iter().all(|(k, v)| w.pod_labels.get(k) == Some(v));
        let mut all = self.workloads();
        all.retain(|w| !selector.is_empty() && selects(w));
        all
    }

    /// The data of ConfigMap or Secret (`kind`) `name`: a ConfigMap's `data`, a Secret's
    /// `data` (base64-decoded; values that are not base64 UTF-8 are left out) and `stringData`.
    pub fn data(&self, kind: &str, name: &str) -> Option<Map> {
        let object = self.get(kind, name)?;
        if kind != "Secret" {
            return Some(string_map(&object["data"]));
        }
        let decode = |v: String| {
            // like Go's decoder, ignore line breaks (kustomize wraps long values)
            let compact: String = v.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let base64 = base64::engine::general_purpose::STANDARD;
            let bytes = base64.decode(compact).ok()?;
            String::from_utf8(bytes).ok()
        };
        let data = string_map(&object["data"]).into_iter();
        let mut out: Map = data.filter_map(|(k, v)| Some((k, decode(v)?))).collect();
        out.extend(string_map(&object["stringData"]));
        Some(out)
    }

    /// Every reference of a workload to a ConfigMap, Secret or PVC, with where it is.
    pub fn references(&self) -> Vec<(String, Ref<'_>)> {
        let mut out = Vec::new();
        for (at, _, c) in self.containers() {
            let env = list(&c.spec["env"]).map(|var| &var["valueFrom"]);
            let refs = env.chain(list(&c.spec["envFrom"])).filter_map(reference);
            out.extend(refs.map(|r| (at.clone(), r)));
        }
        for w in self.workloads() {
            for v in list(&w.pod_spec["volumes"]) {
                let at = format!("{} volume {}", w.id(), text(&v["name"]));
                out.extend(reference(v).map(|r| (at, r)));
            }
        }
        out
    }

    /// The environment of a container as Kubernetes would give it: `envFrom` first, then
    /// `env` (which wins), with `$(VAR)` references to earlier variables expanded. Values
    /// only known at run time (fieldRef, resourceFieldRef) are left out, and so are those
    /// of missing objects or keys (which [`Manifests::references`] finds).
    pub fn env(&self, container: &Container<'_>) -> Map {
        let mut env = Map::new();
        for from in list(&container.spec["envFrom"]) {
            let data = reference(from).and_then(|r| self.data(r.kind, r.name));
            let prefix = text(&from["prefix"]);
            let data = data.into_iter().flatten();
            env.extend(data.map(|(k, v)| (format!("{prefix}{k}"), v)));
        }
        for var in list(&container.spec["env"]) {
            let var_name = text(&var["name"]).to_owned();
            let value = match reference(&var["valueFrom"]) {
                _ if var["valueFrom"].is_null() => Some(expand(text(&var["value"]), &env)),
                Some(r) => {
                    let value = self.data(r.kind, r.name).and_then(|mut d| d.remove(r.key?));
                    value.or_else(|| env.get(&var_name).cloned())
                }
                None => None, // fieldRef, resourceFieldRef
            };
            match value {
                Some(value) => env.insert(var_name, value),
                None => env.remove(&var_name),
            };
        }
        env
    }
}

/// Expands `$(VAR)` with already defined variables; `$$(VAR)` stays literal.
fn expand(raw: &str, vars: &Map) -> String {
    static RE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\$?\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)").expect("a valid regex")
    });
    let replace = |caps: &regex::Captures<'_>| match caps[0].strip_prefix("$$") {
        Some(escaped) => format!("${escaped}"),
        None => vars.get(&caps[1]).map_or(&caps[0], |v| v).to_owned(),
    };
    RE.replace_all(raw, replace).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn resolves_the_environment_and_image_repositories() {
        let yaml = r#"
kind: ConfigMap
metadata: {name: cfg}
data: {LOG_FORMAT: json, EVENT_BUS_URL: "http://bus:4005"}
---
kind: Secret
metadata: {name: db}
data:
  posts: |
    cG9zdGdyZXM6Ly91OnBA
    cGc6NTQzMi9wb3N0cw==
stringData: {plain: hello}
---
kind: Deployment
metadata: {name: posts-depl}
spec:
  template:
    spec:
      containers:
        - name: posts
          envFrom: [{configMapRef: {name: cfg}}, {secretRef: {name: gone, optional: true}}]
          env:
            - {name: LOG_FORMAT, value: text}
            - {name: DATABASE_URL, valueFrom: {secretKeyRef: {name: db, key: posts}}}
            - {name: GREETING, valueFrom: {secretKeyRef: {name: db, key: plain}}}
            - {name: BUS, value: "$(EVENT_BUS_URL)/events and $$(KEEP)"}
            - {name: MISSING, valueFrom: {configMapKeyRef: {name: nope, key: x}}}
            - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
"#;
        let m = Manifests::parse(yaml).unwrap();
        let env = m.env(&m.container("Deployment", "posts-depl", "posts").unwrap().1);
        for (var, want) in [
            ("LOG_FORMAT", Some("text")),
            ("EVENT_BUS_URL", Some("http://bus:4005")),
            ("DATABASE_URL", Some("postgres://u:p@pg:5432/posts")),
            ("GREETING", Some("hello")),
            ("BUS", Some("http://bus:4005/events and $(KEEP)")),
            ("POD", None),
        ] {
            assert_eq!(env.get(var).map(String::as_str), want, "{var}");
        }
        // (the optional Secret `gone` is no problem)
        let missing = "Deployment/posts-depl container posts: ConfigMap nope does not exist";
        assert_eq!(crate::checks::references(&m), [missing]);
        let repo = "reg:5000/switchyard/posts";
        assert_eq!(image_repository("switchyard/posts:1.2"), "switchyard/posts");
        assert_eq!(image_repository(repo), repo);
        assert_eq!(image_repository(&format!("{repo}:v1@sha256:ab")), repo);
    }
}
