//! Rendering the overlays with `kubectl kustomize`.
//!
//! Every app has its manifests under `infra/k8s/<app>/` (`base/`, `overlays/dev`,
//! `overlays/prod`). `infra/validate.sh` writes `target/k8s/<app>-<overlay>.yaml`. The
//! tests read those files, and render an overlay themselves (writing the same file) when
//! it is missing or older than a file under `infra/k8s/`, so they also work alone.
//! The kubectl used is `$KUBECTL`, else `kubectl` on PATH.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use crate::Error;

/// The overlays of every app, under `infra/k8s/<app>/overlays/`.
pub const OVERLAYS: [&str; 2] = ["dev", "prod"];

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| crate_dir.to_path_buf(), Path::to_path_buf)
}

/// `infra/k8s/<app>`.
pub fn app_dir(root: &Path, app: &str) -> PathBuf {
    root.join("infra").join("k8s").join(app)
}

/// `infra/k8s/<app>/base`.
pub fn base_dir(root: &Path, app: &str) -> PathBuf {
    app_dir(root, app).join("base")
}

/// `infra/k8s/<app>/overlays/<overlay>`.
pub fn overlay_dir(root: &Path, app: &str, overlay: &str) -> PathBuf {
    app_dir(root, app).join("overlays").join(overlay)
}

/// The same, relative to the repository root, with `/` (as skaffold.yaml writes it).
pub fn overlay_path(app: &str, overlay: &str) -> String {
    format!("infra/k8s/{app}/overlays/{overlay}")
}

/// `target/k8s/<app>-<overlay>.yaml`.
pub fn rendered_path(root: &Path, app: &str, overlay: &str) -> PathBuf {
    root.join("target")
        .join("k8s")
        .join(format!("{app}-{overlay}.yaml"))
}

/// The kubectl to run.
pub fn kubectl() -> OsString {
    std::env::var_os("KUBECTL")
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| OsString::from("kubectl"))
}

/// Runs `kubectl kustomize infra/k8s/<app>/overlays/<overlay>`.
pub fn kustomize(root: &Path, app: &str, overlay: &str) -> Result<String, Error> {
    kustomize_dir(&overlay_dir(root, app, overlay))
}

/// Runs `kubectl kustomize <dir>`.
pub fn kustomize_dir(dir: &Path) -> Result<String, Error> {
    let kubectl = kubectl();
    let output = Command::new(&kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|e| {
            Error::io(
                format!(
                    "running {} kustomize {} (set KUBECTL, or run infra/validate.sh first)",
                    kubectl.to_string_lossy(),
                    dir.display()
                ),
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
    let entries =
        fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        let path = entry.path();
        let meta = entry
            .metadata()
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let mtime = if meta.is_dir() {
            newest_mtime(&path)?
        } else {
            meta.modified()
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
        };
        newest = newest.max(mtime);
    }
    Ok(newest)
}

/// The rendered overlay: `target/k8s/<app>-<overlay>.yaml` if it is up to date,
/// otherwise rendered now and written there.
pub fn rendered_overlay(root: &Path, app: &str, overlay: &str) -> Result<String, Error> {
    let path = rendered_path(root, app, overlay);
    let inputs = newest_mtime(&root.join("infra").join("k8s"))?;
    if let Ok(meta) = fs::metadata(&path)
        && meta.modified().is_ok_and(|m| m >= inputs)
    {
        return fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e));
    }
    let text = kustomize(root, app, overlay)?;
    write_atomically(&path, &text)?;
    Ok(text)
}

fn write_atomically(path: &Path, text: &str) -> Result<(), Error> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("yaml.{}.{n}.tmp", std::process::id()));
    fs::write(&tmp, text).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io(format!("renaming {}", tmp.display()), e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_relative_to_the_repository_root() {
        let root = repo_root();
        assert!(root.join("Cargo.toml").is_file());
        assert!(overlay_dir(&root, "blog", "dev").ends_with("infra/k8s/blog/overlays/dev"));
        assert_eq!(
            overlay_path("ticketing", "prod"),
            "infra/k8s/ticketing/overlays/prod"
        );
        assert!(
            rendered_path(&root, "ticketing", "prod").ends_with("target/k8s/ticketing-prod.yaml")
        );
        for app in switchyard_registry::app_names() {
            for overlay in OVERLAYS {
                assert!(
                    overlay_dir(&root, app, overlay)
                        .join("kustomization.yaml")
                        .is_file(),
                    "{app}: no overlay {overlay}"
                );
            }
        }
    }

    #[test]
    fn newest_mtime_walks_directories() {
        let root = repo_root();
        let newest = newest_mtime(&root.join("infra").join("k8s")).unwrap();
        assert!(newest > SystemTime::UNIX_EPOCH);
        assert!(newest_mtime(&root.join("no-such-dir")).is_err());
    }
}
