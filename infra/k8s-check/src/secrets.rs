//! Secrets are never committed: no YAML file under an app's `base/` or `overlays/prod/` (or
//! a shared component) defines a Secret or has a `secretGenerator` ([`committed_secrets`]);
//! only a dev overlay generates (throwaway) Secrets. Prod's Secrets are created with the
//! `kubectl create secret generic ... -n <app>` commands of `infra/README.md`:
//! [`readme_secrets`] reads them back, so that the checks stand in the Secrets the README
//! makes for the cluster's ([`placeholder_secret`]) and find a Secret or key missing from
//! the README ([`check_documented`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::manifest::{self, Manifests, list, text};
use crate::render::reading;
use crate::{Error, parse_yaml_documents};

/// What stands in for a `$(...)` command substitution of the README (`$(openssl rand -hex
/// 24)`): 48 hexadecimal digits.
pub const SUBSTITUTION: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

/// Every `*.yaml` file under `dir`, recursively.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    for entry in fs::read_dir(dir).map_err(reading(dir))? {
        let path = entry.map_err(reading(dir))?.path();
        if path.is_dir() {
            yaml_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// Secret objects and `secretGenerator`s committed under `dir`, as messages.
pub fn committed_secrets(dir: &Path) -> Result<Vec<String>, Error> {
    let mut files = Vec::new();
    yaml_files(dir, &mut files)?;
    files.sort();
    let mut problems = Vec::new();
    for file in files {
        let yaml = fs::read_to_string(&file).map_err(reading(&file))?;
        for doc in parse_yaml_documents(&yaml)? {
            let f = file.display();
            if manifest::kind(&doc) == "Secret" {
                let what = manifest::id(&doc);
                problems.push(format!(
                    "{f} defines {what}: Secrets are created with kubectl, never committed"
                ));
            }
            if !doc["secretGenerator"].is_null() {
                problems.push(format!(
                    "{f} has a secretGenerator: only a dev overlay may generate Secrets"
                ));
            }
        }
    }
    Ok(problems)
}

/// The names of the Secrets a kustomization's `secretGenerator` makes.
pub fn generated_secrets(kustomization: &str) -> Result<Vec<String>, Error> {
    let docs = parse_yaml_documents(kustomization)?;
    let generators = docs.iter().flat_map(|d| list(&d["secretGenerator"]));
    Ok(generators
        .filter_map(|g| g["name"].as_str().map(str::to_owned))
        .collect())
}

/// One reference to a Secret: the Secret, the key (`None`: the whole Secret, for `envFrom`
/// and volumes), and where, for messages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretRef {
    pub name: String,
    pub key: Option<String>,
    pub at: String,
}

/// Every reference to a Secret in the workloads: `env` `secretKeyRef`s, `envFrom`
/// `secretRef`s and `secret` volumes.
pub fn references(m: &Manifests) -> Vec<SecretRef> {
    let mut out = Vec::new();
    let mut add = |r: &Value, name: &Value, at: String| {
        if let Some(name) = name.as_str() {
            let key = r["key"].as_str().map(str::to_owned);
            out.push(SecretRef {
                name: name.to_owned(),
                key,
                at,
            });
        }
    };
    for w in m.workloads() {
        for c in w.containers() {
            let at = format!("{} container {}", w.id(), c.name());
            for var in list(&c.spec["env"]) {
                let r = &var["valueFrom"]["secretKeyRef"];
                add(r, &r["name"], at.clone());
            }
            for from in list(&c.spec["envFrom"]) {
                add(&Value::Null, &from["secretRef"]["name"], at.clone());
            }
        }
        for v in list(&w.pod_spec["volumes"]) {
            let at = format!("{} volume {}", w.id(), text(&v["name"]));
            add(&Value::Null, &v["secret"]["secretName"], at);
        }
    }
    out.sort();
    out
}

/// The Secrets of one namespace the README creates: Secret -> key -> value.
pub type Created = BTreeMap<String, BTreeMap<String, String>>;

/// Reads every `kubectl [-n NS] create secret generic NAME [-n NS] --from-literal=K=V ...`
/// of a Markdown text (commands may continue over lines ending in `\`), by namespace (`""`
/// for a command without one), with every `$(...)` replaced by [`SUBSTITUTION`].
pub fn readme_secrets(markdown: &str) -> BTreeMap<String, Created> {
    let mut out: BTreeMap<String, Created> = BTreeMap::new();
    let joined: String = markdown
        .lines()
        .map(|l| match l.trim_end().strip_suffix('\\') {
            Some(head) => format!("{head} "),
            None => format!("{l}\n"),
        })
        .collect();
    for line in joined.lines() {
        let words = shell_words(line);
        let Some(start) = words.iter().position(|w| w == "kubectl") else {
            continue;
        };
        let words = &words[start..];
        let Some(generic) = words
            .windows(3)
            .position(|w| w == ["create", "secret", "generic"])
        else {
            continue;
        };
        let (mut namespace, mut name, mut literals) = (String::new(), None, BTreeMap::new());
        let mut i = 1;
        while i < words.len() {
            let w = words[i].as_str();
            if w == "-n" || w == "--namespace" {
                namespace = words.get(i + 1).cloned().unwrap_or_default();
                i += 1;
            } else if let Some(ns) = w.strip_prefix("--namespace=") {
                namespace = ns.to_owned();
            } else if let Some(literal) = w.strip_prefix("--from-literal=") {
                if let Some((k, v)) = literal.split_once('=') {
                    literals.insert(k.to_owned(), v.to_owned());
                }
            } else if i == generic + 3 {
                name = Some(w.to_owned());
            }
            i += 1;
        }
        if let Some(name) = name {
            out.entry(namespace)
                .or_default()
                .entry(name)
                .or_default()
                .extend(literals);
        }
    }
    out
}

