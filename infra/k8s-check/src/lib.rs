//! Offline checks of Switchyard's Kubernetes manifests and `skaffold.yaml`, for every app
//! of the registry: the overlays under `infra/k8s/<app>/overlays/` are rendered with
//! `kubectl kustomize` ([`render`]), parsed ([`Manifests`]) and cross-checked: generic
//! cross-references ([`checks`]), each app's wire contract ([`contract`]), the
//! NetworkPolicies ([`netpol`]), the Secrets, which are never committed ([`secrets`]), the
//! skaffold artifacts ([`skaffold`]) and the Gateway API overlay ([`gateway`]).

pub mod checks;
pub mod contract;
pub mod gateway;
pub mod ingress;
pub mod manifest;
pub mod netpol;
pub mod render;
pub mod secrets;
pub mod skaffold;

pub use manifest::Manifests;

/// Errors of parsing, rendering and routing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("YAML: {0}")]
    Yaml(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Ingress path {path:?} is not a valid regex: {source}")]
    Regex {
        path: String,
        #[source]
        source: regex::Error,
    },
    #[error("kubectl kustomize {overlay} failed: {message}")]
    Kustomize { overlay: String, message: String },
    /// The input does not have the expected shape.
    #[error("{0}")]
    Invalid(String),
}

impl From<switchyard_ingress::Error> for Error {
    fn from(err: switchyard_ingress::Error) -> Self {
        match err {
            switchyard_ingress::Error::Yaml(m) => Error::Yaml(m),
            switchyard_ingress::Error::Regex { path, source } => Error::Regex { path, source },
            switchyard_ingress::Error::Invalid(m) => Error::Invalid(m),
        }
    }
}

impl Error {
    pub(crate) fn io(context: impl std::fmt::Display, source: std::io::Error) -> Self {
        let context = context.to_string();
        Error::Io { context, source }
    }
}

/// Parses a (multi-document) YAML text into JSON values, skipping empty documents.
pub fn parse_yaml_documents(text: &str) -> Result<Vec<serde_json::Value>, Error> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| Error::Yaml(e.to_string()))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn parses_multiple_documents_skips_empty_ones_and_reports_errors() {
        let docs = super::parse_yaml_documents("---\na: 1\n---\n---\nb: \"true\"\nc: [x, 2]\n");
        let docs = docs.unwrap();
        assert_eq!(
            (docs.len(), &docs[0]["a"], &docs[1]["b"]),
            (2, &1.into(), &"true".into())
        );
        assert_eq!(docs[1]["c"][1], 2);
        assert!(super::parse_yaml_documents("a: [unclosed\n").is_err());
    }
}
