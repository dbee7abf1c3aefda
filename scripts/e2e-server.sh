#!/usr/bin/env bash
# The Worker under end-to-end test: `e2e-server.sh start|stop|restart`. wrangler dev with
# --test-scheduled on BERTH_E2E_PORT, its local Durable Object state in .data/wrangler-e2e
# (kept across restarts, as a real restart keeps it), Hyperdrive pointed at the e2e database.
# Needs E2E_DATABASE_URL and .data/e2e.vars (written by test.sh). Every caller's budget is
# BERTH_E2E_RATE_LIMIT requests a minute (default 1,000,000: the tests and the fuzzer call far
# more than a person would; the rate-limit test restarts it with a small one).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
PORT=${BERTH_E2E_PORT:-8788}
pidfile="$ROOT/.data/e2e-wrangler.pid"
logfile="$ROOT/logs/test/wrangler.txt"

stop() {
  if [ -f "$pidfile" ]; then
    local pid; pid=$(cat "$pidfile")
    # wrangler's node and the workerd processes it spawned.
    pkill -TERM -P "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  fi
  # Nothing may keep the port.
  for _ in $(seq 1 50); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/health" || break
    sleep 0.1
  done
}

start() {
  mkdir -p "$(dirname "$logfile")"
  need_port "$PORT" "the end-to-end Worker" BERTH_E2E_PORT
  need_port $((PORT + 1000)) "its inspector, BERTH_E2E_PORT + 1000" BERTH_E2E_PORT
  CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_HYPERDRIVE="${E2E_DATABASE_URL:?}" \
    setsid wrangler dev --local --ip 127.0.0.1 --port "$PORT" --inspector-port $((PORT + 1000)) \
    --test-scheduled --show-interactive-dev-session=false --log-level "${BERTH_E2E_LOG_LEVEL:-log}" \
    --env-file "$ROOT/.data/e2e.vars" --var "BERTH_RATE_LIMIT:${BERTH_E2E_RATE_LIMIT:-1000000}" \
    --persist-to "$ROOT/.data/wrangler-e2e" \
    >> "$logfile" 2>&1 &
  echo $! > "$pidfile"
  for _ in $(seq 1 240); do
    curl -fsS -o /dev/null "http://127.0.0.1:$PORT/health" 2>/dev/null && return 0
    kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -30 "$logfile"; die "wrangler dev exited"; }
    sleep 0.25
  done
  tail -30 "$logfile"; die "wrangler dev did not answer on port $PORT"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  *) die "usage: e2e-server.sh start|stop|restart" ;;
esac
