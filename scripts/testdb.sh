# Sourced by test.sh and coverage.sh: starts the test PostgreSQL (.data/test) and prepares
# the migrated template every integration test clones its own database from.
PG_PORT=${BERTH_TEST_PG_PORT:-15433}
log "starting the test PostgreSQL (.data/test, port $PG_PORT)"
# Durability is not under test here; speed is welcome.
base=$(PG_EXTRA_OPTS="-c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  "$ROOT/scripts/pg.sh" start test "$PG_PORT")
# Each integration test drops its database (t_…) when it ends; a run that was killed leaves
# some behind, dropped here.
for db in $(psql "$base/postgres" -Atc "select datname from pg_database where datname like 't\_%'"); do
  psql "$base/postgres" -qc "drop database if exists \"$db\" with (force)"
done
migrate_fresh() { # database name: dropped, recreated and migrated with dbmate
  dbmate --url "$base/$1?sslmode=disable" --migrations-dir migrations --no-dump-schema drop >/dev/null 2>&1 || true
  dbmate --url "$base/$1?sslmode=disable" --migrations-dir migrations --no-dump-schema --wait up >/dev/null
}
migrate_fresh berth_template
export BERTH_TEST_PG="$base" BERTH_TEST_TEMPLATE=berth_template
