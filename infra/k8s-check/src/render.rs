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

pub fn kustomize(dir: &Path) -> Result<String, Error> {
    let kubectl = std::env::var("KUBECTL").ok().filter(|k| !k.is_empty());
    let kubectl = kubectl.unwrap_or_else(|| "kubectl".to_owned());
    let output = Command::new(&kubectl).arg("kustomize").arg(dir).output();
    let what = format!("running {kubectl} kustomize (set KUBECTL, or run infra/validate.sh) on");
    let output = output.map_err(io(&what, dir))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let failed = format!(
        "kubectl kustomize {} failed: {}",
        dir.display(),
        stderr.trim()
    );
    if !output.status.success() {
        return Err(Error::Invalid(failed));
    }
    String::from_utf8(output.stdout).map_err(|e| Error::Invalid(format!("kustomize output: {e}")))
}

fn modified(path: &Path) -> std::io::Result<SystemTime> {
    fs::metadata(path)?.modified()
}

/// Every file under `dir` (recursively), sorted.
pub fn files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io("reading", dir))? {
        let path = entry.map_err(io("reading", dir))?.path();
        match path.is_dir() {
            true => out.extend(files(&path)?),
            false => out.push(path),
        }
    }
    out.sort();
    Ok(out)
}

/// The newest modification time of the files under `dir` (recursively).
pub fn newest_mtime(dir: &Path) -> Result<SystemTime, Error> {
    let mut newest = SystemTime::UNIX_EPOCH;
    for path in files(dir)? {
        newest = newest.max(modified(&path).map_err(io("reading", &path))?);
    }
    Ok(newest)
}

/// The rendered overlay: `target/k8s/<app>-<overlay>.yaml` if it is up to date, otherwise
/// rendered now and written there (through a temporary file: tests run in parallel).
pub fn rendered_overlay(root: &Path, app: &str, overlay: &str) -> Result<String, Error> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let path = root.join(format!("target/k8s/{app}-{overlay}.yaml"));
    let inputs = newest_mtime(&root.join("infra/k8s"))?;
    if modified(&path).is_ok_and(|m| m >= inputs) {
        return fs::read_to_string(&path).map_err(io("reading", &path));
    }
    let text = kustomize(&root.join(overlay_path(app, overlay)))?;
    let dir = root.join("target/k8s");
    fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("yaml.{}.{n}.tmp", std::process::id()));
    fs::write(&tmp, &text).map_err(io("writing", &tmp))?;
    fs::rename(&tmp, &path).map_err(io("renaming", &tmp))?;
    Ok(text)
}
