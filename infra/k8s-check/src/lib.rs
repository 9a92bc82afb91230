//! Offline checks of Switchyard's Kubernetes manifests and `skaffold.yaml`, for every app
//! of the registry.
//!
//! The overlays under `infra/k8s/<app>/overlays/` are rendered with
//! `kubectl kustomize` (see [`render`]), parsed into JSON values
//! ([`Manifests`]) and cross-checked ([`checks`]): Service selectors and target
//! ports, Ingress backends, service URLs in the configuration, images against
//! the skaffold artifacts ([`skaffold`]), probes, the Kubernetes names of
//! each app's wire contract ([`contract`]), the NetworkPolicies ([`netpol`]) and the
//! Secrets, which are never committed ([`secrets`]). [`ingress::Router`] evaluates
//! Ingress paths the way ingress-nginx does, and HTTPRoutes the way Envoy Gateway does;
//! [`gateway`] checks the Gateway API overlay `prod-gateway`.

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
    /// A YAML document could not be parsed.
    #[error("YAML: {0}")]
    Yaml(String),
    /// A file or a process could not be read or run.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An Ingress path is not a valid regular expression.
    #[error("Ingress path {path:?} is not a valid regex: {source}")]
    Regex {
        /// The Ingress path.
        path: String,
        /// The regex error.
        #[source]
        source: regex::Error,
    },
    /// `kubectl kustomize` failed.
    #[error("kubectl kustomize {overlay} failed: {message}")]
    Kustomize {
        /// The overlay directory.
        overlay: String,
        /// What kubectl printed.
        message: String,
    },
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
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
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
    use super::*;

    #[test]
    fn parses_multiple_documents_and_skips_empty_ones() {
        let docs = parse_yaml_documents("---\na: 1\n---\n---\nb: \"true\"\nc: [x, 2]\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["a"], 1);
        assert_eq!(docs[1]["b"], "true");
        assert_eq!(docs[1]["c"][1], 2);
    }

    #[test]
    fn reports_yaml_errors() {
        assert!(parse_yaml_documents("a: [unclosed\n").is_err());
    }
}
