#!/usr/bin/env bash
# `make dev`'s local agent: once the Worker on BERTH_URL answers, makes sure a development
# account (dev@berth.local), an organization `dev`, a cluster `local` (this machine's CPUs and
# memory) and an agent token exist (kept in .data/dev-agent/, mode 0600), then runs
# `berth agent` on this machine: the Docker driver when a Docker daemon answers
# (DOCKER_HOST or /var/run/docker.sock), else the exec driver (the deployment's command as a
# plain process). Its log is logs/dev-agent.log. `make dev` starts it unless
# BERTH_DEV_AGENT=0; it runs until killed.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

URL=${BERTH_URL:?BERTH_URL}
dir="$ROOT/.data/dev-agent"
mkdir -p "$dir" && chmod 700 "$dir"
export BERTH_CONFIG="$dir/config.toml" BERTH_URL="$URL"
email=dev@berth.local
berth() { "$ROOT/target/debug/berth" "$@"; }

for _ in $(seq 1 240); do
  curl -fsS -o /dev/null "$URL/health" 2>/dev/null && break
  sleep 0.5
done
log "building the berth CLI for the local agent"
cargo build -p berth-cli --quiet

[ -f "$dir/password" ] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$dir/password")
if ! berth login --email "$email" --password-stdin < "$dir/password" >/dev/null 2>&1; then
  berth register --email "$email" --name "Local developer" --password-stdin < "$dir/password" >/dev/null
  berth login --email "$email" --password-stdin < "$dir/password" >/dev/null
fi
berth org get dev >/dev/null 2>&1 || berth org create dev >/dev/null
berth org use dev >/dev/null
cpus=$(nproc)
mem_mib=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 ))
berth cluster get local >/dev/null 2>&1 \
  || berth cluster create local --cpu "$cpus" --memory "${mem_mib}Mi" >/dev/null
cluster=$(berth cluster get local -o json | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')

driver=exec
docker_host=${DOCKER_HOST:-unix:///var/run/docker.sock}
if [ -x /usr/bin/docker ] && DOCKER_HOST="$docker_host" /usr/bin/docker info >/dev/null 2>&1; then
  driver=docker
fi

token_file="$dir/token"
run_agent() {
  BERTH_AGENT_TOKEN=$(cat "$token_file") DOCKER_HOST="$docker_host" \
    berth agent --cluster "$cluster" --driver "$driver" --name "$(hostname)-dev" \
    >> "$ROOT/logs/dev-agent.log" 2>&1
}
mkdir -p "$ROOT/logs"
log "local agent: $driver driver on cluster local ($cluster); its log is logs/dev-agent.log"
log "try it: BERTH_CONFIG=$BERTH_CONFIG target/debug/berth deploy --cluster local --image busybox \\"
log "          --cpu 100m --memory 32Mi hello -- sh -c 'echo hello; sleep 5'   (then: berth get hello)"
while true; do
  if [ ! -s "$token_file" ]; then
    (umask 077; berth agent-token create local "$(hostname)-dev" 2>/dev/null | tail -1 > "$token_file")
  fi
  # An agent that ends (its token refused after a database reset, say) gets a new token.
  run_agent || rm -f "$token_file"
  sleep 2
done
