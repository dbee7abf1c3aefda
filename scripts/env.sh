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

# The sockets on local TCP port $1, one a line (state, local, peer, process when visible).
# Those a closed server leaves behind while its peers finish (TIME-WAIT, FIN-WAIT-1/2,
# CLOSING, LAST-ACK) only with $2 = all: a server that sets SO_REUSEADDR (PostgreSQL,
# workerd) binds over them. Empty when nothing holds the port.
port_holders() {
  if command -v ss >/dev/null; then
    ss -Htanp "sport = :$1" 2>/dev/null \
      | awk -v all="${2:-}" 'all == "all" || $1 !~ /^(TIME-WAIT|FIN-WAIT-[12]|CLOSING|LAST-ACK)$/ {print "  " $1, $4, ($1 == "LISTEN" ? "" : "peer " $5), $6}'
  elif (: </dev/tcp/127.0.0.1/"$1") 2>/dev/null; then
    echo "  a listener on 127.0.0.1:$1"
  fi
}

# Dies when local TCP port $1 (what $2 names; $3 is the variable that moves it) is taken,
# saying by what. A port in the ephemeral range works, but any client socket can take it.
need_port() {
  local holders lo hi
  holders=$(port_holders "$1")
  [ -z "$holders" ] || die "port $1 ($2) is in use by:
$holders
stop that, or set $3 to a free port"
  if { read -r lo hi < /proc/sys/net/ipv4/ip_local_port_range; } 2>/dev/null \
    && [ "$1" -ge "$lo" ] && [ "$1" -le "$hi" ]; then
    log "note: port $1 ($2) is inside the ephemeral range $lo-$hi, where any client socket may take it"
  fi
  return 0
}
