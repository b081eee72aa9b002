#!/usr/bin/env bash
# Install what building and running the images here needs, when missing: Debian's Docker
# engine (docker.io: dockerd, containerd), runc and debootstrap (the offline base image),
# and tini (init for test containers). `make test` and `make images` run it; it never fails
# the build: without them the image tests skip with the reason (CI=true makes them fail).
set -uo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-containers: no apt-get; install ${missing[*]} yourself (image tests will skip)" >&2
  exit 0
fi
echo "install-containers: installing ${missing[*]}"
install() { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
install || { as_root apt-get update -qq && install; } \
  || echo "install-containers: could not install ${missing[*]} (image tests will skip)" >&2
# Debian's package starts the system daemon where it can; the project runs its own (scripts/docker-daemon.sh).
exit 0
