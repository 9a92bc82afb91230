//! The parts of `skaffold.yaml` the checks need, with a profile applied as skaffold does:
//! its mapping fields merged into the config recursively (lists and scalars replace), then
//! its JSON `patches` (add, remove, replace).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::Error;
use crate::manifest::{list, text};

/// One `build.artifacts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub image: String,
    /// `context` (default ".").
    pub context: String,
    /// `docker.dockerfile` (default "Dockerfile").
    pub dockerfile: String,
    /// `docker.buildArgs`.
    pub build_args: BTreeMap<String, String>,
}

/// A parsed `skaffold.yaml`.
#[derive(Debug, Clone)]
pub struct Skaffold {
    pub raw: Value,
}

impl Skaffold {
    /// Parses the (single-document) config.
    pub fn parse(text: &str) -> Result<Self, Error> {
        match <[Value; 1]>::try_from(crate::parse_yaml_documents(text)?) {
            Ok([raw]) => Ok(Skaffold { raw }),
            Err(docs) => Err(Error::Invalid(format!(
                "skaffold.yaml: expected one document, found {}",
                docs.len()
            ))),
        }
    }

    pub fn profile_names(&self) -> Vec<&str> {
        list(&self.raw["profiles"])
            .map(|p| text(&p["name"]))
            .collect()
    }

    /// The config with a profile applied (None = no profile).
    pub fn effective(&self, profile: Option<&str>) -> Result<Value, Error> {
        let mut config = self.raw.clone();
        let Some(wanted) = profile else {
            return Ok(config);
        };
        let profile = list(&self.raw["profiles"]).find(|p| p["name"] == wanted);
        let profile = profile
            .ok_or_else(|| Error::Invalid(format!("skaffold.yaml has no profile {wanted:?}")))?;
        for (key, value) in profile.as_object().into_iter().flatten() {
            let special = ["name", "activation", "patches", "requiresAllActivations"];
            if !special.contains(&key.as_str()) {
                merge(&mut config[key.as_str()], value);
            }
        }
        for patch in list(&profile["patches"]) {
            apply_patch(&mut config, patch)?;
        }
        if let Some(o) = config.as_object_mut() {
            o.remove("profiles");
        }
        Ok(config)
    }

    /// `build.artifacts` with a profile applied.
    pub fn artifacts(&self, profile: Option<&str>) -> Result<Vec<Artifact>, Error> {
        let config = self.effective(profile)?;
        let artifact = |a: &Value| {
            let image = a["image"].as_str();
            let image =
                image.ok_or_else(|| Error::Invalid(format!("artifact without image: {a}")))?;
            let args = a["docker"]["buildArgs"].as_object().into_iter().flatten();
            let arg = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            Ok(Artifact {
                image: image.to_owned(),
                context: a["context"].as_str().unwrap_or(".").to_owned(),
                dockerfile: a["docker"]["dockerfile"]
                    .as_str()
                    .unwrap_or("Dockerfile")
                    .to_owned(),
                build_args: args.map(|(k, v)| (k.clone(), arg(v))).collect(),
            })
        };
        list(&config["build"]["artifacts"]).map(artifact).collect()
    }

    /// `manifests.kustomize.paths` with a profile applied.
    pub fn kustomize_paths(&self, profile: Option<&str>) -> Result<Vec<String>, Error> {
        let config = self.effective(profile)?;
        let paths = list(&config["manifests"]["kustomize"]["paths"]).filter_map(Value::as_str);
        Ok(paths
            .map(|s| s.trim_start_matches("./").trim_end_matches('/').to_owned())
            .collect())
    }
}

