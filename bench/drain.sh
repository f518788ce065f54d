#!/usr/bin/env bash
# Drain benchmark: how fast does cdc-host drain a pgoutput backlog, compared
# with pg_recvlogical draining the very same backlog?
#
#   bench/drain.sh                      # 1,000,000 rows, both drains
#   ROWS=100000 SKIP_HOST=1 bench/drain.sh   # only pg_recvlogical
#
# Steps: build cdc-host (release) -> throwaway Postgres in a temp dir (free
# 127.0.0.1 port, run as the `postgres` user when we are root, wal_level=
# logical, fsync=off) -> table `bench` + publication `bench_pub` -> slots
# s_recv and s_host created BEFORE the load -> ROWS rows (~200 bytes each) in
# transactions of BATCH rows -> end LSN = pg_current_wal_insert_lsn() right
# after the last COMMIT -> drain s_recv with pg_recvlogical --endpos=<end>
# -> drain s_host with `cdc-host run`, SIGTERMed once confirmed_flush_lsn of
# s_host >= end. Wall time, CPU seconds and peak RSS come from
# /usr/bin/time -v. Postgres is stopped and the temp dir removed on exit
# (trap on EXIT/INT/TERM/HUP; a SIGKILL of this script would leak it).
#
# Env: ROWS (1000000), BATCH (1000), SKIP_HOST (0), CARGO_TARGET_DIR
# (/var/tmp/cdc-target), HOST_BIN ($CARGO_TARGET_DIR/release/cdc-host) with
# SKIP_BUILD=1 to bench an existing binary, CDC_TEST_PG_BIN (/usr/lib/postgresql/15/bin),
# DRAIN_TIMEOUT (seconds per drain, 1800), HOST_RUST_LOG (RUST_LOG for
# cdc-host, default "warn"), HOST_EXTRA_TOML (lines appended to [source] of
# the cdc-host config, e.g. "status_interval_secs = 1"), KEEP_BENCH_DIR=1 keeps the temp dir (logs),
# WARM_CACHE (1: `cdc-host check` compiles a transform into the module cache before its
# drain; 0: a cold cache's compile lands in the drain's wall time and peak RSS).
#
# MODULES: drain once per transform module instead, each on its own slot (created before
# the load, so one backlog serves all) with the module at its DEFAULT limits, and print
# one row per module: changes/s, ratio to pg_recvlogical, CPU, peak RSS, and whether it
# completed. Entries are `lang/name[:key=value,...]` (guests/<lang>/<name>/<name>.wasm,
# config for its init), or MODULES=examples for every example module of every language:
#   MODULES=examples SKIP_BUILD=1 bench/drain.sh
#   MODULES="js/mask-columns-batch:columns=t python/identity" ROWS=100000 bench/drain.sh
#
# HOST_MODES: drain once per replication mode instead, each on its own slot (created before
# the load), and print one row per mode with changes/s and CPU per million changes, each
# as a ratio to pg_recvlogical's (which always drains text, protocol 1). Modes:
#   text    proto_version 1, text values (the default)
#   binary  proto_version 1, binary = true (Postgres >= 14)
#   stream  streaming = "on" with the newest protocol the server speaks (4 on Postgres >= 16,
#           2 below): in-progress transactions streamed
#   binary-stream  both
# ROUNDS (1) repeats it: each round drains its own pg_recvlogical slot first, then every
# mode (starting with a different one each round); the ratios are per round, and their
# medians are printed at the end.
#   HOST_MODES="text binary stream" ROUNDS=3 SKIP_BUILD=1 bench/drain.sh
# A mode may name its own binary, to compare two builds on the same backlog, alternated:
#   HOST_MODES="text text@/tmp/cdc-host-before" ROUNDS=4 SKIP_BUILD=1 bench/drain.sh
#
# The walsender serving each drain is sampled from /proc while it runs: its CPU seconds per
# million changes and its share of the drain's wall time are printed (busy near 100%: the
# server, not the client, sets the pace).
#
# Notes: the s_recv drain runs first, so the WAL is in the page cache for
# both. pg_recvlogical reports its position when it reaches --endpos; for
# cdc-host the measured wall time includes however long it takes to confirm
# (send standby status for) the final LSN.
set -euo pipefail

