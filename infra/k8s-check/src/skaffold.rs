//! The parts of `skaffold.yaml` the checks need, with a profile applied as skaffold does:
//! its mapping fields merged into the config recursively (lists and scalars replace), then
//! its JSON `patches` (add, remove, replace).

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
        for patch in list(&profile["patches"]) {
            apply_patch(&mut config, patch)?;
        }
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

/// Applies one JSON patch operation (add, remove, replace).
pub fn apply_patch(config: &mut Value, patch: &Value) -> Result<(), Error> {
    let (op, path) = (text(&patch["op"]), text(&patch["path"]));
    let fail = |what: &str| invalid(format!("patch {op} {path:?}: {what}"));
    let split = path.rsplit_once('/');
    let (parent, last) = split.ok_or_else(|| fail("no JSON pointer"))?;
    let last = last.replace("~1", "/").replace("~0", "~");
    let parent = config.pointer_mut(parent);
    let parent = parent.ok_or_else(|| fail("no parent"))?;
    let (value, missing) = (patch["value"].clone(), || fail("no such element"));
    match (op, parent) {
        ("remove", Value::Object(map)) => map.remove(&last).map(drop).ok_or_else(missing),
        ("replace", Value::Object(map)) => {
            map.get_mut(&last).map(|v| *v = value).ok_or_else(missing)
        }
        ("add", Value::Object(map)) => {
            map.insert(last, value);
            Ok(())
        }
        (_, Value::Array(items)) => {
            let len = items.len();
            let index = last.parse().ok().or((last == "-").then_some(len));
            match (op, index) {
                ("add", Some(i)) if i <= len => items.insert(i, value),
                ("remove", Some(i)) if i < len => drop(items.remove(i)),
                ("replace", Some(i)) if i < len => items[i] = value,
                _ => return Err(missing()),
            }
            Ok(())
        }
        _ => Err(fail("unsupported (supported: add, remove, replace)")),
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
        let mut v = json!({"a": [1]});
        for (op, path) in [
            ("remove", "/a/3"),
            ("move", "/a/0"),
            ("remove", "/b/0"),
            ("remove", "a"),
        ] {
            let patch = json!({"op": op, "path": path});
            assert!(apply_patch(&mut v, &patch).is_err(), "{op} {path}");
        }
        apply_patch(&mut v, &json!({"op": "add", "path": "/a/0", "value": 0})).unwrap();
        assert_eq!(v, json!({"a": [0, 1]}));
        apply_patch(&mut v, &json!({"op": "remove", "path": "/a"})).unwrap();
        assert_eq!(v, json!({}));
    }
}
