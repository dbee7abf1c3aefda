#!/usr/bin/env bash
# Installs whatever is missing, from registries only (crates.io, npm): the wasm32 target,
# worker-build, wasm-bindgen-cli at exactly Cargo.lock's wasm-bindgen, the npm tooling
# (Node 22, wrangler, dbmate), and the doc viewers' assets. Fast when all is present.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

WORKER_BUILD_VERSION=0.8.7
if ! worker-build --version 2>/dev/null | grep -q "$WORKER_BUILD_VERSION"; then
  log "installing worker-build $WORKER_BUILD_VERSION (once per machine, several minutes)"
  cargo install worker-build --version "$WORKER_BUILD_VERSION" --locked
fi

bindgen=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
[ -n "$bindgen" ] || die "wasm-bindgen not found in Cargo.lock"
if ! "$WASM_BINDGEN_BIN" --version 2>/dev/null | grep -q " $bindgen\$"; then
  log "installing wasm-bindgen-cli $bindgen (once per machine, several minutes)"
  # No --locked: its lockfile pins a webpki-roots release the registry mirror lacks.
  cargo install wasm-bindgen-cli --version "$bindgen" --force
fi

if ! cargo llvm-cov --version >/dev/null 2>&1; then
  log "installing cargo-llvm-cov (once per machine)"
  rustup component add llvm-tools-preview
  cargo install cargo-llvm-cov --locked
fi

# promtool (Debian's `prometheus` package) checks the metrics scrape in the tests, which fail
# without it. Only promtool is used: RUNLEVEL=1 keeps the package's own server from starting.
if ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    log "installing promtool (Debian's prometheus package, once per machine)"
    apt-get update -qq
    RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      prometheus >/dev/null
  else
    log "note: promtool is missing (apt-get install prometheus, as root): the metrics tests will fail"
  fi
fi

if [ ! -x node_modules/.bin/wrangler ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  log "installing npm tooling"
  # Not `npm ci`: the registry mirror lacks dbmate's other-platform optional packages, so the
  # lockfile cannot list them and `npm ci` refuses it; `npm install` follows the same lockfile
  # (the pinned versions) and skips the optional packages it cannot fetch.
  npm install --no-audit --no-fund --loglevel=error
fi
node --version | grep -q '^v22\.' || die "node 22 from node_modules is not first on PATH"

# The docs pages: our HTML plus the viewers vendored from npm (no CDN).
mkdir -p public/vendor/swagger-ui public/vendor/redoc
cp web/* public/
cp node_modules/swagger-ui-dist/{swagger-ui-bundle.js,swagger-ui.css} public/vendor/swagger-ui/
cp node_modules/redoc/bundles/redoc.standalone.js public/vendor/redoc/
