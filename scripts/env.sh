# Sourced by every script: the project's tools first on PATH, wrangler kept inside the
# project, and every binary worker-build would otherwise download from GitHub pointed at a
# local one.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT
export PATH="$ROOT/node_modules/.bin:$HOME/.cargo/bin:$PATH"
export WASM_BINDGEN_BIN="$HOME/.cargo/bin/wasm-bindgen"
export ESBUILD_BIN="$ROOT/node_modules/.bin/esbuild"
export WRANGLER_SEND_METRICS=false
export CLOUDFLARE_CF_FETCH_ENABLED=false
export XDG_CONFIG_HOME="$ROOT/.xdg/config"
export XDG_CACHE_HOME="$ROOT/.xdg/cache"
export WRANGLER_LOG_PATH="$ROOT/logs/wrangler"
export NO_UPDATE_NOTIFIER=1
mkdir -p "$ROOT/logs" "$XDG_CONFIG_HOME" "$XDG_CACHE_HOME"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
