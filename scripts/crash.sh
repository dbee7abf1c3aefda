#!/usr/bin/env bash
# `make crash`: the crash campaign (not part of `make test`). Under load (benches/crash.rs),
# kills workerd at random moments CRASH_KILLS times (default 10) and restarts it, then stops
# PostgreSQL for a few seconds mid-load and starts it again. The load program then verifies
# that nothing acknowledged was lost, usage is exact, and the queue drains. Meanwhile the load
# program runs CRASH_AGENTS exec agents and SIGKILLs/restarts one CRASH_AGENT_KILLS times,
# then checks that no deployment ran twice at once and that status and placement agree.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
"$ROOT/scripts/setup.sh"
source "$ROOT/scripts/stack.sh"

kills=${CRASH_KILLS:-10}
seconds=$(( kills * 3 + 12 ))
# The agents' binary first: building it after the load program would rebuild the program
# (they share target/release), and the kills would start while it compiles.
log "building the release berth binary (the campaign's agents)"
cargo build --release -p berth-cli -q
cargo bench --bench crash --no-run -q 2>/dev/null
log "load for ${seconds}s; $kills workerd kills, then a PostgreSQL restart"
BERTH_URL="http://127.0.0.1:$PORT" BERTH_DB="$base/berth_bench" BENCH_SECONDS=$seconds \
  BERTH_BIN="$ROOT/target/release/berth" BENCH_LOG_DIR="$dir" \
  cargo bench --bench crash -q 2>/dev/null > "$dir/crash.txt" & load=$!
sleep 2
for i in $(seq 1 "$kills"); do
  sleep "0.$(( RANDOM % 10 ))$(( RANDOM % 10 ))"; sleep $(( RANDOM % 2 + 1 ))
  kill_workerd
  start_workerd
  echo "  kill $i/$kills: workerd killed and restarted"
done
"$ROOT/scripts/pg.sh" stop bench
echo "  PostgreSQL stopped"
sleep 3
"$ROOT/scripts/pg.sh" start bench "$PG_PORT" >/dev/null
echo "  PostgreSQL started again"
wait "$load" && status=0 || status=$?
cat "$dir/crash.txt"
echo "workerd kills survived: $kills"
exit "$status"
