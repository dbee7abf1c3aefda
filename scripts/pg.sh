#!/usr/bin/env bash
# A project-local PostgreSQL: `pg.sh start NAME PORT` creates (first time) and starts the
# cluster in .data/NAME and prints its URL; `pg.sh stop NAME`. A start that cannot bind
# says which port is taken, and by what. Debian's binaries refuse to run as root, so as
# root the cluster runs as the `postgres` user.
set -euo pipefail
source "$(dirname "$0")/env.sh"

cmd=${1:?start|stop}; name=${2:?name}; port=${3:-}
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bindir/initdb" ] || die "PostgreSQL server binaries not found (apt-get install postgresql)"
data="$ROOT/.data/$name"

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ "$(id -u)" = 0 ]; then
  # The postgres user must reach the data folder; a checkout under /root cannot be reached,
  # so the data then lives in /var/tmp, linked from .data.
  mkdir -p "$ROOT/.data"
  if ! runuser -u postgres -- test -x "$ROOT/.data"; then
    outside="/var/tmp/berth-$(printf %s "$ROOT" | sha256sum | cut -c1-12)/$name"
    mkdir -p "$outside"; chown postgres: "$outside" "$(dirname "$outside")"
    [ -L "$data" ] || ln -sfn "$outside" "$data"
    data="$outside"
  fi
fi

case "$cmd" in
start)
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown postgres: "$data"
    as_owner "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  [ -n "$port" ] || die "usage: pg.sh start NAME PORT"
  case "$name" in dev) var=BERTH_PG_PORT ;; test) var=BERTH_TEST_PG_PORT ;; *) var=BERTH_BENCH_PG_PORT ;; esac
  if ! as_owner "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    need_port "$port" "PostgreSQL .data/$name" "$var"
    as_owner "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start \
      -o "-p $port -c listen_addresses=127.0.0.1 -k /tmp -c max_connections=300 ${PG_EXTRA_OPTS:-}" >/dev/null \
      || { tail -20 "$data/server.log" >&2
           holders=$(port_holders "$port" all)
           [ -z "$holders" ] || die "PostgreSQL did not start: port $port is in use by:
$holders
set $var to a free port"
           die "PostgreSQL did not start"; }
  fi
  echo "postgres://postgres:berth@127.0.0.1:$port"
  ;;
stop)
  as_owner "$bindir/pg_ctl" -D "$data" -m fast stop >/dev/null 2>&1 || true
  ;;
*) die "usage: pg.sh start NAME PORT | pg.sh stop NAME" ;;
esac
