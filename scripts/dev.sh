#!/usr/bin/env bash
# `make dev`: installs what is missing, starts a project-local PostgreSQL unless
# DATABASE_URL is set, applies the migrations, writes a development signing key on first
# run, then serves the Worker with `wrangler dev` on BERTH_PORT (8787), fires the cron
# trigger every minute beside it, and runs a local agent on this machine
# (scripts/dev-agent.sh; BERTH_DEV_AGENT=0 leaves it out). Ctrl-C stops everything it
# started; data is kept.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
"$ROOT/scripts/setup.sh"

PORT=${BERTH_PORT:-8787}
PG_PORT=${BERTH_PG_PORT:-15432}
pids=()
started_pg=
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do
    # The agent runs in a process group of its own (setsid): the whole group goes.
    kill -- "-$p" 2>/dev/null || true
    pkill -P "$p" 2>/dev/null || true
    kill "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  [ -n "$started_pg" ] && "$ROOT/scripts/pg.sh" stop dev
  log "stopped"
}
trap cleanup INT TERM EXIT

if [ -z "${DATABASE_URL:-}" ]; then
  log "starting the project-local PostgreSQL (.data/dev, port $PG_PORT)"
  DATABASE_URL="$("$ROOT/scripts/pg.sh" start dev "$PG_PORT")/berth"
  started_pg=1
fi
log "applying migrations"
dbmate --url "$DATABASE_URL?sslmode=disable" --migrations-dir migrations --no-dump-schema --wait up

if [ ! -f .dev.vars ]; then
  log "writing a development signing key to .dev.vars"
  echo "BERTH_SIGNING_KEY=$("$ROOT/scripts/keygen.sh")" > .dev.vars
fi

export CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_HYPERDRIVE="$DATABASE_URL"
need_port "$PORT" "wrangler dev" BERTH_PORT
need_port $((PORT + 1000)) "wrangler dev's inspector, BERTH_PORT + 1000" BERTH_PORT
log "serving Berth on http://127.0.0.1:$PORT (docs: /docs, /redoc)"
wrangler dev --local --ip 127.0.0.1 --port "$PORT" --inspector-port $((PORT + 1000)) \
  --show-interactive-dev-session=false --persist-to .data/wrangler &
pids+=($!)

# wrangler dev does not fire crons by itself: fire the trigger on its schedule.
( while sleep 60; do
    curl -fsS -o /dev/null "http://127.0.0.1:$PORT/cdn-cgi/handler/scheduled?cron=*+*+*+*+*" || true
  done ) &
pids+=($!)

# A local agent, so that a deployment really runs here (its account and token are in
# .data/dev-agent/).
if [ "${BERTH_DEV_AGENT:-1}" != 0 ]; then
  BERTH_URL="http://127.0.0.1:$PORT" setsid "$ROOT/scripts/dev-agent.sh" &
  pids+=($!)
fi
wait "${pids[0]}"
