# Sourced by bench.sh and crash.sh: the deployable shape on one machine — PostgreSQL, a
# transaction-pooling PgBouncer in front of it (Hyperdrive's stand-in), and the release
# Worker under `workerd serve` (no development proxy). Defines start_workerd / kill_workerd,
# and cleans everything up on exit.
PG_PORT=${BERTH_BENCH_PG_PORT:-15434}
BOUNCER_PORT=${BERTH_BENCH_BOUNCER_PORT:-6434}
PORT=${BERTH_BENCH_PORT:-8790}
dir="$ROOT/.data/bench-run"; rm -rf "$dir"; mkdir -p "$dir/do"
pids=()
cleanup() {
  local status=$?
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$ROOT/scripts/pg.sh" stop bench
  exit "$status"
}
trap cleanup INT TERM EXIT

if ! command -v pgbouncer >/dev/null; then
  log "installing PgBouncer (Debian package)"
  apt-get install -y pgbouncer >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y pgbouncer >/dev/null; }
fi

log "PostgreSQL (.data/bench, port $PG_PORT) and PgBouncer (transaction pooling, port $BOUNCER_PORT)"
base=$("$ROOT/scripts/pg.sh" start bench "$PG_PORT")
dbmate --url "$base/berth_bench?sslmode=disable" --migrations-dir migrations --no-dump-schema drop >/dev/null 2>&1 || true
dbmate --url "$base/berth_bench?sslmode=disable" --migrations-dir migrations --no-dump-schema --wait up >/dev/null
cat > "$dir/pgbouncer.ini" <<INI
[databases]
berth_bench = host=127.0.0.1 port=$PG_PORT user=postgres dbname=berth_bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = 20
max_client_conn = 2000
# Fail fast while PostgreSQL is down, so clients get 503 instead of waiting minutes.
query_wait_timeout = 5
server_connect_timeout = 2
server_login_retry = 1
logfile = $dir/pgbouncer.log
INI
chmod -R a+rwX "$dir"
need_port "$BOUNCER_PORT" PgBouncer BERTH_BENCH_BOUNCER_PORT
need_port "$PORT" workerd BERTH_BENCH_PORT
if [ "$(id -u)" = 0 ]; then
  runuser -u postgres -- pgbouncer -q "$dir/pgbouncer.ini" & pids+=($!)
else
  pgbouncer -q "$dir/pgbouncer.ini" & pids+=($!)
fi

log "building the release Worker and serving it with workerd on port $PORT"
"$ROOT/scripts/build-worker.sh" 2>&1 | tail -1
key=$("$ROOT/scripts/keygen.sh")
# `FIELD = ["a", "b"],` for a comma-separated list, nothing for an empty one.
capnp_list() {
  [ -n "$2" ] || return 0
  # shellcheck disable=SC2086
  echo "$1 = [$(printf '"%s",' ${2//,/ } | sed 's/,$//')],"
}
# BENCH_V8_FLAGS (comma-separated, e.g. --trace-gc) go to V8; its output to workerd.log.
v8_flags=$(capnp_list v8Flags "${BENCH_V8_FLAGS:-}")
# BENCH_COMPAT_FLAGS (comma-separated) are compatibility flags the Worker gets on top of its own.
compat_flags=$(capnp_list compatibilityFlags "${BENCH_COMPAT_FLAGS:-}")
cat > "$ROOT/build/bench.capnp" <<CAPNP
using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  $v8_flags
  services = [
    (name = "berth", worker = .berth),
    (name = "pgbouncer", external = (address = "127.0.0.1:$BOUNCER_PORT", tcp = ())),
    (name = "do-disk", disk = (path = "$dir/do", writable = true)),
  ],
  sockets = [(name = "http", address = "127.0.0.1:$PORT", http = (), service = "berth")],
);
const berth :Workerd.Worker = (
  modules = [
    (name = "index.js", esModule = embed "index.js"),
    (name = "index_bg.wasm", wasm = embed "index_bg.wasm"),
  ],
  compatibilityDate = "2025-09-01",
  $compat_flags
  bindings = [
    (name = "HYPERDRIVE", hyperdrive = (designator = "pgbouncer", database = "berth_bench",
                                        user = "postgres", password = "berth", scheme = "postgresql")),
    (name = "BERTH_SIGNING_KEY", text = "$key"),
    (name = "BERTH_ISSUER", text = "https://berth.dev"),
    (name = "BERTH_AUDIENCE", text = "berth-api"),
    # The benchmark's few callers send far more than a person would: a budget they never
    # reach, so the limiter's work is measured without refusing anyone.
    (name = "BERTH_RATE_LIMIT", text = "4000000000"),
    (name = "THROTTLE", durableObjectNamespace = "Throttle"),
    (name = "CLUSTER", durableObjectNamespace = "ClusterObject"),
  ],
  durableObjectNamespaces = [
    (className = "Throttle", uniqueKey = "berth-throttle", enableSql = true),
    (className = "ClusterObject", uniqueKey = "berth-cluster", enableSql = true),
  ],
  durableObjectStorage = (localDisk = "do-disk"),
);
CAPNP
workerd_pid=
start_workerd() {
  # BENCH_WORKERD_ARGS: more arguments, e.g. --inspector-addr=127.0.0.1:9230 for a profiler.
  # shellcheck disable=SC2086
  node_modules/@cloudflare/workerd-linux-64/bin/workerd serve "$ROOT/build/bench.capnp" --experimental ${BENCH_WORKERD_ARGS:-} \
    >> "$dir/workerd.log" 2>&1 &
  workerd_pid=$!
  pids+=("$workerd_pid")
  for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/health" 2>/dev/null && break; sleep 0.1; done
  curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null || { tail -20 "$dir/workerd.log"; die "workerd did not serve"; }
}
kill_workerd() {
  kill -KILL "$workerd_pid" 2>/dev/null || true
  wait "$workerd_pid" 2>/dev/null || true
}
start_workerd
curl -fsS "http://127.0.0.1:$PORT/health?deep=1" >/dev/null || { cat "$dir/workerd.log"; die "no database through workerd"; }