ROWS=${ROWS:-1000000}
ROUNDS=${ROUNDS:-1}
BATCH=${BATCH:-1000}
SKIP_HOST=${SKIP_HOST:-0}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-1800}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/cdc-target}
PG_BIN=${CDC_TEST_PG_BIN:-/usr/lib/postgresql/15/bin}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '[drain %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
CLK_TCK=$(getconf CLK_TCK)
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $ROWS =~ ^[0-9]+$ && $ROWS -gt 0 ]] || die "ROWS must be a positive integer"
[[ $BATCH =~ ^[0-9]+$ && $BATCH -gt 0 ]] || die "BATCH must be a positive integer"
for t in initdb pg_ctl postgres psql pg_recvlogical; do
  [[ -x $PG_BIN/$t ]] || die "$PG_BIN/$t missing (set CDC_TEST_PG_BIN)"
done

# --- GNU time ---------------------------------------------------------------
if ! /usr/bin/time -v true >/dev/null 2>&1; then
  log "installing GNU time"
  if [[ $(id -u) == 0 ]]; then
    apt-get install -y -o DPkg::Lock::Timeout=600 time >/dev/null ||
      { apt-get update >/dev/null && apt-get install -y -o DPkg::Lock::Timeout=600 time >/dev/null; }
  else
    die "/usr/bin/time (GNU time) missing: apt-get install time"
  fi
fi

# --- build ------------------------------------------------------------------
HOST_BIN=${HOST_BIN:-$CARGO_TARGET_DIR/release/cdc-host}
if [[ $SKIP_HOST != 1 && ${SKIP_BUILD:-0} != 1 ]]; then
  log "cargo build --release -p cdc-host (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  (cd "$REPO" && cargo build --release -p cdc-host)
  [[ -x $HOST_BIN ]] || die "$HOST_BIN not built"
fi

# --- throwaway Postgres -------------------------------------------------------
PGOS_USER=
if [[ $(id -u) == 0 ]]; then
  if id postgres >/dev/null 2>&1; then PGOS_USER=postgres; else PGOS_USER=nobody; fi
fi
as_pg() {
  if [[ -n $PGOS_USER ]]; then
    if command -v runuser >/dev/null; then runuser -u "$PGOS_USER" -- "$@"
    else setpriv --reuid="$PGOS_USER" --regid="$PGOS_USER" --init-groups -- "$@"; fi
  else
    "$@"
  fi
}

DIR=$(mktemp -d "${TMPDIR:-/tmp}/cdc-bench-XXXXXX")
chmod 700 "$DIR"
if [[ -n $PGOS_USER ]]; then chown "$PGOS_USER:" "$DIR"; fi
DATA=$DIR/data
PGLOG=$DIR/postgres.log
PORT=
HOST_TIME_PID=
RECV_PID=
LOAD_PID=

