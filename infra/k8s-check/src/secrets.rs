//! Secrets are never committed: the checks behind that rule, and the Secrets that
//! `infra/README.md` tells the operator to create.
//!
//! - No YAML file under an app's `base/` or `overlays/prod/` (or a shared component)
//!   defines a Secret, and no kustomization there has a `secretGenerator`
//!   ([`committed_secrets`]); only a dev overlay may generate (throwaway) Secrets.
//! - Prod references Secrets that are created with `kubectl create secret generic`; the
//!   README shows those commands, with `-n <app>` (each app in its own namespace).
//!   [`readme_secrets`] reads them back, so that the checks can stand in the Secrets the
//!   README makes for the ones the cluster will have ([`placeholder_secret`]) and find a
//!   missing Secret or key in the README the way they find one in the manifests.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use serde_json::{Value, json};

use crate::manifest::{self, Manifests};
use crate::{Error, parse_yaml_documents};

/// What stands in for a `$(...)` command substitution of the README (`$(openssl rand -hex
/// 24)`): 48 hexadecimal digits.
pub const SUBSTITUTION: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

/// Every `*.yaml` file under `dir`, recursively, sorted.
fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<(), Error> {
    let entries =
        fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    for entry in entries {
        let path = entry
            .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?
            .path();
        if path.is_dir() {
            yaml_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out.sort();
    Ok(())
}

/// Secrets committed under `dir`: Secret objects in its YAML files and `secretGenerator`s
/// in its kustomizations, as messages.
pub fn committed_secrets(dir: &Path) -> Result<Vec<String>, Error> {
    let mut files = Vec::new();
    yaml_files(dir, &mut files)?;
    let mut problems = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file)
            .map_err(|e| Error::io(format!("reading {}", file.display()), e))?;
        for doc in parse_yaml_documents(&text)? {
            if manifest::kind(&doc) == "Secret" {
                problems.push(format!(
                    "{} defines {}: Secrets are created with kubectl, never committed",
                    file.display(),
                    manifest::id(&doc)
                ));
            }
            if !doc["secretGenerator"].is_null() {
                problems.push(format!(
                    "{} has a secretGenerator: only a dev overlay may generate Secrets",
                    file.display()
                ));
            }
        }
    }
    Ok(problems)
}

/// The names of the Secrets a kustomization's `secretGenerator` makes.
pub fn generated_secrets(kustomization: &str) -> Result<Vec<String>, Error> {
    let docs = parse_yaml_documents(kustomization)?;
    Ok(docs
        .iter()
        .flat_map(|d| d["secretGenerator"].as_array().cloned().unwrap_or_default())
        .filter_map(|g| g["name"].as_str().map(str::to_owned))
        .collect())
}

/// One reference to a Secret.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretRef {
    /// The Secret.
    pub name: String,
    /// The key, or `None` for the whole Secret (`envFrom`, a volume).
    pub key: Option<String>,
    /// Whether the pod starts without it.
    pub optional: bool,
    /// Where, for messages.
    pub at: String,
}

/// Every reference to a Secret in the workloads: `env` `secretKeyRef`s, `envFrom`
/// `secretRef`s and `secret` volumes.
pub fn references(m: &Manifests) -> Vec<SecretRef> {
    let mut out = Vec::new();
    for w in m.workloads() {
        for c in w.containers() {
            let at = format!("{} container {}", w.id(), c.name());
            for var in c.spec["env"].as_array().into_iter().flatten() {
                let r = &var["valueFrom"]["secretKeyRef"];
                if let Some(name) = r["name"].as_str() {
                    out.push(SecretRef {
                        name: name.to_owned(),
                        key: r["key"].as_str().map(str::to_owned),
                        optional: r["optional"].as_bool().unwrap_or(false),
                        at: at.clone(),
                    });
                }
            }
            for from in c.spec["envFrom"].as_array().into_iter().flatten() {
                let r = &from["secretRef"];
                if let Some(name) = r["name"].as_str() {
                    out.push(SecretRef {
                        name: name.to_owned(),
                        key: None,
                        optional: r["optional"].as_bool().unwrap_or(false),
                        at: at.clone(),
                    });
                }
            }
        }
        for v in w.pod_spec["volumes"].as_array().into_iter().flatten() {
            if let Some(name) = v["secret"]["secretName"].as_str() {
                out.push(SecretRef {
                    name: name.to_owned(),
                    key: None,
                    optional: v["secret"]["optional"].as_bool().unwrap_or(false),
                    at: format!("{} volume {}", w.id(), v["name"].as_str().unwrap_or("")),
                });
            }
        }
    }
    out.sort();
    out
}

