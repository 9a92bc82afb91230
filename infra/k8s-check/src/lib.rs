//! Offline checks of Switchyard's Kubernetes manifests and `skaffold.yaml`, for every app
//! of the registry: the overlays, rendered with `kubectl kustomize` ([`render`]) and parsed
//! ([`Manifests`]), are cross-checked by the other modules. Generic checks are left to the
//! tools `infra/validate.sh` runs first.

pub mod checks;
pub mod contract;
pub mod gateway;
pub mod manifest;
pub mod netpol;
pub mod render;
pub mod secrets;
pub mod skaffold;

/// Ingress paths as ingress-nginx evaluates them, and HTTPRoutes as Envoy Gateway does: the
/// implementation shared with the local gateway.
pub use switchyard_ingress as ingress;

pub use manifest::Manifests;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("YAML: {0}")]
    Yaml(String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error(transparent)]
    Routing(#[from] switchyard_ingress::Error),
    /// The input does not have the expected shape, or kubectl failed.
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn io(what: &str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error {
    let context = format!("{what} {}", path.display());
    move |e| Error::Io(context, e)
}

/// A multi-document YAML text as JSON values, without the empty documents.
pub fn parse_yaml_documents(text: &str) -> Result<Vec<serde_json::Value>, Error> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| Error::Yaml(e.to_string()))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Problems found, as messages `<at> <what>`.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<String>,
    /// Where the next problems are, the start of their messages (`Service posts-srv:`).
    pub at: String,
}

impl Report {
    pub fn check(&mut self, failed: bool, what: impl std::fmt::Display) {
        if failed {
            self.problems.push(format!("{} {what}", self.at));
        }
    }

    /// Reports `field` if its value, `actual` (a string, or other JSON as JSON), is not `want`.
    pub fn expect(&mut self, field: &str, actual: &serde_json::Value, want: &str) {
        let same = manifest::as_text(actual) == want;
        self.check(!same, format!("{field} is {actual}, not {want}"));
    }
}
