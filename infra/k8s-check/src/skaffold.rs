//! The parts of `skaffold.yaml` the checks need: artifacts and Kustomize
//! paths, with a profile applied.
//!
//! Profiles are applied as skaffold does for the fields used here: a profile's
//! mapping fields are merged into the config recursively (lists and scalars
//! replace), then its JSON `patches` (add, remove, replace) are applied.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::Error;

/// One `build.artifacts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// `image`.
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
    config: Value,
}

impl Skaffold {
    /// Parses the (single-document) config.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let mut docs = crate::parse_yaml_documents(text)?;
        if docs.len() != 1 {
            return Err(Error::Invalid(format!(
                "skaffold.yaml: expected one document, found {}",
                docs.len()
            )));
        }
        Ok(Skaffold {
            config: docs.remove(0),
        })
    }

    /// The raw config without any profile.
    pub fn raw(&self) -> &Value {
        &self.config
    }

    /// `apiVersion`.
    pub fn api_version(&self) -> &str {
        self.config["apiVersion"].as_str().unwrap_or("")
    }

    /// Profile names.
    pub fn profile_names(&self) -> Vec<&str> {
        self.config["profiles"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str())
            .collect()
    }

    /// The config with a profile applied (None = no profile).
    pub fn effective(&self, profile: Option<&str>) -> Result<Value, Error> {
        let mut config = self.config.clone();
        let Some(profile_name) = profile else {
            return Ok(config);
        };
        let profile = self.config["profiles"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"].as_str() == Some(profile_name))
            .ok_or_else(|| {
                Error::Invalid(format!("skaffold.yaml has no profile {profile_name:?}"))
            })?
            .clone();
        if let Some(fields) = profile.as_object() {
            for (key, value) in fields {
                if !matches!(
                    key.as_str(),
                    "name" | "activation" | "patches" | "requiresAllActivations"
                ) {
                    merge(&mut config[key.as_str()], value);
                }
            }
        }
        for patch in profile["patches"].as_array().into_iter().flatten() {
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
        config["build"]["artifacts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let image = a["image"]
                    .as_str()
                    .ok_or_else(|| Error::Invalid(format!("artifact without image: {a}")))?;
                let build_args = a["docker"]["buildArgs"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .map(|(k, v)| {
                                (
                                    k.clone(),
                                    v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(Artifact {
                    image: image.to_owned(),
                    context: a["context"].as_str().unwrap_or(".").to_owned(),
                    dockerfile: a["docker"]["dockerfile"]
                        .as_str()
                        .unwrap_or("Dockerfile")
                        .to_owned(),
                    build_args,
                })
            })
            .collect()
    }

    /// `manifests.kustomize.paths` with a profile applied.
    pub fn kustomize_paths(&self, profile: Option<&str>) -> Result<Vec<String>, Error> {
        let config = self.effective(profile)?;
        Ok(config["manifests"]["kustomize"]["paths"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| {
                p.as_str()
                    .map(|s| s.trim_start_matches("./").trim_end_matches('/').to_owned())
            })
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

fn pointer_tokens(path: &str) -> Result<Vec<String>, Error> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| Error::Invalid(format!("patch path {path:?} does not start with /")))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

/// Applies one JSON patch operation (add, remove, replace).
pub fn apply_patch(config: &mut Value, patch: &Value) -> Result<(), Error> {
    let op = patch["op"].as_str().unwrap_or("");
    let path = patch["path"].as_str().unwrap_or("");
    let mut tokens = pointer_tokens(path)?;
    let last = tokens
        .pop()
        .ok_or_else(|| Error::Invalid(format!("patch path {path:?} is empty")))?;
    let parent_path: String = tokens
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect();
    let parent = config
        .pointer_mut(&parent_path)
        .ok_or_else(|| Error::Invalid(format!("patch path {path:?}: parent does not exist")))?;
    let missing = || Error::Invalid(format!("patch {op} {path:?}: no such element"));
    match (op, parent) {
        ("remove", Value::Array(items)) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            if i >= items.len() {
                return Err(missing());
            }
            items.remove(i);
        }
        ("remove", Value::Object(map)) => {
            map.remove(&last).ok_or_else(missing)?;
        }
        ("replace", Value::Array(items)) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            let slot = items.get_mut(i).ok_or_else(missing)?;
            *slot = patch["value"].clone();
        }
        ("replace", Value::Object(map)) => {
            let slot = map.get_mut(&last).ok_or_else(missing)?;
            *slot = patch["value"].clone();
        }
        ("add", Value::Array(items)) => {
            let i = if last == "-" {
                items.len()
            } else {
                last.parse().map_err(|_| missing())?
            };
            if i > items.len() {
                return Err(missing());
            }
            items.insert(i, patch["value"].clone());
        }
        ("add", Value::Object(map)) => {
            map.insert(last, patch["value"].clone());
        }
        _ => {
            return Err(Error::Invalid(format!(
                "unsupported patch {op:?} at {path:?} (supported: add, remove, replace)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
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
    fn reads_artifacts_and_paths() {
        let s = Skaffold::parse(CONFIG).unwrap();
        assert_eq!(s.api_version(), "skaffold/v4beta13");
        assert_eq!(s.profile_names(), ["dev", "prod"]);
        let a = s.artifacts(None).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].context, ".");
        assert_eq!(a[0].dockerfile, "Dockerfile");
        assert_eq!(a[0].build_args["SERVICE"], "event-bus");
        assert_eq!(s.kustomize_paths(None).unwrap(), ["infra/k8s/overlays/dev"]);
        assert_eq!(
            s.kustomize_paths(Some("dev")).unwrap(),
            ["infra/k8s/overlays/dev"]
        );
    }

    #[test]
    fn applies_profiles_and_patches() {
        let s = Skaffold::parse(CONFIG).unwrap();
        let images: Vec<String> = s
            .artifacts(Some("prod"))
            .unwrap()
            .into_iter()
            .map(|a| a.image)
            .collect();
        assert_eq!(images, ["switchyard/posts", "switchyard/extra"]);
        assert_eq!(
            s.kustomize_paths(Some("prod")).unwrap(),
            ["infra/k8s/overlays/prod"]
        );
        let prod = s.effective(Some("prod")).unwrap();
        assert_eq!(prod["build"]["local"]["push"], true);
        assert_eq!(prod["build"]["local"]["concurrency"], 1);
        assert!(s.effective(Some("staging")).is_err());
    }

    #[test]
    fn rejects_bad_patches() {
        let mut v = serde_json::json!({"a": [1]});
        assert!(apply_patch(&mut v, &serde_json::json!({"op": "remove", "path": "/a/3"})).is_err());
        assert!(apply_patch(&mut v, &serde_json::json!({"op": "move", "path": "/a/0"})).is_err());
        assert!(apply_patch(&mut v, &serde_json::json!({"op": "remove", "path": "/b/0"})).is_err());
        assert!(apply_patch(&mut v, &serde_json::json!({"op": "remove", "path": "a"})).is_err());
        apply_patch(
            &mut v,
            &serde_json::json!({"op": "add", "path": "/a/0", "value": 0}),
        )
        .unwrap();
        assert_eq!(v, serde_json::json!({"a": [0, 1]}));
    }
}
