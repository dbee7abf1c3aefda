#!/usr/bin/env bash
# `make test`: every tier, each against real parts, then the counts.
#   unit         native, pure modules (cargo nextest --lib)
#   integration  native, the whole HTTP app against a real PostgreSQL, a database per test
#   e2e          the real Worker in workerd (`wrangler dev --test-scheduled`), its real
#                Durable Objects and cron trigger, on a real PostgreSQL
#   fuzzing      schemathesis against that same Worker, answers checked against /openapi.json
#   drivers      the agent's Docker driver against a real Docker daemon (scripts/docker.sh)
#                and its exec driver against real processes; the e2e tier's agents run
#                their deployments in that same daemon
#   browser      the dashboard (/app/) in Debian's headless Chromium, driven by
#                playwright-core, against that same Worker (tests/browser, node --test)
# plus `wrangler deploy --dry-run` and the native coverage total. Any failure fails the run.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
"$ROOT/scripts/setup.sh" --browser

E2E_PORT=${BERTH_E2E_PORT:-8788}
out="$ROOT/logs/test"; rm -rf "$out"; mkdir -p "$out"
cleanup() {
  local status=$?
  trap - INT TERM EXIT
  "$ROOT/scripts/e2e-server.sh" stop || true
  "$ROOT/scripts/docker.sh" stop || true
  "$ROOT/scripts/pg.sh" stop test
  exit "$status"
}
trap cleanup INT TERM EXIT

source "$ROOT/scripts/testdb.sh"

log "lint: rustfmt, clippy on the host and on wasm32 (warnings are errors)"
cargo fmt --all -- --check || die "run 'make fmt'"
cargo clippy --all-targets --features e2e --quiet -- -D warnings
cargo clippy -p berth-cli --all-targets --quiet -- -D warnings
cargo clippy --lib --target wasm32-unknown-unknown --quiet -- -D warnings

log "unit + integration tests (native, under coverage)"
# Stale profiles from earlier builds would skew the figure.
cargo llvm-cov clean --workspace >/dev/null 2>&1 || true
cargo llvm-cov nextest --no-report --lib --test integration --no-fail-fast 2>&1 | tee "$out/native.txt"
native_status=${PIPESTATUS[0]}
cargo llvm-cov report --summary-only > "$out/coverage.txt" 2>/dev/null || true
[ "$native_status" = 0 ] || die "native tests failed"

# The CLI's own unit tests (units, config file, output, the agent's output bound); its
# end-to-end tests drive the binary built here against the Worker, below.
log "the berth CLI: unit tests and the binary the end-to-end tests run"
cargo nextest run -p berth-cli --no-fail-fast -E 'not binary(drivers)' 2>&1 | tee "$out/cli.txt"
[ "${PIPESTATUS[0]}" = 0 ] || die "CLI unit tests failed"
cargo build -p berth-cli --quiet

# The agent's drivers: Docker's against a daemon of the project's own (its socket and data in
# .data/docker, no pull can leave the machine), exec's against real processes. The daemon
# stays up for the end-to-end tests, whose agents run their deployments in it.
log "the agent's drivers: a real Docker daemon (scripts/docker.sh) and real processes"
docker_host=$("$ROOT/scripts/docker.sh" start)
drivers_status=0
BERTH_TEST_DOCKER_HOST="$docker_host" cargo nextest run -p berth-cli --test drivers --no-fail-fast \
  2>&1 | tee "$out/drivers.txt" || drivers_status=$?
[ "$drivers_status" = 0 ] || die "driver tests failed (the daemon's log: .data/docker/dockerd.log)"

log "building the Worker (release wasm)"
scripts/build-worker.sh 2>&1 | tail -3

# The restart test restarts the server and the outage test stops PostgreSQL under it, so
# they run alone, after the others.
log "end-to-end tests against wrangler dev on port $E2E_PORT"
migrate_fresh berth_e2e
key=$("$ROOT/scripts/keygen.sh")
printf 'BERTH_SIGNING_KEY=%s\n' "$key" > "$ROOT/.data/e2e.vars"
rm -rf "$ROOT/.data/wrangler-e2e"
export E2E_DATABASE_URL="$base/berth_e2e"
"$ROOT/scripts/e2e-server.sh" start
BERTH_E2E_URL="http://127.0.0.1:$E2E_PORT" BERTH_E2E_SIGNING_KEY="$key" \
BERTH_E2E_DATABASE_URL="$base/berth_e2e" BERTH_E2E_RESTART="$ROOT/scripts/e2e-server.sh restart" \
BERTH_E2E_CLI="$ROOT/target/debug/berth" BERTH_E2E_DOCKER_HOST="$docker_host" \
BERTH_E2E_PG_STOP="$ROOT/scripts/pg.sh stop test" \
BERTH_E2E_PG_START="PG_EXTRA_OPTS='-c fsync=off -c synchronous_commit=off' $ROOT/scripts/pg.sh start test $PG_PORT" \
  bash -c 'cargo nextest run --features e2e --test e2e --no-fail-fast -E "not test(/restart|outage/)" \
    && cargo nextest run --features e2e --test e2e --no-fail-fast -j 1 -E "test(/restart|outage/)"' \
  2>&1 | tee "$out/e2e.txt"
