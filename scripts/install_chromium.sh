#!/usr/bin/env bash
# Debian's headless Chromium for the report's browser test (tests/… skip with a reason without it).
# `make test` calls this when /usr/bin/chromium is missing; it says what it does and how long it took.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium: no apt-get here; install Chromium by hand (the report's browser test is skipped without it)"; exit 0
fi
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
started=$(date +%s)
echo "chromium: installing Debian's chromium for the report's browser test (apt, ~100 MB) ..."
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
  || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive \
       apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
  || { echo "chromium: install FAILED (apt-get above says why); the browser test will be skipped" >&2; exit 0; }
echo "chromium:   done in $(( $(date +%s) - started )) s"
