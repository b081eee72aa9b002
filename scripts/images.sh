#!/usr/bin/env bash
# Build the service images here: `scripts/images.sh [base|wheels|build] [SERVICE...]`
# (no argument: everything, for generator, detector and notifier; `make images`).
#
#   base    adwatch-base:bookworm, a Debian bookworm minbase made offline with debootstrap
#           from this machine's apt sources and `docker import`ed (cached as a tarball in
#           .adwatch/images, so a new Docker data root gets it back in seconds).
#   wheels  .adwatch/wheelhouse/<service>/{deps,local}: `pip wheel` of the runtime packages
#           (libs/adwatch and the service, never the dev tools) with their dependencies. The
#           images install from it with `pip install --no-index`: no index, no certificates,
#           no network inside the build. deps are rebuilt only when a pyproject (or uv.lock)
#           changes; the project's own wheels every time (seconds).
#   build   docker build of adwatch-<service>:dev against the project's daemon
#           (scripts/docker-daemon.sh), BASE_IMAGE=adwatch-base:bookworm unless BASE_IMAGE
#           is set (e.g. BASE_IMAGE=python:3.11-slim-bookworm where a registry is reachable).
#
# Environment: TAG (default dev), BASE_IMAGE, DOCKER_HOST (default: the project's daemon,
# started when not running), SPARK_CONNECTORS (detector: "none" or "kafka,s3"; with kafka the
# image's ADWATCH_DETECTOR_SOURCE is kafka unless DETECTOR_SOURCE says otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SERVICES_ALL=(generator detector notifier)
TAG=${TAG:-dev}
LOCAL_BASE=adwatch-base:bookworm
BASE_IMAGE=${BASE_IMAGE:-$LOCAL_BASE}
CACHE=$ROOT/.adwatch/images
WHEELS=$ROOT/.adwatch/wheelhouse
PY=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=python3
# pip for the wheelhouse: the venv's, else the tools venv's (a uv-synced .venv has no pip)
PIP_PY=$PY
"$PIP_PY" -m pip --version >/dev/null 2>&1 || PIP_PY=$ROOT/.adwatch/tools/bin/python
"$PIP_PY" -m pip --version >/dev/null 2>&1 || PIP_PY=python3

log() { echo "images: $*" >&2; }

ensure_daemon() {
  if [ -z "${DOCKER_HOST:-}" ]; then
    eval "$(scripts/docker-daemon.sh start | sed 's/^/export /')"
  fi
  docker version --format '{{.Server.Version}}' >/dev/null
}

debian_mirror() {
  # the bookworm archive this machine's apt uses (ADWATCH_DEBIAN_MIRROR overrides)
  if [ -n "${ADWATCH_DEBIAN_MIRROR:-}" ]; then echo "$ADWATCH_DEBIAN_MIRROR"; return; fi
  apt-cache policy 2>/dev/null | awk '$3 ~ /^bookworm\/main/ {print $2; exit}' | grep . \
    || echo "http://deb.debian.org/debian"
}

base() {
  ensure_daemon
  if docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then log "$LOCAL_BASE present"; return; fi
  local t0=$SECONDS
  mkdir -p "$CACHE"
  local tarball=$CACHE/base-bookworm.tar
  if [ ! -s "$tarball" ]; then
    local mirror dir; mirror=$(debian_mirror); dir=$CACHE/rootfs-bookworm
    log "debootstrap --variant=minbase bookworm from $mirror (about a minute)"
    rm -rf "$dir"
    debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -n 20 "$CACHE/debootstrap.log" >&2; exit 1; }
    cat >"$dir/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
EOF
    # the same trim as the upstream slim images: no apt lists, no caches
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
    tar -C "$dir" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$dir"
  fi
  docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' "$tarball" "$LOCAL_BASE" >/dev/null
  log "imported $LOCAL_BASE in $((SECONDS - t0)) s"
}

deps_stamp() {
  local files=(libs/adwatch/pyproject.toml "services/$1/pyproject.toml")
  [ -f uv.lock ] && files+=(uv.lock)
  cat "${files[@]}" | sha256sum | cut -c1-16
}

