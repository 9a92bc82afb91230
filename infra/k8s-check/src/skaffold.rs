//! The parts of `skaffold.yaml` the checks need, with a profile applied as skaffold does:
//! its mapping fields merged into the config recursively (lists and scalars replace), then
//! its `patches` (RFC 6902 JSON Patch).

use serde_json::Value;

use crate::Error;
use crate::manifest::{list, text};

/// A parsed (single-document) `skaffold.yaml`.
#[derive(Debug, Clone)]
pub struct Skaffold {
    pub raw: Value,
}

fn invalid(what: String) -> Error {
    Error::Invalid(format!("skaffold.yaml: {what}"))
}

fn bad_patch(e: impl std::fmt::Display) -> Error {
    invalid(format!("patches: {e}"))
}

impl Skaffold {
    pub fn parse(text: &str) -> Result<Self, Error> {
        match <[Value; 1]>::try_from(crate::parse_yaml_documents(text)?) {
            Ok([raw]) => Ok(Skaffold { raw }),
            Err(docs) => Err(invalid(format!("{} documents, not one", docs.len()))),
        }
    }

    pub fn profile_names(&self) -> Vec<&str> {
        let profiles = list(&self.raw["profiles"]);
        profiles.map(|p| text(&p["name"])).collect()
    }

    /// The config with a profile applied (None = no profile).
    pub fn effective(&self, profile: Option<&str>) -> Result<Value, Error> {
        let mut config = self.raw.clone();
        let Some(wanted) = profile else {
            return Ok(config);
        };
        let profile = list(&self.raw["profiles"]).find(|p| p["name"] == wanted);
        let profile = profile.ok_or_else(|| invalid(format!("no profile {wanted:?}")))?;
        let special = ["name", "activation", "patches", "requiresAllActivations"];
        for (key, value) in profile.as_object().into_iter().flatten() {
            if !special.contains(&key.as_str()) {
                merge(&mut config[key.as_str()], value);
            }
        }
        let patches = Some(&profile["patches"]).filter(|p| !p.is_null()).cloned();
        let patches = patches.unwrap_or_else(|| Value::Array(Vec::new()));
        let patches: json_patch::Patch = serde_json::from_value(patches).map_err(bad_patch)?;
        json_patch::patch(&mut config, &patches).map_err(bad_patch)?;
        config.as_object_mut().map(|o| o.remove("profiles"));
        Ok(config)
    }

    /// `build.artifacts` with a profile applied.
    pub fn artifacts(&self, profile: Option<&str>) -> Result<Vec<Value>, Error> {
        let config = self.effective(profile)?;
        Ok(list(&config["build"]["artifacts"]).cloned().collect())
    }

    /// `manifests.kustomize.paths` with a profile applied.
    pub fn kustomize_paths(&self, profile: Option<&str>) -> Result<Vec<String>, Error> {
        let config = self.effective(profile)?;
        let paths = list(&config["manifests"]["kustomize"]["paths"]).map(text);
        let path = |s: &str| s.trim_start_matches("./").trim_end_matches('/').to_owned();
        Ok(paths.map(path).collect())
    }
}

/// Recursive merge: mappings merge, everything else replaces.
fn merge(target: &mut Value, overlay: &Value) {
    match (target.as_object_mut(), overlay.as_object()) {
        (Some(t), Some(o)) => {
            for (k, v) in o {
                merge(t.entry(k).or_insert(Value::Null), v);
            }
        }
        _ => *target = overlay.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    const CONFIG: &str = r#"
build:
  local: {push: false}
  artifacts: [{image: switchyard/event-bus}, {image: switchyard/posts}]
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
    fn applies_profiles_and_rejects_bad_patches() {
        let s = Skaffold::parse(CONFIG).unwrap();
        assert_eq!(s.profile_names(), ["dev", "prod"]);
        for (profile, path) in [(None, "dev"), (Some("dev"), "dev"), (Some("prod"), "prod")] {
            let want = format!("infra/k8s/overlays/{path}");
            assert_eq!(s.kustomize_paths(profile).unwrap(), [want]);
        }
        let images = json!([{"image": "switchyard/posts"}, {"image": "switchyard/extra"}]);
        assert_eq!(json!(s.artifacts(Some("prod")).unwrap()), images);
        let prod = s.effective(Some("prod")).unwrap();
        let local = json!({"push": true, "concurrency": 1});
        assert_eq!(prod["build"]["local"], local);
        assert!(s.effective(Some("staging")).is_err());
        assert!(Skaffold::parse("a: 1\n---\nb: 2\n").is_err());
        for (from, to) in [("artifacts/0", "artifacts/9"), ("op: remove", "op: shove")] {
            let bad = Skaffold::parse(&CONFIG.replace(from, to)).unwrap();
            assert!(bad.effective(Some("prod")).is_err(), "{to}");
        }
    }
}
