//! Secrets are never committed (only a dev overlay generates throwaway ones). Prod's are
//! created by the `kubectl create secret generic ... -n <app>` commands of infra/README.md,
//! which stand in for the cluster's and must create every Secret and key used.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Value, json};

use crate::manifest::{self, Manifests, Ref, list, text};
use crate::{Error, io, parse_yaml_documents};

/// What stands in for a `$(...)` of the README (`$(openssl rand -hex 24)`): 48 hex digits.
pub const SUBSTITUTION: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

/// Secret objects and `secretGenerator`s committed in the YAML files under `dir`.
pub fn committed_secrets(dir: &Path) -> Result<Vec<String>, Error> {
    let mut problems = Vec::new();
    let is_yaml = |p: &PathBuf| p.extension().is_some_and(|e| e == "yaml" || e == "yml");
    for path in crate::render::files(dir)?.into_iter().filter(is_yaml) {
        let yaml = fs::read_to_string(&path).map_err(io("reading", &path))?;
        for doc in parse_yaml_documents(&yaml)? {
            let f = path.display();
            if manifest::kind(&doc) == "Secret" {
                let what = "Secrets are created with kubectl, never committed";
                problems.push(format!("{f} defines {}: {what}", manifest::id(&doc)));
            }
            if !doc["secretGenerator"].is_null() {
                let what = "only a dev overlay may generate Secrets";
                problems.push(format!("{f} has a secretGenerator: {what}"));
            }
        }
    }
    Ok(problems)
}

/// The names of the Secrets a kustomization's `secretGenerator` makes.
pub fn generated_secrets(kustomization: &str) -> Result<Vec<String>, Error> {
    let docs = parse_yaml_documents(kustomization)?;
    let generators = docs.iter().flat_map(|d| list(&d["secretGenerator"]));
    Ok(generators.map(|g| text(&g["name"]).to_owned()).collect())
}

/// The Secrets of one namespace the README creates: Secret -> key -> value.
pub type Created = BTreeMap<String, BTreeMap<String, String>>;

/// Reads every `kubectl [-n NS] create secret generic NAME [-n NS] --from-literal=K=V ...`
/// of a Markdown text (commands may continue over lines ending in `\`), by namespace (`""`
/// for a command without one), with every `$(...)` replaced by [`SUBSTITUTION`].
pub fn readme_secrets(markdown: &str) -> BTreeMap<String, Created> {
    let mut out: BTreeMap<String, Created> = BTreeMap::new();
    let line = |l: &str| match l.trim_end().strip_suffix('\\') {
        Some(head) => format!("{head} "),
        None => format!("{l}\n"),
    };
    let joined = markdown.lines().map(line);
    for line in joined.collect::<String>().lines() {
        let words = shell_words(line);
        let start = words
            .iter()
            .position(|w| w == "kubectl")
            .unwrap_or(words.len());
        let words = &words[start..];
        let create = ["create", "secret", "generic"];
        let create = words.windows(3).position(|w| w == create);
        let Some(name) = create.and_then(|i| words.get(i + 3)) else {
            continue;
        };
        let (mut namespace, mut literals) = (String::new(), BTreeMap::new());
        for (i, w) in words.iter().enumerate() {
            if w == "-n" || w == "--namespace" {
                namespace = words.get(i + 1).cloned().unwrap_or_default();
            } else if let Some(ns) = w.strip_prefix("--namespace=") {
                namespace = ns.to_owned();
            } else if let Some(literal) = w.strip_prefix("--from-literal=") {
                let (k, v) = literal.split_once('=').unwrap_or((literal, ""));
                literals.insert(k.to_owned(), v.to_owned());
            }
        }
        let created = out.entry(namespace).or_default();
        created.entry(name.clone()).or_default().extend(literals);
    }
    out
}

/// Splits a command line into words as a shell does (quotes, `#` comments), every `$(...)`
/// replaced by [`SUBSTITUTION`] (the README quotes each one). Unbalanced quotes: no words.
fn shell_words(line: &str) -> Vec<String> {
    static COMMAND: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\$\([^()]*\)").expect("a valid regex"));
    let words = shlex::split(line).unwrap_or_default().into_iter();
    let substitute = |w: String| COMMAND.replace_all(&w, SUBSTITUTION).into_owned();
    words.map(substitute).collect()
}

/// A Secret object with `data` as its `stringData`, standing in for one the cluster has.
pub fn placeholder_secret(name: &str, data: &BTreeMap<String, String>) -> Value {
    let metadata = json!({"name": name});
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "stringData": data})
}

/// Every Secret an overlay references and does not define is created by the README, with
/// every key (optional ones too: the README says how to make them), and nothing else.
pub fn check_documented(m: &Manifests, readme: &Created, what: &str) -> Vec<String> {
    let mut problems = BTreeSet::new();
    let mut used = BTreeSet::new();
    let readme_md = format!("infra/README.md ({what})");
    let undefined = |r: &Ref| r.kind == "Secret" && m.get("Secret", r.name).is_none();
    for (at, r) in m.references().into_iter().filter(|(_, r)| undefined(r)) {
        let (name, created) = (r.name, readme.get(r.name));
        let what = match (created, r.key) {
            (None, _) => Some(format!("Secret {name} is neither in the manifests nor in")),
            (Some(keys), Some(key)) if !keys.contains_key(key) => {
                Some(format!("key {key} of Secret {name} is not created in"))
            }
            _ => None,
        };
        problems.extend(what.map(|what| format!("{at}: {what} {readme_md}")));
        used.insert(name);
    }
    for name in readme.keys().filter(|n| !used.contains(n.as_str())) {
        problems.insert(format!("{readme_md} creates Secret {name}, unused"));
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
        let none = generated_secrets("resources: [a.yaml]\n").unwrap();
        assert!(none.is_empty());
    }
}
