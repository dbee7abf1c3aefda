#!/usr/bin/env bash
# `make bench`: Berth on the runtime users deploy to — `workerd serve` on the release bundle
# (no wrangler dev proxy in front) — with a transaction-pooling PgBouncer in front of
# PostgreSQL, as Hyperdrive pools in production. Then the load program (benches/load.rs)
# drives it and checks the invariants, and pgbench runs the same statements through the same
# pooler as the ceiling, in the same run. Last, the dispatch phase (benches/dispatch.rs): real
# `berth agent` processes run deployments, against a baseline without agents in the same run.
# BENCH_ONLY=dispatch runs that phase alone. Then the watch phase (benches/watch.rs): submissions
# with 100 watch streams open against none; BENCH_ONLY=watch alone. Then the fixed-rate
# latency phase (benches/latency.rs); BENCH_ONLY=latency alone.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
"$ROOT/scripts/setup.sh"

source "$ROOT/scripts/stack.sh"

# BENCH_ONLY=dispatch skips the load program and its ceilings.
dispatch() {
  # Its agents: the release `berth` binary.
  log "building the release berth binary (the dispatch phase's agents)"
  cargo build --release -p berth-cli -q
  log "dispatch: ${DISPATCH_AGENTS:-10} berth agents (exec driver) against workerd"
  BERTH_URL="http://127.0.0.1:$PORT" BERTH_DB="$base/berth_bench" BERTH_BIN="$ROOT/target/release/berth" \
    BENCH_LOG_DIR="$dir" cargo bench --bench dispatch 2>&1 | grep -v -E '^\s+(Compiling|Finished|Running)'
}
if [ "${BENCH_ONLY:-}" = dispatch ]; then dispatch; exit 0; fi

# What open watch streams cost submissions (benches/watch.rs); BENCH_ONLY=watch alone.
watch() {
  log "watch: submissions with ${WATCHERS:-100} watch streams open, against none, in the same run"
  BERTH_URL="http://127.0.0.1:$PORT" BERTH_DB="$base/berth_bench" BENCH_WORKERD_PID="$workerd_pid" \
    cargo bench --bench watch 2>&1 | grep -v -E '^\s+(Compiling|Finished|Running)'
}
if [ "${BENCH_ONLY:-}" = watch ]; then watch; exit 0; fi

# Each read route, submissions and /health at fixed offered rates, open loop
# (benches/latency.rs; LATENCY_RATES, default 100,250); BENCH_ONLY=latency alone.
latency() {
  log "latency: fixed offered rates (${LATENCY_RATES:-100,250} requests/s), open loop"
  BERTH_URL="http://127.0.0.1:$PORT" cargo bench --bench latency 2>&1 | grep -v -E '^\s+(Compiling|Finished|Running)'
}
if [ "${BENCH_ONLY:-}" = latency ]; then latency; exit 0; fi

log "load program against workerd"
BERTH_URL="http://127.0.0.1:$PORT" BENCH_RESULTS="$dir/results.txt" cargo bench --bench load 2>&1 \
  | grep -v -E '^\s+(Compiling|Finished|Running)'

