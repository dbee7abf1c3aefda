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

source "$ROOT/scripts/stack.sh"

log "load program against workerd"
BERTH_URL="http://127.0.0.1:$PORT" BENCH_RESULTS="$dir/results.txt" cargo bench --bench load 2>&1 \
  | grep -v -E '^\s+(Compiling|Finished|Running)'

log "ceilings: the same statements through the same pooler (pgbench, 16 clients, ${BENCH_SECONDS:-10} s)"
export PGPASSWORD=berth
q() { psql -qAt "$base/berth_bench" -c "$1"; }
user_id=$(q "select id from users order by created_at desc limit 1")
cluster_id=$(q "select id from clusters order by created_at desc limit 1")
org_id=$(q "select org_id from clusters where id = '$cluster_id'")
cat > "$dir/me.sql" <<SQL
select id, email, name, password_hash, created_at from users where id = '$user_id';
select o.id, o.name, m.role from memberships m join organizations o on o.id = m.org_id where m.user_id = '$user_id' order by m.joined_at, o.id;
SQL
# A submission unbatched: the Worker's authorization reads, then the write transaction the
# cluster's object commits (the object batches many of these into one transaction).
cat > "$dir/submit.sql" <<SQL
select id, org_id, name, cpu_millis, memory_mib, gpus, queueing, preemption, created_at, updated_at from clusters where id = '$cluster_id';
select role from memberships where org_id = '$org_id' and user_id = '$user_id';
begin;
select 1 from clusters where id = '$cluster_id' for update;
insert into deployments (id, cluster_id, org_id, name, image, cpu_millis, memory_mib, gpus, priority, status, enqueued_at)
  values (gen_random_uuid(), '$cluster_id', '$org_id', 'pgbench', 'nginx', 1, 1, 0, 0, 'cancelled', now()) returning id;
insert into deployment_events (deployment_id, kind, at) select id, 'created', now() from deployments where cluster_id = '$cluster_id' limit 1;
commit;
SQL
pg() { # script, extra flags
  pgbench -n $2 -c 16 -j 2 -T "${BENCH_SECONDS:-10}" -f "$dir/$1.sql" \
    "postgres://postgres:berth@127.0.0.1:$BOUNCER_PORT/berth_bench" 2>/dev/null | awk '/^tps/ {printf "%d", $3}'
}
me_ceiling=$(pg me -C)
submit_ceiling=$(pg submit -C)
api() { awk -v k="$1" '$1 == k {print $2}' "$dir/results.txt"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "n/a" }'; }
echo
printf '%-34s %10s %16s %8s\n' "endpoint" "API req/s" "ceiling (tx/s)" "ratio"
printf '%-34s %10s %16s %8s\n' "GET /v1/me" "$(api me)" "$me_ceiling" "$(ratio "$(api me)" "$me_ceiling")"
printf '%-34s %10s %16s %8s\n' "POST deployments (16 conns)" "$(api submit16)" "$submit_ceiling" "$(ratio "$(api submit16)" "$submit_ceiling")"
printf '%-34s %10s %16s %8s\n' "POST deployments (64 conns)" "$(api submit64)" "$submit_ceiling" "$(ratio "$(api submit64)" "$submit_ceiling")"
echo "(ceilings: pgbench -C, a new pooled connection per transaction, as a stateless Worker opens one per request)"
