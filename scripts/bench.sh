#!/usr/bin/env bash
# `make bench`: Berth on the runtime users deploy to — `workerd serve` on the release bundle
# (no wrangler dev proxy in front) — with a transaction-pooling PgBouncer in front of
# PostgreSQL, as Hyperdrive pools in production. Then the load program (benches/load.rs)
# drives it and checks the invariants, and pgbench runs the same statements through the same
# pooler as the ceiling, in the same run.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
"$ROOT/scripts/setup.sh"

PG_PORT=${BERTH_BENCH_PG_PORT:-55434}
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
logfile = $dir/pgbouncer.log
INI
chmod -R a+rwX "$dir"
if [ "$(id -u)" = 0 ]; then
  runuser -u postgres -- pgbouncer -q "$dir/pgbouncer.ini" & pids+=($!)
else
  pgbouncer -q "$dir/pgbouncer.ini" & pids+=($!)
fi

log "building the release Worker and serving it with workerd on port $PORT"
worker-build --release 2>&1 | tail -1
key=$("$ROOT/scripts/keygen.sh")
cat > "$ROOT/build/bench.capnp" <<CAPNP
using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
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
  bindings = [
    (name = "HYPERDRIVE", hyperdrive = (designator = "pgbouncer", database = "berth_bench",
                                        user = "postgres", password = "berth", scheme = "postgresql")),
    (name = "BERTH_SIGNING_KEY", text = "$key"),
    (name = "BERTH_ISSUER", text = "https://berth.dev"),
    (name = "BERTH_AUDIENCE", text = "berth-api"),
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
node_modules/@cloudflare/workerd-linux-64/bin/workerd serve "$ROOT/build/bench.capnp" --experimental \
  > "$dir/workerd.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/health" 2>/dev/null && break; sleep 0.1; done
curl -fsS "http://127.0.0.1:$PORT/health?deep=1" >/dev/null || { cat "$dir/workerd.log"; die "workerd did not serve"; }

log "load program against workerd"
BERTH_URL="http://127.0.0.1:$PORT" cargo bench --bench load 2>&1 | grep -v -E '^\s+(Compiling|Finished|Running)'

log "ceiling: the same statements through the same pooler (pgbench, 16 clients, a new connection per transaction like a stateless Worker)"
export PGPASSWORD=berth
user_id=$(psql -qAt "$base/berth_bench" -c "select id from users order by created_at limit 1")
cat > "$dir/me.sql" <<SQL
select id, email, name, password_hash, created_at from users where id = '$user_id';
select o.id, o.name, m.role from memberships m join organizations o on o.id = m.org_id where m.user_id = '$user_id' order by m.joined_at, o.id;
SQL
cat > "$dir/health.sql" <<SQL
select 1;
SQL
for script in health me; do
  tps=$(pgbench -n -C -c 16 -j 2 -T "${BENCH_SECONDS:-10}" -f "$dir/$script.sql" \
        "postgres://postgres:berth@127.0.0.1:$BOUNCER_PORT/berth_bench" 2>/dev/null \
        | awk '/^tps/ {print int($3)}')
  printf '  pgbench %-8s %8s transactions/s (new connection each)\n' "$script" "$tps"
done
