#!/usr/bin/env bash
# `make coverage`: the native tests (unit + integration on a real PostgreSQL) under
# cargo-llvm-cov; HTML report in coverage/html and a one-line total. `edge/` is wasm-only and
# exercised by the end-to-end tests in workerd, so it is not part of this figure.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
"$ROOT/scripts/setup.sh"
trap '"$ROOT/scripts/pg.sh" stop test' EXIT
source "$ROOT/scripts/testdb.sh"
# Stale profiles from earlier builds would skew the figure.
cargo llvm-cov clean --workspace >/dev/null 2>&1 || true
cargo llvm-cov nextest --no-report --lib --test integration
cargo llvm-cov report --html --output-dir coverage >/dev/null
cargo llvm-cov report --summary-only | awk '/^TOTAL/ {print "coverage (native, lines): " $10 "  — report: coverage/html/index.html"}'
