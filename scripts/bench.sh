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
