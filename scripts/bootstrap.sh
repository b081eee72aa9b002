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
step_started=$(date +%s)
step_name="checking the machine"
step_hint="the output above says why"
# step NAME HINT: say what is being done; a failure names the step, its time and what to do.
step() {
  step_started=$(date +%s); step_name=$1; step_hint=${2:-the output above says why}
  echo "bootstrap: $step_name ..."
}
done_step() { echo "bootstrap:   done in $(( $(date +%s) - step_started )) s"; }
failed() {
  echo "bootstrap: FAILED while $step_name (after $(( $(date +%s) - step_started )) s)." >&2
  echo "bootstrap: what to do: $step_hint. Running make again starts from this step." >&2
}
trap failed ERR
APT_HINT="check that apt-get works here (root or sudo, 'apt-get update' reaches the Debian archive)"

step "checking Python" "adwatch needs Python 3.11: install it, or point make at one (make test PYTHON=python3.11)"
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "adwatch needs Python 3.11"'
echo "bootstrap:   $("$PYTHON" --version) at $(command -v "$PYTHON")"

if ! java -version 2>&1 | grep -qE 'version "(17|21)'; then
  step "installing Java 17 (Spark needs it) with apt, about 200 MB" "$APT_HINT, or install a Java 17 JRE and put java on PATH"
  as_root apt-get update -qq
  # apt's own progress lines (one per package) show that the download is moving.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Use-Pty=0 openjdk-17-jre-headless \
    | grep --line-buffered -E '^(Get:|Setting up|Need to get)' || true
  java -version 2>&1 | grep -qE 'version "(17|21)'
  done_step
fi

# promtool checks the PrometheusRule in the chart (tests skip with a reason without it).
if ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  step "installing promtool (Debian package prometheus)" "$APT_HINT"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive \
         apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
    || echo "bootstrap: promtool not installed; its checks will be skipped"
  done_step
fi

if ! "$TOOLS/bin/uv" --version 2>/dev/null | grep -q "uv $UV_VERSION"; then
  step "installing uv $UV_VERSION into $TOOLS" "check that pip reaches PyPI ($PYTHON -m pip download uv==$UV_VERSION)"
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install -q "uv==$UV_VERSION"
  done_step
fi

step "installing the locked packages into $VENV (uv sync; the first time downloads ~600 MB, pyspark most of it)" \
  "check that PyPI is reachable and the disk has 2 GB free; 'rm -rf $VENV' starts the environment afresh"
UV_PROJECT_ENVIRONMENT="$VENV" "$TOOLS/bin/uv" sync --frozen --all-packages --python "$(command -v "$PYTHON")"
done_step
echo "bootstrap: $VENV ready"