/// Recursive merge: mappings merge, everything else replaces.
fn merge(target: &mut Value, overlay: &Value) {
    match (target.as_object_mut(), overlay.as_object()) {
        (Some(t), Some(o)) => {
            for (k, v) in o {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        _ => *target = overlay.clone(),
    }
}

/// Applies one JSON patch operation (add, remove, replace).
pub fn apply_patch(config: &mut Value, patch: &Value) -> Result<(), Error> {
    let (op, path) = (text(&patch["op"]), text(&patch["path"]));
    let invalid = |what: &str| Error::Invalid(format!("patch {op} {path:?}: {what}"));
    let (parent_path, last) = path
        .rsplit_once('/')
        .ok_or_else(|| invalid("not a JSON pointer"))?;
    let last = last.replace("~1", "/").replace("~0", "~");
    let parent = config
        .pointer_mut(parent_path)
        .ok_or_else(|| invalid("no parent"))?;
    let value = patch["value"].clone();
    let missing = || invalid("no such element");
    match (op, parent) {
        ("remove", Value::Object(map)) => map.remove(&last).map(drop).ok_or_else(missing),
        ("replace", Value::Object(map)) => {
            *map.get_mut(&last).ok_or_else(missing)? = value;
            Ok(())
        }
        ("add", Value::Object(map)) => {
            map.insert(last, value);
            Ok(())
        }
        (_, Value::Array(items)) if ["add", "remove", "replace"].contains(&op) => {
            let len = items.len();
            let i = match last.as_str() {
                "-" if op == "add" => len,
                _ => last.parse().map_err(|_| missing())?,
            };
            match op {
                "add" if i <= len => items.insert(i, value),
                "remove" if i < len => drop(items.remove(i)),
                "replace" if i < len => items[i] = value,
                _ => return Err(missing()),
            }
            Ok(())
        }
        _ => Err(invalid("unsupported (supported: add, remove, replace)")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    const CONFIG: &str = r#"
apiVersion: skaffold/v4beta13
kind: Config
build:
  local: {push: false}
  artifacts:
    - image: switchyard/event-bus
      docker: {buildArgs: {SERVICE: event-bus}}
    - image: switchyard/posts
      context: .
      docker: {dockerfile: Dockerfile, buildArgs: {SERVICE: posts}}
manifests:
  kustomize: {paths: [./infra/k8s/overlays/dev/]}
profiles:
  - name: dev
  - name: prod
    build: {local: {concurrency: 1}}
    manifests:
      kustomize: {paths: [infra/k8s/overlays/prod]}
    patches:
      - {op: remove, path: /build/artifacts/0}
      - {op: add, path: /build/artifacts/-, value: {image: switchyard/extra}}
      - {op: replace, path: /build/local/push, value: true}
"#;

    #[test]
    fn reads_artifacts_and_paths_and_applies_profiles() {
        let s = Skaffold::parse(CONFIG).unwrap();
        assert_eq!(s.profile_names(), ["dev", "prod"]);
        let a = s.artifacts(None).unwrap();
        assert_eq!(
            (a.len(), a[0].context.as_str(), a[0].dockerfile.as_str()),
            (2, ".", "Dockerfile")
        );
        assert_eq!(a[0].build_args["SERVICE"], "event-bus");
        for (profile, path) in [(None, "dev"), (Some("dev"), "dev"), (Some("prod"), "prod")] {
            let want = format!("infra/k8s/overlays/{path}");
            assert_eq!(s.kustomize_paths(profile).unwrap(), [want]);
        }
        let images: Vec<String> = s
            .artifacts(Some("prod"))
            .unwrap()
            .into_iter()
            .map(|a| a.image)
            .collect();
        assert_eq!(images, ["switchyard/posts", "switchyard/extra"]);
        let prod = s.effective(Some("prod")).unwrap();
        assert_eq!(
            prod["build"]["local"],
            json!({"push": true, "concurrency": 1})
        );
        assert!(s.effective(Some("staging")).is_err());
        assert!(Skaffold::parse("a: 1\n---\nb: 2\n").is_err());
    }

    #[test]
    fn rejects_bad_patches() {
        let mut v = json!({"a": [1]});
        for (op, path) in [
            ("remove", "/a/3"),
            ("move", "/a/0"),
            ("remove", "/b/0"),
            ("remove", "a"),
        ] {
            assert!(
                apply_patch(&mut v, &json!({"op": op, "path": path})).is_err(),
                "{op} {path}"
            );
        }
        apply_patch(&mut v, &json!({"op": "add", "path": "/a/0", "value": 0})).unwrap();
        assert_eq!(v, json!({"a": [0, 1]}));
    }
}
