#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests (Debian's postgresql package).
#   pgtest.sh start DIR PORT   initdb into DIR/data, start on 127.0.0.1:PORT with its
#                              socket in a temporary folder; writes DIR/url (the base URL)
#   pgtest.sh stop DIR         stop it (immediate) and remove DIR
#   pgtest.sh pause|resume DIR stop it (fast) / start it again, keeping its data
#   pgtest.sh terminate DIR    pg_terminate_backend every hub connection (prints how many)
# PostgreSQL refuses to run as root: as root the server runs as the package's
# `postgres` user (runuser). Settings are for tests, not production: fsync stays on
# (the store's durability is under test), synchronous_commit on.
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?DIR}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bin/pg_ctl" ] || { echo "pgtest: PostgreSQL server not installed (apt-get install postgresql)" >&2; exit 1; }

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# The cluster's folder: DIR itself, or (when the server's user cannot reach DIR, e.g.
# a checkout under a private home folder) a temporary folder named in DIR/home.
home() {
  if [ -f "$dir/home" ]; then cat "$dir/home"; else echo "$dir"; fi
}

stop_server() {
  local h
  h=$(home)
  if [ -f "$h/data/postmaster.pid" ]; then
    as_pg "$bin/pg_ctl" -D "$h/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  [ -f "$dir/sockdir" ] && rm -rf "$(cat "$dir/sockdir")"
  [ "$h" != "$dir" ] && rm -rf "$h"
  rm -rf "$dir"
}

case "$cmd" in
start)
  port=${3:?PORT}
  [ -d "$dir" ] && stop_server
  mkdir -p "$dir"
  sock=$(mktemp -d /tmp/phypg.XXXXXX) # short: a socket path has at most 107 bytes
  echo "$sock" >"$dir/sockdir"
  h=$dir
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$dir" "$sock"
    if ! runuser -u postgres -- test -w "$dir"; then
      h=$(mktemp -d /tmp/phypgdata.XXXXXX)
      chown postgres: "$h"
      echo "$h" >"$dir/home"
    fi
  fi
  as_pg "$bin/initdb" -D "$h/data" -U phy --auth=trust --locale=C.UTF-8 -E UTF8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  cat >>"$h/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock'
max_connections = 400
shared_buffers = 64MB
synchronous_commit = on
max_pred_locks_per_transaction = 256
log_min_messages = warning
EOF
  as_pg "$bin/pg_ctl" -D "$h/data" -l "$h/server.log" -w -t 60 start >/dev/null \
    || { cat "$h/server.log" >&2; exit 1; }
  echo "postgresql://phy@127.0.0.1:$port" >"$dir/url"
  echo "pgtest: PostgreSQL on 127.0.0.1:$port (data $h/data)"
  ;;
stop)
  stop_server
  ;;
pause) # a fast shutdown: clients are disconnected, the data stays
  as_pg "$bin/pg_ctl" -D "$(home)/data" -m fast -w stop >/dev/null
  ;;
resume)
  as_pg "$bin/pg_ctl" -D "$(home)/data" -l "$(home)/server.log" -w -t 60 start >/dev/null
  ;;
terminate) # ends the backends of the hubs (application_name phyhub)
  psql -X -q -At "$(cat "$dir/url")/postgres" \
    -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'phyhub'"
  ;;
*)
  echo "usage: pgtest.sh start DIR PORT | stop DIR | pause DIR | resume DIR | terminate DIR" >&2
  exit 2
  ;;
esac
