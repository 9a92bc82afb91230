//! Rendering the overlays with `kubectl kustomize` (`$KUBECTL`, else `kubectl`): the tests
//! render each overlay once (all six take under two seconds), so they also run alone.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, io};

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = crate_dir.parent().and_then(Path::parent);
    root.unwrap_or(crate_dir).to_path_buf()
}

/// `infra/k8s/<app>/overlays/<overlay>`, relative to the root, as skaffold.yaml writes it.
pub fn overlay_path(app: &str, overlay: &str) -> String {
    format!("infra/k8s/{app}/overlays/{overlay}")
}

pub fn rendered_overlay(app: &str, overlay: &str) -> Result<String, Error> {
    let dir = repo_root().join(overlay_path(app, overlay));
    let kubectl = std::env::var("KUBECTL").ok().filter(|k| !k.is_empty());
    let kubectl = kubectl.unwrap_or_else(|| "kubectl".to_owned());
    let output = Command::new(&kubectl).arg("kustomize").arg(&dir).output();
    let what = format!("running {kubectl} kustomize (set KUBECTL, or run infra/validate.sh) on");
    let output = output.map_err(io(&what, &dir))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let (dir, stderr) = (dir.display(), stderr.trim());
        let failed = format!("kubectl kustomize {dir} failed: {stderr}");
        return Err(Error::Invalid(failed));
    }
    String::from_utf8(output.stdout).map_err(|e| Error::Invalid(format!("kustomize output: {e}")))
}

/// Every file under `dir` (recursively), sorted.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("reading", dir))? {
        let path = entry.map_err(io("reading", dir))?.path();
        match path.is_dir() {
            true => out.extend(files(&path)?),
            false => out.push(path),
        }
    }
    out.sort();
    Ok(out)
}
