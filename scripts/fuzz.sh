#!/usr/bin/env bash
# Schema-driven fuzzing of a running Worker with schemathesis: every operation of
# /openapi.json gets generated requests, valid and invalid, and every answer is checked:
# no 5xx, a status code, content type and body the document declares for it.
#
#   BERTH_E2E_URL=http://127.0.0.1:8788 scripts/fuzz.sh     (make test runs it after e2e)
#
#   FUZZ_MAX_EXAMPLES  cases per operation and phase (default 10)
#   FUZZ_SEED          the seed (default 1, so that runs are repeatable); "random" for a new
#                      one each run; a failing run prints the seed to repeat it with
#   FUZZ_WORKERS       concurrent workers (default 1: with more, Hypothesis on Python 3.11
#                      can fail by itself, "AST constructor recursion depth mismatch")
#   FUZZ_PHASES        schemathesis phases (default examples,coverage,fuzzing,stateful)
#
# schemathesis is installed, pinned by tools/fuzz-requirements.txt, into .venv/fuzz when
# missing or when that file changed. The run acts as a fresh admin of a fresh organization
# that tools/fuzz_setup.py fills with real clusters, deployments, members, invites and an
# API key; path ids point at them in most cases, random ids (→ 404) in the rest. One
# operation is left out: the watch stream (GET …/watch), whose answer never ends, so no
# fuzzer's request could complete (tests/e2e/watch.rs and the role matrix cover it). None
# other is: logout revokes only the refresh-token family of the token in its
# body (never the fuzzer's), not the access token the fuzzer sends; deleting, stopping or
# demoting is part of the test, and later cases then see the 403, 404 or 409 that the
# document declares. Removing and changing members always take the setup's members, never
# an id read from an answer: those include the fuzzer's own (GET /v1/me), and a fuzzer that
# removed itself would see nothing but 404s for the rest of the run.
#
# Writes logs/fuzz/: schemathesis.txt (its output), report.json, summary.txt (one line).
# Exits non-zero on any failure or error.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

URL=${BERTH_E2E_URL:?set BERTH_E2E_URL to the running Worker, e.g. http://127.0.0.1:8787}
URL=${URL%/}
MAX_EXAMPLES=${FUZZ_MAX_EXAMPLES:-10}
SEED=${FUZZ_SEED:-1}
[ "$SEED" = random ] && SEED=$(( (RANDOM << 15) | RANDOM ))
WORKERS=${FUZZ_WORKERS:-1}
PHASES=${FUZZ_PHASES:-examples,coverage,fuzzing,stateful}
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance

venv="$ROOT/.venv/fuzz"
req="$ROOT/tools/fuzz-requirements.txt"
if ! cmp -s "$req" "$venv/requirements.txt"; then
  python=$(command -v python3.11 || command -v python3) || die "python3 (3.10 or later) is needed"
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "$python is older than 3.10"
  log "installing schemathesis into .venv/fuzz (once)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$venv/requirements.txt"
fi

out="$ROOT/logs/fuzz"
rm -rf "$out"; mkdir -p "$out"
"$venv/bin/python" "$ROOT/tools/fuzz_setup.py" "$URL" "$out"

log "schemathesis against $URL: $MAX_EXAMPLES examples per operation, seed $SEED"
status=0
# In logs/fuzz, so that nothing schemathesis or Hypothesis may write lands in the tree.
(cd "$out" && "$venv/bin/schemathesis" --no-color --config-file "$out/schemathesis.toml" \
  run "$URL/openapi.json" \
  --checks "$CHECKS" --phases "$PHASES" \
  --max-examples "$MAX_EXAMPLES" --seed "$SEED" --generation-database none \
  --workers "$WORKERS" --request-timeout 30 --exclude-operation-id watch_cluster \
  -H "Authorization: Bearer $(cat "$out/token")" \
  --report json --report-json-path "$out/report.json") > "$out/schemathesis.txt" 2>&1 \
  || status=$?

summary=$("$venv/bin/python" - "$out/report.json" <<'EOF'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    print("schemathesis: no report"); sys.exit()
ops, cases = r["operations"] or {}, r["test_cases"]
failures = cases["unique_failures"] + sum(e["count"] for e in r["errors"])
print(f"schemathesis: {ops.get('tested', 0)} of {ops.get('total', 0)} operations, "
      f"{cases['generated']} cases, {failures} failures")
EOF
)
echo "$summary" > "$out/summary.txt"
if [ "$status" != 0 ] || ! grep -q ', 0 failures$' "$out/summary.txt"; then
  cat "$out/schemathesis.txt"
  echo "$summary (seed $SEED: repeat with FUZZ_SEED=$SEED)"
  die "fuzzing found failures (logs/fuzz/schemathesis.txt)"
fi
tail -25 "$out/schemathesis.txt"
echo "$summary"
