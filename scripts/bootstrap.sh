#!/usr/bin/env bash
# Set up what `make run` and `make test` need on a fresh Debian/Ubuntu machine:
# Java 17 for Spark (apt, if missing) and the .venv with every package installed editable.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! java -version 2>&1 | grep -qE 'version "(17|21)'; then
  echo "bootstrap: installing Java 17 (Spark needs it)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi

# promtool checks the PrometheusRule in the chart (tests skip with a reason without it).
if ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  echo "bootstrap: installing promtool (Debian package prometheus)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive \
         apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
    || echo "bootstrap: promtool not installed; its checks will be skipped"
fi

"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "adwatch needs Python >= 3.11"'
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -r requirements-dev.txt \
  -e "libs/adwatch[embedded,clickhouse]" -e services/generator -e services/detector -e services/notifier
echo "bootstrap: $VENV ready"