e2e_status=${PIPESTATUS[0]}
[ "$e2e_status" = 0 ] || { tail -40 "$out/wrangler.txt"; die "end-to-end tests failed"; }

# The dashboard in a real browser, against the same Worker: sign-in, the role's controls,
# submissions from the page, the stream's live updates, the keyboard, phone width; each
# page's screenshots go to logs/test/screenshots/.
log "browser tests: the dashboard in chromium against the Worker on port $E2E_PORT"
browser_started=$SECONDS
BERTH_E2E_URL="http://127.0.0.1:$E2E_PORT" BERTH_SCREENSHOTS="$out/screenshots" \
BERTH_E2E_CLI="$ROOT/target/debug/berth" \
  node --test --test-concurrency=1 --test-timeout=120000 --test-reporter=spec tests/browser/*.test.mjs 2>&1 | tee "$out/browser.txt"
browser_status=${PIPESTATUS[0]}
browser_seconds=$((SECONDS - browser_started))
[ "$browser_status" = 0 ] || { tail -40 "$out/wrangler.txt"; die "browser tests failed"; }

# Against the same Worker, still up: every operation of /openapi.json with generated
# requests, each answer checked against the document (scripts/fuzz.sh; FUZZ_* tune it).
log "schemathesis: schema-driven fuzzing of the Worker on port $E2E_PORT"
fuzz_started=$SECONDS
fuzz_status=0
BERTH_E2E_URL="http://127.0.0.1:$E2E_PORT" "$ROOT/scripts/fuzz.sh" 2>&1 | tee "$out/fuzz.txt" \
  || fuzz_status=$?
fuzz_seconds=$((SECONDS - fuzz_started))
[ "$fuzz_status" = 0 ] || { tail -40 "$out/wrangler.txt"; die "fuzzing failed"; }

log "wrangler deploy --dry-run"
wrangler deploy --dry-run --outdir "$ROOT/build/dry-run" > "$out/deploy.txt" 2>&1 \
  || { cat "$out/deploy.txt"; die "deploy dry-run failed"; }

count() { grep -cE "^\s+PASS .* $2 " "$out/$1" || true; }
wasm="$ROOT/build/index_bg.wasm"
echo
echo "== Berth test summary"
printf '  unit tests (native):                 %s passed\n' "$(count native.txt 'berth')"
printf '  integration tests (native, postgres): %s passed\n' "$(count native.txt 'berth::integration')"
printf '  CLI unit tests (native):             %s passed\n' "$(count cli.txt 'berth-cli(::bin/berth)?')"
printf '  agent driver tests (Docker, exec):   %s passed\n' "$(count drivers.txt 'berth-cli::drivers')"
printf '  end-to-end tests (workerd):           %s passed (CLI included)\n' "$(count e2e.txt 'berth::e2e')"
printf '  browser tests (chromium):             %s passed (%s s; screenshots in logs/test/screenshots)\n' \
  "$(awk '$1 == "ℹ" && $2 == "pass" {print $3}' "$out/browser.txt")" "$browser_seconds"
printf '  fuzzing (workerd):                    %s (%s s)\n' "$(cat "$ROOT/logs/fuzz/summary.txt")" "$fuzz_seconds"
printf '  wrangler deploy --dry-run:            ok\n'
printf '  wasm bundle: %s bytes raw, %s bytes gzip\n' "$(stat -c %s "$wasm")" "$(gzip -9c "$wasm" | wc -c)"
app="$ROOT/public/app"
printf '  dashboard bundle: %s bytes raw, %s bytes gzip (app.js + app.css)\n' \
  "$(cat "$app/app.js" "$app/app.css" | wc -c)" "$(( $(gzip -9c "$app/app.js" | wc -c) + $(gzip -9c "$app/app.css" | wc -c) ))"
awk '/^TOTAL/ {printf "  coverage (native, lines): %s   (edge/ runs only in workerd: see README)\n", $10}' "$out/coverage.txt"
