#!/usr/bin/env bash
# Debian's headless Chromium for the report's browser test (tests/… skip with a reason without it).
# `make test` calls this when /usr/bin/chromium is missing; it says what it does and how long it took.
# Under CI=true a failed install fails: the browser test must run there, and fails without Chromium.
set -euo pipefail
give_up() {
  if [ "${CI:-}" = true ]; then echo "chromium: $1 (CI=true: the report's browser test must run)" >&2; exit 1; fi
  echo "chromium: $1; the browser test will be skipped" >&2; exit 0
}
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  give_up "no apt-get here; install Chromium by hand"
fi
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
started=$(date +%s)
echo "chromium: installing Debian's chromium for the report's browser test (apt, ~100 MB) ..."
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
  || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive \
       apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
  || give_up "install FAILED (apt-get above says why)"
echo "chromium:   done in $(( $(date +%s) - started )) s"
