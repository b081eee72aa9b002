#!/usr/bin/env bash
# Set up what `make run` and `make test` need on a fresh Debian/Ubuntu machine, saying
# each step and how long it took: Java 17 for Spark, promtool, uv, and the .venv with the
# locked versions of every workspace package (uv.lock), installed editable.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TOOLS=.adwatch/tools          # uv lives outside .venv: `uv sync` removes what the lock does not list
UV_VERSION=${UV_VERSION:-0.13.9}
# uv verifies TLS with the machine's CA bundle (as pip does here).
export UV_SYSTEM_CERTS=1 UV_PYTHON_DOWNLOADS=never

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
step_started=0
step() { step_started=$(date +%s); echo "bootstrap: $* ..."; }
done_step() { echo "bootstrap:   done in $(( $(date +%s) - step_started )) s"; }
trap 'echo "bootstrap: FAILED during the step above; rerun make after fixing it (output above says why)" >&2' ERR

if ! java -version 2>&1 | grep -qE 'version "(17|21)'; then
  step "installing Java 17 (Spark needs it) with apt"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  done_step
fi

# promtool checks the PrometheusRule in the chart (tests skip with a reason without it).
if ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  step "installing promtool (Debian package prometheus)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive \
         apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
    || echo "bootstrap: promtool not installed; its checks will be skipped"
  done_step
fi

"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "adwatch needs Python 3.11"'
if ! "$TOOLS/bin/uv" --version 2>/dev/null | grep -q "uv $UV_VERSION"; then
  step "installing uv $UV_VERSION into $TOOLS"
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install -q "uv==$UV_VERSION"
  done_step
fi

step "installing the locked packages into $VENV (uv sync; the first time downloads ~600 MB, pyspark most of it)"
UV_PROJECT_ENVIRONMENT="$VENV" "$TOOLS/bin/uv" sync --frozen --all-packages --python "$(command -v "$PYTHON")"
done_step
echo "bootstrap: $VENV ready"
