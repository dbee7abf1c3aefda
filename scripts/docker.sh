#!/usr/bin/env bash
# A project-local Docker daemon for the agent's driver tests: `docker.sh start` installs
# Debian's docker.io and busybox-static when missing, starts dockerd on its own socket with
# its data in .data/docker, imports the local image berth-test/busybox:1 (made from
# /bin/busybox, so nothing is pulled) and prints the daemon's address (unix://…);
# `docker.sh stop` stops that daemon by its pid. Its proxy is a closed local port, so no
# pull can leave the machine, and it has no bridge and leaves the host's iptables alone.
set -euo pipefail
source "$(dirname "$0")/env.sh"

cmd=${1:?start|stop}
data="$ROOT/.data/docker"
pidfile="$data/dockerd.pid"
# dockerd's runtime state (and its containerd's sockets) go to a short path of their own, so
# they neither meet another daemon's /var/run/docker nor outgrow a unix socket's 108 bytes.
short="/tmp/berth-docker-$(id -u)"
tag=$(printf %s "$ROOT" | sha256sum | cut -c1-12)
exec_root="$short/$tag-exec"
sock="$data/docker.sock"
[ "${#sock}" -le 100 ] || sock="$short/$tag.sock"
host="unix://$sock"
IMAGE=berth-test/busybox:1

# Debian's client, the one that matches Debian's daemon (another may come first on PATH).
docker_cli() { DOCKER_HOST="$host" /usr/bin/docker "$@"; }

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

install_missing() {
  local want=()
  [ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || want+=(docker.io)
  [ -x /bin/busybox ] || want+=(busybox-static)
  [ "${#want[@]}" = 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing ${want[*]}: install them (apt-get install ${want[*]}) or run as root"
  log "installing ${want[*]} (once per machine)"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >&2
}

start() {
  install_missing
  mkdir -p "$data" "$short" "$exec_root"
  if ! running; then
    rm -f "$pidfile" "$sock"
    [ -f "$data/daemon.json" ] || echo '{}' > "$data/daemon.json"
    log "starting dockerd ($host, data in .data/docker)"
    HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 \
    http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 NO_PROXY= no_proxy= \
      setsid /usr/sbin/dockerd --data-root "$data" --exec-root "$exec_root" \
        --host "$host" --pidfile "$pidfile" --config-file "$data/daemon.json" \
        --bridge=none --iptables=false --ip-masq=false \
        </dev/null >"$data/dockerd.log" 2>&1 &
    local started=$!
    local waited=0
    until docker_cli info >/dev/null 2>&1; do
      if ! kill -0 "$started" 2>/dev/null; then
        tail -20 "$data/dockerd.log" >&2
        die "dockerd did not start (log: .data/docker/dockerd.log)"
      fi
      waited=$((waited + 1))
      if [ "$waited" -ge 120 ]; then
        tail -20 "$data/dockerd.log" >&2
        stop
        die "dockerd did not answer within 60 s (log: .data/docker/dockerd.log)"
      fi
      sleep 0.5
    done
  fi
  # What an earlier, interrupted test run left behind.
  local left
  left=$(docker_cli ps -aq --filter label=berth.deployment)
  [ -z "$left" ] || docker_cli rm -f $left >/dev/null
  if ! docker_cli image inspect "$IMAGE" >/dev/null 2>&1; then
    log "importing $IMAGE from /bin/busybox"
    local rootfs
    rootfs=$(mktemp -d)
    mkdir -p "$rootfs/bin"
    cp /bin/busybox "$rootfs/bin/"
    for a in sh echo sleep cat; do ln -s busybox "$rootfs/bin/$a"; done
    tar -C "$rootfs" -c . | docker_cli import -c 'CMD ["/bin/sh","-c","echo hi"]' - "$IMAGE" >/dev/null
    rm -rf "$rootfs"
  fi
  echo "$host"
}

stop() {
  running || { rm -f "$pidfile"; return 0; }
  local pid
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  # dockerd stops its containers (up to 15 s each, in parallel) and its containerd first.
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
    sleep 0.5
  done
  log "dockerd ($pid) did not stop within 30 s: killing it"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case "$cmd" in
start) start ;;
stop) stop ;;
*) die "usage: docker.sh start | docker.sh stop" ;;
esac
