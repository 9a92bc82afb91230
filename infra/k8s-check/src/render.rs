//! Rendering the overlays with `kubectl kustomize` (`$KUBECTL`, else `kubectl`).
//!
//! `infra/validate.sh` writes `target/k8s/<app>-<overlay>.yaml`. The tests read those
//! files, and render an overlay themselves (writing the same file) when it is missing or
//! older than a file under `infra/k8s/`, so they also work alone.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use crate::Error;

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

/// Runs `kubectl kustomize <dir>`.
pub fn kustomize(dir: &Path) -> Result<String, Error> {
    let kubectl = std::env::var("KUBECTL").ok().filter(|k| !k.is_empty());
    let kubectl = kubectl.unwrap_or_else(|| "kubectl".to_owned());
    let output = Command::new(&kubectl).arg("kustomize").arg(dir).output();
    let output = output.map_err(|e| {
        let what = format!("running {kubectl} kustomize {}", dir.display());
        Error::io(
            format!("{what} (set KUBECTL, or run infra/validate.sh first)"),
            e,
        )
    })?;
    if !output.status.success() {
        return Err(Error::Kustomize {
            overlay: dir.display().to_string(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    String::from_utf8(output.stdout)
        .map_err(|e| Error::Invalid(format!("kustomize output is not UTF-8: {e}")))
}

/// The newest modification time of the files under `dir` (recursively).
pub fn newest_mtime(dir: &Path) -> Result<SystemTime, Error> {
    let mut newest = SystemTime::UNIX_EPOCH;
    for entry in fs::read_dir(dir).map_err(reading(dir))? {
        let entry = entry.map_err(reading(dir))?;
        let path = entry.path();
        let meta = entry.metadata().map_err(reading(&path))?;
        let mtime = if meta.is_dir() {
            newest_mtime(&path)?
        } else {
            meta.modified().map_err(reading(&path))?
        };
        newest = newest.max(mtime);
    }
    Ok(newest)
}

/// The error of reading `path`.
pub(crate) fn reading(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(format!("reading {}", path.display()), e)
}

/// The rendered overlay: `target/k8s/<app>-<overlay>.yaml` if it is up to date, otherwise
/// rendered now and written there (through a temporary file: tests run in parallel).
pub fn rendered_overlay(root: &Path, app: &str, overlay: &str) -> Result<String, Error> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let path = root.join(format!("target/k8s/{app}-{overlay}.yaml"));
    let inputs = newest_mtime(&root.join("infra/k8s"))?;
    if let Ok(meta) = fs::metadata(&path)
        && meta.modified().is_ok_and(|m| m >= inputs)
    {
        return fs::read_to_string(&path).map_err(reading(&path));
    }
    let text = kustomize(&root.join(overlay_path(app, overlay)))?;
    let dir = root.join("target/k8s");
    fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("yaml.{}.{n}.tmp", std::process::id()));
    fs::write(&tmp, &text).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io(format!("renaming {}", tmp.display()), e))?;
    Ok(text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_relative_to_the_repository_root_and_mtimes_walk_directories() {
        let root = repo_root();
        assert!(root.join("Cargo.toml").is_file());
        assert_eq!(overlay_path("blog", "prod"), "infra/k8s/blog/overlays/prod");
        for app in switchyard_registry::app_names() {
            for overlay in ["dev", "prod"] {
                let kustomization = root
                    .join(overlay_path(app, overlay))
                    .join("kustomization.yaml");
                assert!(kustomization.is_file(), "{app}: no overlay {overlay}");
            }
        }
        assert!(newest_mtime(&root.join("infra/k8s")).unwrap() > SystemTime::UNIX_EPOCH);
        assert!(newest_mtime(&root.join("no-such-dir")).is_err());
    }
}
