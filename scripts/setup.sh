#!/usr/bin/env bash
# Installs whatever is missing, from registries only (crates.io, npm): the wasm32 target,
# worker-build, wasm-bindgen-cli at exactly Cargo.lock's wasm-bindgen, the npm tooling
# (Node 22, wrangler, dbmate, esbuild, the dashboard's libraries), the doc viewers' assets and
# the dashboard's bundle; with --browser, Debian's chromium too. Fast when all is present.
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

# The docs pages: our HTML plus the viewers vendored from npm (no CDN), and _redirects
# (`/` → `/app/`).
mkdir -p public/vendor/swagger-ui public/vendor/redoc
find web -maxdepth 1 -type f -exec cp -t public/ {} +
cp node_modules/swagger-ui-dist/{swagger-ui-bundle.js,swagger-ui.css} public/vendor/swagger-ui/
cp node_modules/redoc/bundles/redoc.standalone.js public/vendor/redoc/

# The dashboard (web/app, docs/dashboard.md): its page, and its sources bundled by esbuild
# (preact and eventsource-parser from npm, JSX compiled by esbuild) into public/app/.
rm -rf public/app
mkdir -p public/app
cp web/app/index.html public/app/
esbuild web/app/src/main.jsx --bundle --minify --format=esm --target=es2020 \
  --jsx=automatic --jsx-import-source=preact --legal-comments=none \
  --outdir=public/app --entry-names=app --log-level=warning

# The browser tests (`setup.sh --browser`, as test.sh calls it): Debian's Chromium, never a
# browser download.
if [ "${1:-}" = --browser ] && [ ! -x /usr/bin/chromium ]; then
  [ "$(id -u)" = 0 ] || die "the browser tests need /usr/bin/chromium: apt-get install chromium (or run as root)"
  log "installing chromium (once per machine)"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
  [ -x /usr/bin/chromium ] || die "apt-get installed no /usr/bin/chromium"
fi
