#!/usr/bin/env bash
# The release Worker bundle (build/index.js + build/index_bg.wasm): worker-build, then the
# objects' classes made RPC-capable (scripts/rpc-classes.mjs says why). wrangler's
# [build] command, `make build`, the tests and the bench all build through here.
set -euo pipefail
cd "$(dirname "$0")/.."
worker-build --release "$@"
node scripts/rpc-classes.mjs build/index.js ClusterObject Throttle