log "ceilings: the same statements through the same pooler (pgbench, 16 clients, ${BENCH_SECONDS:-10} s)"
export PGPASSWORD=berth
q() { psql -qAt "$base/berth_bench" -c "$1"; }
# The busiest cluster of the run and its owner, as the load program's reads used them.
cluster_id=$(q "select cluster_id from deployments group by cluster_id order by count(*) desc limit 1")
org_id=$(q "select org_id from clusters where id = '$cluster_id'")
user_id=$(q "select user_id from memberships where org_id = '$org_id' and role = 'admin' limit 1")
deployment_id=$(q "select id from deployments where cluster_id = '$cluster_id' order by id limit 1")
cluster_cols="c.id, c.org_id, c.name, c.cpu_millis, c.memory_mib, c.gpus, c.queueing, c.preemption, c.created_at, c.updated_at"
# Each endpoint's statements, as the Worker sends them (src/db): the caller's role is read
# with the resource in one join.
cluster_read="select $cluster_cols, m.role from clusters c left join memberships m on m.org_id = c.org_id and m.user_id = '$user_id' where c.id = '$cluster_id';"
cat > "$dir/me.sql" <<SQL
select id, email, name, password_hash, created_at from users where id = '$user_id';
select o.id, o.name, m.role from memberships m join organizations o on o.id = m.org_id where m.user_id = '$user_id' order by m.joined_at, o.id;
SQL
# A cluster and its queue: the Worker opens no connection; the cluster's object reads the row
# with the caller's role (the same one statement) on its kept reading connection and answers
# the usage or the page from memory. Their ceiling is that statement on a kept connection.
cat > "$dir/view.sql" <<SQL
$cluster_read
SQL
cat > "$dir/running.sql" <<SQL
$cluster_read
select * from deployments where cluster_id = '$cluster_id' and status = 'running' order by id limit 51;
SQL
cat > "$dir/deployment.sql" <<SQL
select d.*, m.role from (select * from deployments where id = '$deployment_id') d left join memberships m on m.org_id = d.org_id and m.user_id = '$user_id';
select at, kind, reason, by_deployment from deployment_events where deployment_id = '$deployment_id' order by id;
SQL
# A submission unbatched: one locking write transaction per submission, with the role
# lookup the cluster's object does inside it (the object batches many into one).
cat > "$dir/submit.sql" <<SQL
begin;
select 1 from clusters where id = '$cluster_id' for update;
select user_id, role from memberships where org_id = '$org_id' and user_id = any(array['$user_id'::uuid]);
insert into deployments (id, cluster_id, org_id, name, image, cpu_millis, memory_mib, gpus, priority, status, enqueued_at)
  values (gen_random_uuid(), '$cluster_id', '$org_id', 'pgbench', 'nginx', 1, 1, 0, 0, 'cancelled', now()) returning id;
insert into deployment_events (deployment_id, cluster_id, kind, at) select id, cluster_id, 'created', now() from deployments where cluster_id = '$cluster_id' limit 1;
commit;
SQL
pg() { # script, extra flags
  pgbench -n $2 -c 16 -j 2 -T "${BENCH_SECONDS:-10}" -f "$dir/$1.sql" \
    "postgres://postgres:berth@127.0.0.1:$BOUNCER_PORT/berth_bench" 2>/dev/null | awk '/^tps/ {printf "%d", $3}'
}
api() { awk -v k="$1" '$1 == k {print $2}' "$dir/results.txt"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "n/a" }'; }
echo
printf '%-40s %10s %16s %8s\n' "endpoint" "API req/s" "ceiling (tx/s)" "ratio"
show() { # label, results key, ceiling
  printf '%-40s %10s %16s %8s\n' "$1" "$(api "$2")" "$3" "$(ratio "$(api "$2")" "$3")"
}
row() { show "$1" "$2" "$(pg "$3" "$4")"; } # label, results key, pgbench script, flags
row "GET /v1/me" me me -C
view_ceiling=$(pg view "")
show "GET /v1/clusters/{id}" cluster "$view_ceiling"
show "GET …/queue" queue "$view_ceiling"
row "GET …/deployments?status=running" running running -C
row "GET /v1/deployments/{id}" deployment deployment -C
submit_ceiling=$(pg submit "")
show "POST deployments (16 conns)" submit16 "$submit_ceiling"
show "POST deployments (64 conns)" submit64 "$submit_ceiling"
show "object's own rate (64 conns)" object64 "$submit_ceiling"
echo "(reads through the Worker's own connection: pgbench -C, a new pooled connection per transaction, as a stateless"
echo " Worker opens one per request; a cluster, its queue and submissions: the object keeps its connections, so their"
echo " ceilings run on a kept one — submissions' is the unbatched write transaction)"

echo
dispatch

echo
watch

echo
latency