/// Splits a shell command line into words: quotes removed, `$(...)` replaced by
/// [`SUBSTITUTION`], `#` comments dropped. Enough for the README's commands, not a shell.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '#') if word.is_none() => break,
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_default();
            }
            (Some(q), c) if c == q => quote = None,
            (q, '$') if q != Some('\'') && chars.peek() == Some(&'(') => {
                let mut depth = 0;
                for d in chars.by_ref() {
                    depth += i32::from(d == '(') - i32::from(d == ')');
                    if depth == 0 {
                        break;
                    }
                }
                word.get_or_insert_default().push_str(SUBSTITUTION);
            }
            (_, c) => word.get_or_insert_default().push(c),
        }
    }
    words.extend(word);
    words
}

/// A Secret object with `data` as its `stringData`, standing in for one the cluster has.
pub fn placeholder_secret(name: &str, data: &BTreeMap<String, String>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "stringData": data,
    })
}

/// Checks the references of a rendered overlay against the Secrets the README creates in
/// its namespace: every Secret the overlay references and does not define is created, with
/// every key referenced (optional ones too: the README says how to make them), and the
/// README creates nothing the overlay does not use.
pub fn check_documented(m: &Manifests, readme: &Created, what: &str) -> Vec<String> {
    let mut problems = BTreeSet::new();
    let mut used = BTreeSet::new();
    for r in references(m)
        .into_iter()
        .filter(|r| m.get("Secret", &r.name).is_none())
    {
        let (at, name) = (&r.at, &r.name);
        match (readme.get(name), &r.key) {
            (None, _) => problems.insert(format!(
                "{at}: Secret {name} is neither in the manifests nor created in infra/README.md ({what})"
            )),
            (Some(keys), Some(key)) if !keys.contains_key(key) => problems.insert(format!(
                "{at}: key {key} of Secret {name} is not created in infra/README.md ({what})"
            )),
            _ => false,
        };
        used.insert(r.name);
    }
    for name in readme.keys().filter(|n| !used.contains(*n)) {
        problems.insert(format!(
            "infra/README.md creates Secret {name} ({what}), which nothing uses"
        ));
    }
    problems.into_iter().collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_readme_commands_and_generators() {
        let text = r#"
```sh
kubectl create namespace ticketing
kubectl -n ticketing create secret generic jwt-secret --from-literal=JWT_KEY="$(openssl rand -hex 32)"
kubectl create secret generic switchyard-database -n ticketing \
  --from-literal=auth="postgres://auth:$(openssl rand -hex 24)@postgres:5432/auth" \
  --from-literal='odd=a b'   # a comment
kubectl create secret generic plain --from-literal=A=1
```
"#;
        let s = readme_secrets(text);
        let t = &s["ticketing"];
        assert_eq!(t["jwt-secret"]["JWT_KEY"], SUBSTITUTION);
        let url = format!("postgres://auth:{SUBSTITUTION}@postgres:5432/auth");
        assert_eq!(t["switchyard-database"]["auth"], url);
        assert_eq!(t["switchyard-database"]["odd"], "a b");
        assert_eq!((s.len(), s[""]["plain"]["A"].as_str()), (2, "1"));
        let k = "secretGenerator:\n  - name: jwt-secret\n    literals: [A=b]\n";
        assert_eq!(generated_secrets(k).unwrap(), ["jwt-secret"]);
        assert!(
            generated_secrets("resources: [a.yaml]\n")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn finds_references_and_undocumented_ones() {
        let m = Manifests::parse(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: a}
spec:
  template:
    spec:
      containers:
        - name: a
          env:
            - {name: K, valueFrom: {secretKeyRef: {name: s1, key: K}}}
            - {name: O, valueFrom: {secretKeyRef: {name: s2, key: O, optional: true}}}
          envFrom: [{secretRef: {name: s3}}]
      volumes: [{name: v, secret: {secretName: s4}}]
"#,
        )
        .unwrap();
        assert_eq!(references(&m).len(), 4);
        let keys = |k: &[&str]| k.iter().map(|k| (k.to_string(), "v".to_owned())).collect();
        let mut readme = Created::from([
            ("s1".into(), keys(&["K"])),
            ("s2".into(), keys(&["O"])),
            ("s3".into(), keys(&[])),
            ("s4".into(), keys(&[])),
        ]);
        assert_eq!(check_documented(&m, &readme, "t"), Vec::<String>::new());
        readme.insert("s2".into(), keys(&[]));
        readme.insert("unused".into(), keys(&[]));
        readme.remove("s4");
        let problems = check_documented(&m, &readme, "t");
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}