cleanup() {
  local rc=$?
  set +e
  # `timeout` forwards TERM to pg_recvlogical; cdc-host is time's child.
  [[ -n $LOAD_PID ]] && kill -TERM "$LOAD_PID" 2>/dev/null
  [[ -n $RECV_PID ]] && kill -TERM "$RECV_PID" 2>/dev/null
  if [[ -n $HOST_TIME_PID ]]; then
    local c
    for c in $(pgrep -P "$HOST_TIME_PID"); do kill -KILL "$c" 2>/dev/null; done
    kill -KILL "$HOST_TIME_PID" 2>/dev/null
  fi
  poll_close
  if [[ -f $DATA/postmaster.pid ]]; then
    local pid i
    pid=$(head -n 1 "$DATA/postmaster.pid")
    if [[ -n $pid ]] && kill -QUIT "$pid" 2>/dev/null; then
      for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null
    fi
  fi
  if [[ ${KEEP_BENCH_DIR:-0} == 1 ]]; then
    log "kept $DIR"
  else
    rm -rf "$DIR"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP


log "initdb in $DIR${PGOS_USER:+ (as $PGOS_USER)}"
(cd "$DIR" && as_pg "$PG_BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C -N >"$DIR/initdb.log" 2>&1) ||
  { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
cat >>"$DATA/postgresql.conf" <<EOF
# --- cdc-host drain bench ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
wal_level = logical
max_replication_slots = 40
max_wal_senders = 40
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = '8GB'
timezone = 'UTC'
log_timezone = 'UTC'
EOF

for attempt in 1 2 3 4 5 6 7 8; do
  PORT=$(free_port)
  if (cd "$DIR" && as_pg "$PG_BIN/pg_ctl" -D "$DATA" -l "$PGLOG" -o "-p $PORT" -w -t 60 start >/dev/null); then
    break
  fi
  grep -q "Address already in use" "$PGLOG" 2>/dev/null && [[ $attempt -lt 8 ]] ||
    { tail -n 30 "$PGLOG" >&2; die "postgres failed to start"; }
  log "port $PORT taken, retrying"
  : >"$PGLOG"
done
log "postgres $(cat "$DATA/PG_VERSION") on 127.0.0.1:$PORT"

PSQL=("$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres)
sql() { "${PSQL[@]}" -d bench -c "$1"; }

"${PSQL[@]}" -d postgres -c "CREATE DATABASE bench"
sql "CREATE TABLE bench(id bigserial PRIMARY KEY, n int, t text, amount numeric(12,2), doc jsonb, ts timestamptz)"
sql "CREATE PUBLICATION bench_pub FOR TABLE bench"
sql "SELECT pg_create_logical_replication_slot('s_recv', 'pgoutput')" >/dev/null
# MODULES=examples: every example of every language (the bench table's text column `t` is
# the one masked; the test-only modules misbehave, identity-v01 and batch-edits are left out).
EXAMPLES="rust/identity rust/identity-batch rust/mask-columns:columns=t rust/mask-columns-batch:columns=t
rust/filter-tables:deny=public.nothing rust/route-by-column:column=n rust/outbox
c/identity c/identity-batch c/mask-columns:columns=t c/mask-columns-batch:columns=t c/filter-route:deny=public.nothing,column=n
js/identity js/identity-batch js/identity-json js/mask-columns:columns=t js/mask-columns-batch:columns=t js/mask-columns-json:columns=t js/filter-route:deny=public.nothing,column=n
python/identity python/identity-batch python/identity-json python/mask-columns:columns=t python/mask-columns-batch:columns=t python/mask-columns-json:columns=t python/filter-route:deny=public.nothing,column=n"
[[ ${MODULES:-} == examples ]] && MODULES=$EXAMPLES
MODULE_LIST=()
if [[ -n ${MODULES:-} ]]; then
  read -r -d '' -a MODULE_LIST <<<"$MODULES" || true
  for m in "${MODULE_LIST[@]}"; do
    spec=${m%%:*}; name=${spec#*/}
    [[ -f $REPO/guests/$spec/${name//-/_}.wasm ]] || die "$m: guests/$spec/${name//-/_}.wasm missing (./scripts/build-guests)"
  done
fi
MODE_LIST=()
if [[ -n ${HOST_MODES:-} ]]; then
  ((${#MODULE_LIST[@]} == 0)) || die "HOST_MODES and MODULES: one at a time"
  read -r -d '' -a MODE_LIST <<<"$HOST_MODES" || true
  for m in "${MODE_LIST[@]}"; do
    case ${m%%@*} in text | binary | stream | binary-stream) ;; *) die "HOST_MODES: unknown mode $m (text binary stream binary-stream)" ;; esac
    [[ $m != *@* || -x ${m#*@} ]] || die "HOST_MODES: $m: ${m#*@} is not an executable"
  done
fi
# What the walsender spilled to disk and streamed for SLOT (pg_stat_replication_slots,
# Postgres >= 14; written when the walsender exits, so read after a short wait).
slot_stats() {
  (($(cat "$DATA/PG_VERSION") >= 14)) || { echo "-"; return; }
  sleep 0.5
  sql "SELECT round(spill_bytes / 1048576.0) || '/' || round(stream_bytes / 1048576.0) FROM pg_stat_replication_slots WHERE slot_name = '$1'" || echo "?"
}
# ws_text CPU_S WALL_S: the walsender's CPU seconds per million changes and its share of
# the wall time ("-" when it was not sampled).
ws_text() {
  [[ $1 != nan ]] || { echo "-"; return; }
  printf '%.2f/%.0f%%' "$(calc "$1 * 1000000 / $ROWS")" "$(calc "$1 * 100 / $2")"
}
# The toml of a mode's [source] lines.
mode_toml() {
  local major proto
  major=$(cat "$DATA/PG_VERSION")
  proto=2; ((major >= 16)) && proto=4
  case $1 in
    text) echo "proto_version = 1" ;;
    binary) echo $'proto_version = 1\nbinary = true' ;;
    stream) echo $'proto_version = '"$proto"$'\nstreaming = "on"' ;;
    binary-stream) echo $'proto_version = '"$proto"$'\nstreaming = "on"\nbinary = true' ;;
  esac
}
if ((${#MODULE_LIST[@]})); then
  for ((k = 0; k < ${#MODULE_LIST[@]}; k++)); do
    sql "SELECT pg_create_logical_replication_slot('s_host_$k', 'pgoutput')" >/dev/null
  done
elif ((${#MODE_LIST[@]})); then
  for ((r = 1; r <= ROUNDS; r++)); do
    ((r == 1)) || sql "SELECT pg_create_logical_replication_slot('s_recv_$r', 'pgoutput')" >/dev/null
    for ((k = 0; k < ${#MODE_LIST[@]}; k++)); do
      sql "SELECT pg_create_logical_replication_slot('s_mode_${r}_$k', 'pgoutput')" >/dev/null
    done
  done
else
  sql "SELECT pg_create_logical_replication_slot('s_host', 'pgoutput')" >/dev/null
fi
START_LSN=$(sql "SELECT pg_current_wal_insert_lsn()")

# --- load -------------------------------------------------------------------
load_backlog

# --- drain 1: pg_recvlogical ------------------------------------------------
# drain_recv SLOT: sets RECV_WALL, RECV_CPU, RECV_RSS, RECV_CPS.
drain_recv() {
  local slot=$1 rc t0 t1
  log "draining $slot with pg_recvlogical --endpos=$END_LSN"
  t0=$(now)
  set +e
  timeout "$DRAIN_TIMEOUT" /usr/bin/time -v -o "$DIR/recv.time" \
    "$PG_BIN/pg_recvlogical" -d bench -h 127.0.0.1 -p "$PORT" -U postgres --slot "$slot" --start \
    -o proto_version=1 -o publication_names=bench_pub --endpos="$END_LSN" -f /dev/null \
    2>"$DIR/recv.stderr" &
  RECV_PID=$!
  # The walsender's CPU, sampled while it serves the drain (it ends with it).
  [[ -n ${POLL_PSQL_PID:-} ]] || poll_open bench
  local ws= p
  while kill -0 "$RECV_PID" 2>/dev/null; do
    poll_sql "SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = '$slot';"; p=$POLL_OUT
    if [[ $p != 0 ]]; then proc_ticks "$p"; [[ -n $TICKS ]] && ws=$TICKS; fi
    sleep "$POLL_SECS"
  done
  wait "$RECV_PID"
  rc=$?
  set -e
  RECV_PID=
  RECV_WS=nan
  [[ -n $ws ]] && RECV_WS=$(calc "$ws / $CLK_TCK")
  t1=$(now)
  if [[ $rc -ne 0 ]]; then
    cat "$DIR/recv.stderr" >&2
    die "pg_recvlogical exited with $rc"
  fi
  RECV_WALL=$(calc "$t1 - $t0")
  read -r RECV_CPU RECV_RSS _ < <(parse_time "$DIR/recv.time")
  RECV_CPS=$(calc "$ROWS / $RECV_WALL")
  log "pg_recvlogical: $(printf '%.2f' "$RECV_WALL")s, $slot confirmed_flush_lsn=$(sql "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$slot'")"
}
drain_recv s_recv

# --- drain 2: cdc-host --------------------------------------------------------
# drain_host SLOT EXTRA_TOML: one cdc-host run on SLOT until it confirmed END_LSN; sets
# HOST_STATUS (ok / timeout / exited), HOST_WALL, HOST_CPU, HOST_RSS, HOST_CPS, HOST_RC.
drain_host() {
  local slot=$1 extra=$2
  cat >"$DIR/cfg.toml" <<EOF
[source]
dsn = "postgres://postgres@127.0.0.1:$PORT/bench?sslmode=disable"
slot = "$slot"
publication = "bench_pub"
create_slot = false
${HOST_EXTRA_TOML:-}
$extra

[[sinks]]
type = "stdout"
format = "json"
EOF
  [[ -x $HOST_BIN ]] || die "$HOST_BIN missing"
  # A transform is compiled into the module cache first, as `cdc-host check` does in a
  # deploy step: the drain measures streaming, not a one-off compile (Cranelift peaks at
  # ~450 MB RSS and takes 20-45 s on the JavaScript and Python runtimes). WARM_CACHE=0
  # leaves the cache as it is (cold on a new binary: the compile is in the figures).
  if [[ -n $extra && ${WARM_CACHE:-1} != 0 ]]; then
    RUST_LOG=warn "$HOST_BIN" check "$DIR/cfg.toml" >/dev/null 2>"$DIR/check.stderr" ||
      log "cdc-host check failed: $(tail -n 1 "$DIR/check.stderr")"
  fi
  log "draining $slot with cdc-host until confirmed_flush_lsn >= $END_LSN"
  [[ -n ${POLL_PSQL_PID:-} ]] || poll_open bench
  t0=$(now)
  RUST_LOG=${HOST_RUST_LOG:-warn} /usr/bin/time -v -o "$DIR/host.time" \
    "$HOST_BIN" run "$DIR/cfg.toml" >/dev/null 2>"$DIR/host.stderr" &
  HOST_TIME_PID=$!
  deadline=$((SECONDS + DRAIN_TIMEOUT))
  HOST_STATUS=timeout
  local ws=
  while :; do
    poll_sql "SELECT CASE WHEN confirmed_flush_lsn >= '$END_LSN'::pg_lsn THEN 't' ELSE 'f' END || '|' || coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = '$slot';"
    done_=${POLL_OUT%%|*} p=${POLL_OUT#*|}
    if [[ $p != 0 ]]; then proc_ticks "$p"; [[ -n $TICKS ]] && ws=$TICKS; fi
    if [[ $done_ == t ]]; then HOST_STATUS=ok; break; fi
    if ! kill -0 "$HOST_TIME_PID" 2>/dev/null; then HOST_STATUS=exited; break; fi
    ((SECONDS < deadline)) || break
    sleep "$POLL_SECS"
  done
  t1=$(now)
  HOST_WALL=$(calc "$t1 - $t0")
  HOST_WS=nan
  [[ -n $ws ]] && HOST_WS=$(calc "$ws / $CLK_TCK")
  # SIGTERM cdc-host itself (GNU time would die of it without reporting).
  HOST_PID=$(pgrep -P "$HOST_TIME_PID" || true)
  [[ -n $HOST_PID ]] && kill -TERM "$HOST_PID" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do kill -0 "$HOST_TIME_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$HOST_TIME_PID" 2>/dev/null; then
    log "cdc-host ignored SIGTERM for 15s; SIGKILL"
    [[ -n $HOST_PID ]] && kill -KILL "$HOST_PID" 2>/dev/null || true
  fi
  set +e; wait "$HOST_TIME_PID"; HOST_RC=$?; set -e
  HOST_TIME_PID=
  HOST_CONFIRMED=$(sql "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$slot'")
  if [[ $HOST_STATUS != ok ]]; then
    log "cdc-host did not confirm $END_LSN ($HOST_STATUS, exit $HOST_RC, confirmed=$HOST_CONFIRMED); stderr tail:"
    tail -n 30 "$DIR/host.stderr" >&2 || true
  fi
  if [[ -s $DIR/host.time ]] && grep -q 'Maximum resident' "$DIR/host.time"; then
    read -r HOST_CPU HOST_RSS _ < <(parse_time "$DIR/host.time")
  else
    HOST_CPU=nan HOST_RSS=nan
  fi
  HOST_CPS=$(calc "$ROWS / $HOST_WALL")
  log "cdc-host: $(printf '%.2f' "$HOST_WALL")s ($HOST_STATUS), exit $HOST_RC, $slot confirmed_flush_lsn=$HOST_CONFIRMED"
}

HOST_STATUS=skipped
MODULE_ROWS=()
MODE_ROWS=()
if [[ $SKIP_HOST != 1 ]]; then
  if ((${#MODULE_LIST[@]})); then
    for ((k = 0; k < ${#MODULE_LIST[@]}; k++)); do
      m=${MODULE_LIST[$k]}
      spec=${m%%:*}; name=${spec#*/}
      toml=$'[[transforms]]\nname = "t"\nmodule = "'"$REPO/guests/$spec/${name//-/_}.wasm"$'"\n'
      if [[ $m == *:* ]]; then
        toml+=$'[transforms.config]\n'
        IFS=, read -r -a kvs <<<"${m#*:}"
        for kv in "${kvs[@]}"; do toml+="${kv%%=*} = \"${kv#*=}\""$'\n'; done
      fi
      drain_host "s_host_$k" "$toml"
      if [[ $HOST_STATUS == ok ]]; then
        MODULE_ROWS+=("$(printf '%-34s %10.2f %12.0f %6.2f %8s %13s  %s' "$m" "$HOST_WALL" "$HOST_CPS" "$(calc "$HOST_CPS / $RECV_CPS")" "$HOST_CPU" "$HOST_RSS" completed)")
      else
        MODULE_ROWS+=("$(printf '%-34s %10s %12s %6s %8s %13s  %s: %s' "$m" - - - "$HOST_CPU" "$HOST_RSS" "$HOST_STATUS" "$(grep -m1 -i 'error' "$DIR/host.stderr" | cut -c1-160)")")
      fi
    done
  elif ((${#MODE_LIST[@]})); then
    for ((r = 1; r <= ROUNDS; r++)); do
      if ((r > 1)); then
        drain_recv "s_recv_$r"
        MODE_ROWS+=("$(printf '%-5s %-22s %10.2f %12.0f %6s %8s %9.2f %6s %13s %-10s %s' "$r" pg_recvlogical "$RECV_WALL" "$RECV_CPS" 1.00 "$RECV_CPU" "$(calc "$RECV_CPU * 1000000 / $ROWS")" 1.00 "$RECV_RSS" "$(slot_stats "s_recv_$r")" "$(ws_text "$RECV_WS" "$RECV_WALL")")")
      else
        MODE_ROWS+=("$(printf '%-5s %-22s %10.2f %12.0f %6s %8s %9.2f %6s %13s %-10s %s' 1 pg_recvlogical "$RECV_WALL" "$RECV_CPS" 1.00 "$RECV_CPU" "$(calc "$RECV_CPU * 1000000 / $ROWS")" 1.00 "$RECV_RSS" "$(slot_stats s_recv)" "$(ws_text "$RECV_WS" "$RECV_WALL")")")
      fi
      # Each round starts with a different mode, so no mode always drains first.
      for ((j = 0; j < ${#MODE_LIST[@]}; j++)); do
        k=$(((j + r - 1) % ${#MODE_LIST[@]}))
        m=${MODE_LIST[$k]}
        # The mode's [source] lines first: HOST_EXTRA_TOML may open another table.
        bin=$HOST_BIN label=$m
        [[ $m == *@* ]] && bin=${m#*@} label=${m%%@*}@$(basename "${m#*@}")
        HOST_BIN=$bin HOST_EXTRA_TOML="$(mode_toml "${m%%@*}")"$'\n'"${HOST_EXTRA_TOML:-}" drain_host "s_mode_${r}_$k" ""
        if [[ $HOST_STATUS == ok ]]; then
          MODE_ROWS+=("$(printf '%-5s %-22s %10.2f %12.0f %6.2f %8s %9.2f %6.2f %13s %-10s %s' "$r" "$label" "$HOST_WALL" "$HOST_CPS" \
            "$(calc "$HOST_CPS / $RECV_CPS")" "$HOST_CPU" "$(calc "$HOST_CPU * 1000000 / $ROWS")" \
            "$(calc "$HOST_CPU / $RECV_CPU")" "$HOST_RSS" "$(slot_stats "s_mode_${r}_$k")" "$(ws_text "$HOST_WS" "$HOST_WALL")")")
        else
          MODE_ROWS+=("$(printf '%-5s %-22s %10s %12s %6s %8s %9s %6s %13s  %s' "$r" "$label" - - - "$HOST_CPU" - - "$HOST_RSS" "$HOST_STATUS")")
        fi
      done
    done
  else
    drain_host s_host ""
  fi
fi

# --- report -------------------------------------------------------------------
echo
echo "drain benchmark: $ROWS rows in $TXNS txns of $BATCH, ${WAL_MB} MB WAL, ~${ROW_BYTES} B/row, PG $(cat "$DATA/PG_VERSION"), $(nproc) cores"
printf '%-16s %10s %12s %8s %13s\n' tool wall_s changes/s cpu_s peak_rss_MB
printf '%-16s %10.2f %12.0f %8.2f %13.1f\n' pg_recvlogical "$RECV_WALL" "$RECV_CPS" "$RECV_CPU" "$RECV_RSS"
if ((${#MODE_ROWS[@]})); then
  echo "one drain per mode and round (ratio, cpu_x: to the round's pg_recvlogical, text, protocol 1; cpu_s/M: CPU seconds per million changes):"
  echo "walsender: its CPU seconds per million changes / its share of the drain's wall time (near 100%: the server, not the client, sets the pace)"
  printf '%-5s %-22s %10s %12s %6s %8s %9s %6s %13s %-10s %s\n' round mode wall_s changes/s ratio cpu_s cpu_s/M cpu_x peak_rss_MB spill/strm walsender
  printf '%s\n' "${MODE_ROWS[@]}"
  echo "median over $ROUNDS round(s):"
  printf '%s\n' "${MODE_ROWS[@]}" | awk '$3 != "-" && $2 != "pg_recvlogical" { r[$2] = r[$2] " " $5; c[$2] = c[$2] " " $8 }
    function med(s,   a, n, i, j, t) { n = split(s, a, " "); for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    END { for (m in r) printf "  %-22s changes/s ratio %.2f   cpu_x %.2f\n", m, med(r[m]), med(c[m]) }'
  printf '%s\n' "${MODE_ROWS[@]}" | grep -q -E '(timeout|exited)$' && exit 2
  exit 0
fi
if ((${#MODULE_ROWS[@]})); then
  echo "one drain per module, each at its default limits (memory_mb 64, timeout_ms 1000, [pipeline] defaults):"
  printf '%-34s %10s %12s %6s %8s %13s  %s\n' module wall_s changes/s ratio cpu_s peak_rss_MB result
  printf '%s\n' "${MODULE_ROWS[@]}"
elif [[ $SKIP_HOST != 1 ]]; then
  if [[ $HOST_STATUS == ok ]]; then
    printf '%-16s %10.2f %12.0f %8s %13s\n' cdc-host "$HOST_WALL" "$HOST_CPS" "$HOST_CPU" "$HOST_RSS"
    printf 'ratio host/recvlogical (changes/s): %.2f\n' "$(calc "$HOST_CPS / $RECV_CPS")"
    echo "walsender CPU s per million changes / share of wall: pg_recvlogical $(ws_text "$RECV_WS" "$RECV_WALL"), cdc-host $(ws_text "$HOST_WS" "$HOST_WALL")"
  else
    printf '%-16s %10s %12s %8s %13s   (%s)\n' cdc-host - - "$HOST_CPU" "$HOST_RSS" "$HOST_STATUS"
  fi
else
  echo "cdc-host: skipped (SKIP_HOST=1)"
fi
if ((${#MODULE_ROWS[@]})); then
  # Every module must have completed.
  printf '%s\n' "${MODULE_ROWS[@]}" | grep -vq ' completed$' && exit 2
  exit 0
fi
[[ $SKIP_HOST == 1 || $HOST_STATUS == ok ]] || exit 2