/// The Secrets the README creates: namespace (`-n`) -> Secret -> key -> value, with every
/// `$(...)` replaced by [`SUBSTITUTION`].
pub type ReadmeSecrets = BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>>;

/// Reads every `kubectl [-n NS] create secret generic NAME [-n NS] --from-literal=K=V ...`
/// of a Markdown text (commands may continue over lines ending in `\`). A command without
/// a namespace counts for the namespace `""`.
pub fn readme_secrets(text: &str) -> ReadmeSecrets {
    let mut out = ReadmeSecrets::new();
    for line in logical_lines(text) {
        let words = shell_words(&line);
        let Some(start) = words.iter().position(|w| w == "kubectl") else {
            continue;
        };
        let words = &words[start..];
        let Some(generic) = words
            .windows(3)
            .position(|w| w[0] == "create" && w[1] == "secret" && w[2] == "generic")
        else {
            continue;
        };
        let mut namespace = String::new();
        let mut name = None;
        let mut literals = BTreeMap::new();
        let mut i = 1;
        while i < words.len() {
            let w = &words[i];
            if w == "-n" || w == "--namespace" {
                namespace = words.get(i + 1).cloned().unwrap_or_default();
                i += 2;
                continue;
            }
            if let Some(ns) = w.strip_prefix("--namespace=") {
                namespace = ns.to_owned();
            } else if let Some(literal) = w.strip_prefix("--from-literal=") {
                if let Some((k, v)) = literal.split_once('=') {
                    literals.insert(k.to_owned(), v.to_owned());
                }
            } else if i == generic + 3 {
                name = Some(w.clone());
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

/// The lines of `text` with `\`-newline continuations joined.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim_end();
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Splits a shell command line into words: quotes removed, `$(...)` replaced by
/// [`SUBSTITUTION`], `#` comments dropped. Enough for the README's commands, not a shell.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '#') if !in_word => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (q, '$') if q != Some('\'') && chars.peek() == Some(&'(') => {
                let mut depth = 0;
                for d in chars.by_ref() {
                    match d {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                word.push_str(SUBSTITUTION);
                in_word = true;
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
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
/// its namespace: every Secret the overlay references and does not define is created in
/// the README, with every key referenced (optional ones too: the README says how to make
/// them), and the README creates nothing the overlay does not use.
pub fn check_documented(
    m: &Manifests,
    readme: &BTreeMap<String, BTreeMap<String, String>>,
    what: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for r in references(m) {
        if m.get("Secret", &r.name).is_some() {
            continue;
        }
        used.insert(r.name.clone());
        match (readme.get(&r.name), &r.key) {
            (None, _) => problems.push(format!(
                "{}: Secret {} is neither in the manifests nor created in infra/README.md ({what})",
                r.at, r.name
            )),
            (Some(keys), Some(key)) if !keys.contains_key(key) => problems.push(format!(
                "{}: key {key} of Secret {} is not created in infra/README.md ({what})",
                r.at, r.name
            )),
            _ => {}
        }
    }
    for name in readme.keys() {
        if !used.contains(name) {
            problems.push(format!(
                "infra/README.md creates Secret {name} ({what}), which nothing uses"
            ));
        }
    }
    problems.sort();
    problems.dedup();
    problems
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_readme_commands() {
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
        assert_eq!(
            t["switchyard-database"]["auth"],
            format!("postgres://auth:{SUBSTITUTION}@postgres:5432/auth")
        );
        assert_eq!(t["switchyard-database"]["odd"], "a b");
        assert_eq!(s[""]["plain"]["A"], "1");
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn finds_references_and_undocumented_ones() {
        let m = Manifests::parse(
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: a}
spec:
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: a}}
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
        let mut readme: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for s in ["s1", "s2", "s3", "s4"] {
            readme.insert(s.into(), BTreeMap::new());
        }
        readme.get_mut("s1").unwrap().insert("K".into(), "v".into());
        readme.get_mut("s2").unwrap().insert("O".into(), "v".into());
        assert_eq!(check_documented(&m, &readme, "t"), Vec::<String>::new());
        readme.get_mut("s2").unwrap().clear();
        readme.insert("unused".into(), BTreeMap::new());
        readme.remove("s4");
        let problems = check_documented(&m, &readme, "t");
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn reads_generated_secret_names() {
        let k = "secretGenerator:\n  - name: jwt-secret\n    literals: [A=b]\n";
        assert_eq!(generated_secrets(k).unwrap(), ["jwt-secret"]);
        assert!(
            generated_secrets("resources: [a.yaml]\n")
                .unwrap()
                .is_empty()
        );
    }
}
