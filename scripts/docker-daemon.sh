#!/usr/bin/env bash
# The project's own Docker engine: `scripts/docker-daemon.sh start|stop|status|env`.
#
# Debian's dockerd with everything under .adwatch/docker (data root, exec root, socket,
# pid file, log), no iptables and no bridge: containers and builds use `--network host`
# and reach the services the tests start on 127.0.0.1. `start` is idempotent and prints
# the DOCKER_HOST to use; `stop` ends the daemon by the pid in its pid file.
# Installing dockerd is scripts/install-containers.sh's job (`make test` runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ADWATCH_DOCKER_ROOT:-$PWD/.adwatch/docker}
SOCK="$ROOT/docker.sock"
PIDFILE="$ROOT/dockerd.pid"
LOG="$ROOT/dockerd.log"
export DOCKER_HOST="unix://$SOCK"

running() { [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start() {
  if running && answers; then echo "DOCKER_HOST=$DOCKER_HOST"; return 0; fi
  command -v dockerd >/dev/null || { echo "docker-daemon: dockerd not installed (scripts/install-containers.sh)" >&2; return 1; }
  mkdir -p "$ROOT/data" "$ROOT/exec"
  # a stale pid file from a killed daemon would stop the new one from starting
  running || rm -f "$PIDFILE"
  setsid dockerd --data-root "$ROOT/data" --exec-root "$ROOT/exec" --host "$DOCKER_HOST" \
    --pidfile "$PIDFILE" --iptables=false --ip6tables=false --bridge=none \
    >"$LOG" 2>&1 </dev/null &
  local pid=$!
  for _ in $(seq 1 150); do
    if answers; then echo "DOCKER_HOST=$DOCKER_HOST"; return 0; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  echo "docker-daemon: dockerd did not start; last lines of $LOG:" >&2
  tail -n 20 "$LOG" >&2 || true
  kill "$pid" 2>/dev/null || true
  return 1
}

# dockerd leaves its network namespace mounted under exec/netns: unmounted here, so that
# `make clean` (rm -rf .adwatch) and a removed checkout do not hit "Device or resource busy".
unmount_leftovers() {
  local m
  for m in "$ROOT"/exec/netns/*; do
    if [ -e "$m" ] && mountpoint -q "$m" 2>/dev/null; then umount "$m" 2>/dev/null || true; fi
  done
}

stop() {
  if ! running; then rm -f "$PIDFILE"; unmount_leftovers; echo "docker-daemon: not running"; return 0; fi
  local pid; pid=$(cat "$PIDFILE")
  kill -TERM "$pid"
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || { unmount_leftovers; echo "docker-daemon: stopped"; return 0; }
    sleep 0.2
  done
  echo "docker-daemon: dockerd $pid ignored SIGTERM for 30 s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  unmount_leftovers
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running && answers; then echo "running (pid $(cat "$PIDFILE"), DOCKER_HOST=$DOCKER_HOST)"; else echo "not running"; exit 1; fi ;;
  env) echo "export DOCKER_HOST=$DOCKER_HOST" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