wheels() {
  local svc=$1 out=$WHEELS/$1 stamp t0=$SECONDS
  stamp=$(deps_stamp "$svc")
  mkdir -p "$out"
  if [ "$(cat "$out/deps.stamp" 2>/dev/null)" != "$stamp" ]; then
    log "wheelhouse for $svc: dependencies from uv.lock (pip wheel; the first time a few minutes)"
    rm -rf "$out/deps" "$out/tmp" && mkdir -p "$out/deps"
    local uv; uv=$(command -v uv || echo "$ROOT/.adwatch/tools/bin/uv")
    if [ -f uv.lock ] && [ -x "$uv" ]; then
      # the lock decides the versions; the project's own packages are built below
      "$uv" export --frozen --no-dev --no-emit-workspace --no-hashes --package "adwatch-$svc" -o "$out/requirements.txt" >/dev/null
      "$PIP_PY" -m pip wheel -q -w "$out/deps" -r "$out/requirements.txt"
    else
      "$PIP_PY" -m pip wheel -q -w "$out/tmp" ./libs/adwatch "./services/$svc"
      find "$out/tmp" -name 'adwatch*.whl' -delete
      mv "$out/tmp"/*.whl "$out/deps/" && rm -rf "$out/tmp"
    fi
    # The image's interpreter may be an older 3.11 than this one (Debian bookworm: 3.11.2):
    # add the wheels its environment markers ask for (e.g. redis -> async-timeout < 3.11.3).
    # pip evaluates markers for the running interpreter only, hence the explicit check.
    local extra
    for _ in 1 2 3; do
      extra=$("$PY" scripts/wheel_markers.py "$out/deps" 3.11.2)
      [ -z "$extra" ] && break
      log "wheelhouse for $svc: + $extra (Python 3.11.2 markers)"
      # shellcheck disable=SC2086
      "$PIP_PY" -m pip download -q --no-deps --only-binary=:all: -d "$out/deps" $extra
    done
    find "$out/deps" -name 'adwatch*.whl' -delete
    echo "$stamp" >"$out/deps.stamp"
  fi
  rm -rf "$out/local" && mkdir -p "$out/local"
  "$PIP_PY" -m pip wheel -q --no-deps --no-build-isolation -w "$out/local" ./libs/adwatch "./services/$svc" 2>/dev/null \
    || "$PIP_PY" -m pip wheel -q --no-deps -w "$out/local" ./libs/adwatch "./services/$svc"
  rm -rf libs/adwatch/build "services/$svc/build"
  log "wheelhouse for $svc ready in $((SECONDS - t0)) s"
}

build() {
  local svc=$1 version revision created
  ensure_daemon
  [ "$BASE_IMAGE" = "$LOCAL_BASE" ] && base
  wheels "$svc"
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "services/$svc/pyproject.toml" | head -1)
  revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  created=$(git log -1 --format=%cI 2>/dev/null || date -u +%FT%TZ)
  local extra=()
  if [ "$svc" = detector ]; then
    # the source follows the connectors: the Kafka connector built in is the one the job reads with
    local connectors=${SPARK_CONNECTORS:-none} source=python
    [[ ",$connectors," == *,kafka,* ]] && source=kafka
    extra+=(--build-arg "SPARK_CONNECTORS=$connectors" --build-arg "DETECTOR_SOURCE=${DETECTOR_SOURCE:-$source}")
  fi
  log "docker build adwatch-$svc:$TAG (FROM $BASE_IMAGE)"
  local t0=$SECONDS
  docker build -q --network host -f "services/$svc/Dockerfile" -t "adwatch-$svc:$TAG" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "VERSION=$version" \
    --build-arg "REVISION=$revision" --build-arg "CREATED=$created" "${extra[@]}" . >/dev/null
  log "adwatch-$svc:$TAG built in $((SECONDS - t0)) s"
}

cmd=${1:-build}
[ $# -gt 0 ] && shift
services=("$@")
[ ${#services[@]} -eq 0 ] && services=("${SERVICES_ALL[@]}")
case "$cmd" in
  base) base ;;
  wheels) for s in "${services[@]}"; do wheels "$s"; done ;;
  build) for s in "${services[@]}"; do build "$s"; done ;;
  *) echo "usage: $0 [base|wheels|build] [SERVICE...]" >&2; exit 2 ;;
esac
