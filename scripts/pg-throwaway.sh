# Sourced by the demo and bench scripts: start a throwaway Postgres (wal_level=logical) in a
# temp dir on a free 127.0.0.1 port, and stop it (and remove the dir) on exit.
# Sets PG_BIN, PG_PORT, PG_DIR, and defines pg_psql DB [psql args...].

PG_BIN=${CDC_TEST_PG_BIN:-/usr/lib/postgresql/15/bin}
PG_DIR=$(mktemp -d /tmp/cdc-pg.XXXXXX)
PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg=()
if [ "$(id -u)" = 0 ]; then
  # initdb and postgres refuse to run as root.
  pg_user=postgres
  id "$pg_user" >/dev/null 2>&1 || pg_user=nobody
  chown "$pg_user" "$PG_DIR"
  as_pg=(runuser -u "$pg_user" --)
fi

pg_stop() {
  "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" stop -m fast >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}

pg_start() {
  "${as_pg[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; return 1; }
  "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -o \
    "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c wal_level=logical -c max_replication_slots=10 -c max_wal_senders=10 -c fsync=off -c synchronous_commit=off -c full_page_writes=off ${PG_EXTRA_OPTS:-}" \
    start >/dev/null || { cat "$PG_DIR/postgres.log" >&2; return 1; }
}

pg_psql() {
  local db=$1; shift
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$db" "$@"
}
