#!/usr/bin/env bash
# Sink benchmark: how fast does cdc-host drain a pgoutput backlog into NATS JetStream and
# into an HTTP endpoint, compared with pg_recvlogical (the ceiling) and with a raw
# async-nats publisher (what the NATS server itself takes)? A benchmark: run it on demand,
# it prints figures; it is not a test.
#
#   bench/sinks.sh                         # 1,000,000 rows, every measurement, 3 rounds
#   ROWS=200000 bench/sinks.sh             # quicker
#   ROWS=200000 RAW_VARIANTS=1 bench/sinks.sh   # + raw runs that mimic cdc-host's sink
#   PIPELINE_TOML=$'max_changes = 16384\nmax_inflight = 16' bench/sinks.sh
#   MODE=atomic ROWS=200000 bench/sinks.sh  # cdc-host plain vs atomic = "transaction"
#   MODE=cluster ROWS=200000 bench/sinks.sh # cdc-host vs raw publisher, R3 stream, 3 nodes
#   MODE=sidecars ROWS=200000 bench/sinks.sh   # one sidecar vs two on two publications
#   MODE=sidecars CLUSTER=1 ROWS=200000 bench/sinks.sh   # the same into an R3 stream
#
# MODE=atomic: the cost of `[sinks.jetstream] atomic = "transaction"` (each transaction of
# BATCH rows one JetStream atomic batch, at most 1000 messages each, one in flight) against
# the same sink without it. Per round, cdc-host drains slot s_plain<R> and slot s_atomic<R>
# (both created before the load), each into a fresh nats-server (odd rounds plain first);
# each stream must hold ROWS messages. Prints changes/s per round and the median of
# atomic/plain, then stops (no raw publisher, no HTTP). Step 1 (pg_recvlogical) runs as
# usual.
#
# MODE=cluster: cdc-host into a replicated stream against the raw publisher sending the same
# messages to the same kind of cluster. Each side runs on a fresh 3-node JetStream cluster
# on 127.0.0.1 (the pinned nats-server; free client and route ports, routes between all
# three, cluster name cdc, file stores in the temp dir; JetStream awaited with
# raw-nats-publish --wait-jetstream). cdc-host drains slot s_nats<R> into stream CDC that it
# creates with `[sinks.jetstream] replicas = 3` (url: the three seeds, comma-separated;
# ordering_check at its default: the created stream allows batched publishing, so cdc-host
# publishes ordered batches and no Nats-Expected-Last-Msg-Id is stored); the stream must hold ROWS messages with 3 replicas.
# Round 1's stream is read back into a file (as in step 3), and raw-nats-publish republishes
# it, headers as stored, into a fresh R3 stream RAW (--replicas 3) on a fresh cluster.
# Rounds alternate who goes first (odd rounds cdc-host). Prints changes/s per round, the
# CPU seconds of cdc-host (or the publisher) and of the three servers together, and the
# median cdc-host/raw (issue 21's target: >= 0.9); then stops (no HTTP).
#
# MODE=sidecars: one sidecar against two. The backlog goes to two tables, bench_a and
# bench_b (transactions alternate: ROWS/2 rows each), with publications pub_a, pub_b and
# pub_ab (both). Per round, on a fresh nats-server (CLUSTER=1: a fresh 3-node cluster, R3
# stream): `one` = one cdc-host on pub_ab (slot s_one<R>); `two` = two cdc-host processes
# started together, on pub_a (s_a<R>) and pub_b (s_b<R>), into the same stream CDC (subjects
# cdc.public.bench_a / _b; ordering_check at its default, as in the README's recipe: ordered
# batches on the stream cdc-host creates). Wall time runs from the first start to the poll that sees every
# slot involved confirmed; aggregate changes/s = ROWS / that. The stream must hold ROWS
# messages. Odd rounds run `one` first. Prints per-round figures (each sidecar's own finish
# time too) and the median two/one. Every walsender decodes the whole WAL, whatever its
# publication: two slots cost Postgres twice the decoding.
#
# One run, one backlog (like bench/drain.sh): build cdc-host and cdc-bench-tools (release)
# -> throwaway Postgres (scripts/pg-throwaway.sh: free 127.0.0.1 port, wal_level=logical,
# fsync=off) -> table `bench` + publication `bench_pub` -> slots s_recv, s_nats, s_http
# created BEFORE the load -> ROWS rows (~200 bytes each) in transactions of BATCH rows ->
# end LSN right after the last COMMIT. Then:
#   1. pg_recvlogical drains s_recv to /dev/null (--endpos=<end>): the ceiling.
#   2. nats-server (-js, file storage in the temp dir, free port) is started; cdc-host
#      drains s_nats into JetStream (stream CDC, created by cdc-host, subject
#      cdc.{schema}.{table}, format json) until s_nats's confirmed_flush_lsn >= end, then
#      is SIGTERMed. The stream must hold exactly ROWS messages.
#   3. raw-nats-publish (bench/tools) reads those ROWS messages back into a file; nats-server
#      is restarted with an empty store (as cdc-host had it); raw-nats-publish loads the
#      file and republishes the same messages, headers as stored (Nats-Msg-Id, Cdc-*, and
#      cdc-host's ordering check Nats-Expected-Last-Msg-Id = the previous message's id,
#      which holds again in the same order), into a new stream RAW (file storage, same
#      2 min duplicate window) with up to RAW_MAX_IN_FLIGHT PubAcks outstanding, awaited
#      in order. Then once more on a fresh server without Nats-Expected-* (`raw, no
#      ordering hdr`: a publisher that does not guard its order; ~54 B less per message).
#      Only their publish phase is timed. Every timed phase starts after a `sync` (no
#      earlier phase's dirty pages being written back).
#   4. nats-server is stopped; http-sink-receiver (bench/tools: HTTP/1.1 keep-alive, 200
#      to everything, counts NDJSON lines) is started; cdc-host drains s_http into it
#      (type http, batch ndjson, format json) until confirmed; the receiver must have
#      counted ROWS lines.
#   Steps 2 and 3 are repeated for ROUNDS rounds (rounds 2.. drain slots s_nats2.. into a
#   fresh server each, and republish the file of step 3 into other fresh ones; even rounds
#   run the raw publishes first); the median of the rounds' ratios is reported.
# Wall time for cdc-host runs from its start (connecting included) to the poll (every
# POLL_SECS, 0.1 s, over one psql session kept open: no process per poll) that sees the
# slot confirmed; CPU seconds and peak RSS come from /usr/bin/time -v.
# Diagnostics: CPU seconds of the walsender (sampled from /proc at each poll while it
# runs), of nats-server (during the cdc-host drain, and during the raw publish phase) and
# of the receiver; the share of all cores kept busy in each phase (near 100 %: CPU-bound)
# and the share the hypervisor stole (other tenants of the host: noise).
# The runs share the machine's cores with Postgres and nats-server, so on a small box
# these explain most of the differences. Everything (Postgres, nats-server,
# receiver, cdc-host, temp dirs) is stopped/removed on exit (trap; a SIGKILL of this
# script would leak them).
#
# Env: ROWS (1000000), BATCH (1000), ROUNDS (3: cdc-host/raw rounds, each side on a fresh
# server, cdc-host from its own slot; the median ratios are reported), HOST_BIN_B (a second
# cdc-host build to A/B in the same run: rounds 2, 3, 6, 7, ... run it), CARGO_TARGET_DIR
# (/var/tmp/cdc-target), SKIP_BUILD=1 (use the binaries already built), HOST_BIN,
# TOOLS_DIR ($CARGO_TARGET_DIR/release), CDC_TEST_PG_BIN (/usr/lib/postgresql/15/bin),
# NATS_SERVER (the pinned nats-server of scripts/nats-bin, as in the tests; or
# CDC_NATS_SERVER), DRAIN_TIMEOUT (seconds per drain, 1800), HOST_RUST_LOG
# (warn), POLL_SECS (0.1), PIPELINE_TOML (lines of a [pipeline] table for every cdc-host
# run, e.g. "max_changes = 16384"), RAW_MAX_IN_FLIGHT (1024),
# RAW_ARGS (extra raw-nats-publish arguments), RAW_VARIANTS=1 (also time raw publishes
# with Nats-Msg-Id only, with cdc-host's per-batch ack barrier, and taking PubAcks
# cdc-host's way: one inbox subscription instead of async-nats's JetStream API), SKIP_RAW=1,
# SKIP_HTTP=1, KEEP_BENCH_DIR=1 (keep logs and configs), MODE (atomic, cluster, sidecars;
# unset: the steps above), CLUSTER=1 (MODE=sidecars on a 3-node cluster, R3 stream).
set -euo pipefail

ROWS=${ROWS:-1000000}
BATCH=${BATCH:-1000}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-1800}
RAW_MAX_IN_FLIGHT=${RAW_MAX_IN_FLIGHT:-1024}
SKIP_RAW=${SKIP_RAW:-0}
SKIP_HTTP=${SKIP_HTTP:-0}
RAW_VARIANTS=${RAW_VARIANTS:-0}
ROUNDS=${ROUNDS:-3}
MODE=${MODE:-}
CLUSTER=${CLUSTER:-0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/cdc-target}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The server the tests run (installed on first use), unless one is named.
NATS_SERVER=${NATS_SERVER:-${CDC_NATS_SERVER:-$("$REPO/scripts/nats-bin")}}

log() { printf '[sinks %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $ROWS =~ ^[0-9]+$ && $ROWS -gt 0 ]] || die "ROWS must be a positive integer"
[[ $BATCH =~ ^[0-9]+$ && $BATCH -gt 0 ]] || die "BATCH must be a positive integer"
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -gt 0 ]] || die "ROUNDS must be a positive integer"
[[ -z $MODE || $MODE == atomic || $MODE == cluster || $MODE == sidecars ]] ||
  die "MODE must be atomic, cluster or sidecars (or unset)"
command -v "$NATS_SERVER" >/dev/null || die "$NATS_SERVER not found (scripts/nats-bin installs the pinned one)"
command -v python3 >/dev/null || die "python3 missing (free ports)"
if ! /usr/bin/time -v true >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]]; then
    log "installing GNU time"
    apt-get install -y -o DPkg::Lock::Timeout=600 time >/dev/null ||
      { apt-get update >/dev/null && apt-get install -y -o DPkg::Lock::Timeout=600 time >/dev/null; }
  else
    die "/usr/bin/time (GNU time) missing: apt-get install time"
  fi
fi
CLK_TCK=$(getconf CLK_TCK)

# --- build ------------------------------------------------------------------------------
HOST_BIN=${HOST_BIN:-$CARGO_TARGET_DIR/release/cdc-host}
TOOLS_DIR=${TOOLS_DIR:-$CARGO_TARGET_DIR/release}
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "cargo build --release -p cdc-host -p cdc-bench-tools (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  (cd "$REPO" && cargo build --release -p cdc-host -p cdc-bench-tools)
fi
HOST_BIN_B=${HOST_BIN_B:-}
for b in "$HOST_BIN" ${HOST_BIN_B:+"$HOST_BIN_B"} "$TOOLS_DIR/raw-nats-publish" "$TOOLS_DIR/http-sink-receiver"; do
  [[ -x $b ]] || die "$b missing (build it, or unset SKIP_BUILD)"
done

# --- temp dir, processes, cleanup ----------------------------------------------------------
DIR=$(mktemp -d "${TMPDIR:-/tmp}/cdc-sinks-bench-XXXXXX")
# Postgres (scripts/pg-throwaway.sh): sets PG_BIN, PG_PORT, PG_DIR; pg_start, pg_stop.
# Slots: s_recv, s_http and up to 3 per round (MODE=sidecars); a later -c wins.
PG_EXTRA_OPTS="-c max_wal_size=8GB -c timezone=UTC -c log_timezone=UTC -c max_replication_slots=$((3 * ROUNDS + 4)) ${PG_EXTRA_OPTS:-}"
# shellcheck source=../scripts/pg-throwaway.sh
source "$REPO/scripts/pg-throwaway.sh"
for t in psql pg_recvlogical; do
  [[ -x $PG_BIN/$t ]] || die "$PG_BIN/$t missing (set CDC_TEST_PG_BIN)"
done

LOAD_PID= RECV_PID= HOST_TIME_PID= NATS_PID= RECEIVER_PID= RAW_PID=
HOST_TIME_PIDS=() CLUSTER_PIDS=() # MODE=sidecars' cdc-hosts (under GNU time); a cluster's nodes
VARIANTS=()
stop_pid() { # pid signal: signal it and wait up to 10 s, then SIGKILL
  local pid=$1 sig=$2 i
  [[ -n $pid ]] || return 0
  kill "-$sig" "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
# start_cluster: a fresh 3-node JetStream cluster on 127.0.0.1 (free client and route
# ports, routes between all three, cluster name cdc, servers n0..n2, empty file stores in
# $DIR/cl<i>), started together; waits until each accepts connections and JetStream answers
# (a meta leader). Sets CLUSTER_PIDS, CLUSTER_URL (the three seeds, comma-separated).
start_cluster() {
  local attempt i j ports routes all ok
  for attempt in 1 2 3; do
    # Six free ports from one python3 (each start of it takes seconds on a loaded box).
    mapfile -t ports < <(python3 -c 'import socket
ss = [socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1", 0))
for s in ss: print(s.getsockname()[1])')
    ((${#ports[@]} == 6)) || die "no free ports"
    routes=("${ports[@]:3}") ports=("${ports[@]:0:3}") all=
    for i in 0 1 2; do all+="${all:+,}nats://127.0.0.1:${routes[i]}"; done
    CLUSTER_PIDS=()
    for i in 0 1 2; do
      rm -rf "$DIR/cl$i"; mkdir -p "$DIR/cl$i"
      "$NATS_SERVER" -js -a 127.0.0.1 -p "${ports[i]}" -sd "$DIR/cl$i" --cluster_name cdc \
        --name "n$i" --cluster "nats://127.0.0.1:${routes[i]}" --routes "$all" \
        >>"$DIR/cluster-n$i.log" 2>&1 &
      CLUSTER_PIDS+=($!)
    done
    ok=1
    for i in 0 1 2; do
      for ((j = 0; j < 200; j++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/${ports[i]}") 2>/dev/null && break
        kill -0 "${CLUSTER_PIDS[i]}" 2>/dev/null || break
        sleep 0.05
      done
      kill -0 "${CLUSTER_PIDS[i]}" 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/${ports[i]}") 2>/dev/null || ok=0
    done
    CLUSTER_URL=
    for i in 0 1 2; do CLUSTER_URL+="${CLUSTER_URL:+,}nats://127.0.0.1:${ports[i]}"; done
    if ((ok)) && "$TOOLS_DIR/raw-nats-publish" --url "$CLUSTER_URL" --wait-jetstream 60 \
      >"$DIR/cluster-ready.out" 2>&1; then
      log "3-node cluster ($("$NATS_SERVER" --version)) on $CLUSTER_URL, JetStream after $(kv "$DIR/cluster-ready.out" jetstream_ready_s)s"
      return 0
    fi
    stop_cluster
    if ((attempt == 3)); then
      cat "$DIR/cluster-ready.out" >&2 2>/dev/null; tail -n 20 "$DIR/cluster-n0.log" >&2
      die "the 3-node cluster did not start"
    fi
  done
}
# stop_cluster: SIGTERM to every node at once, then up to 10 s each, then SIGKILL.
stop_cluster() {
  local p
  for p in "${CLUSTER_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${CLUSTER_PIDS[@]}"; do stop_pid "$p" TERM; done
  CLUSTER_PIDS=()
  return 0
}
# ticks_of PID... -> the CPU clock ticks of those processes, summed (the live ones).
ticks_of() {
  local p sum=0
  for p in "$@"; do proc_ticks "$p"; sum=$((sum + ${TICKS:-0})); done
  echo "$sum"
}

cleanup() {
  local rc=$?
  set +e
  [[ -n $LOAD_PID ]] && kill -TERM "$LOAD_PID" 2>/dev/null
  [[ -n $RECV_PID ]] && kill -TERM "$RECV_PID" 2>/dev/null
  if [[ -n $HOST_TIME_PID ]]; then
    local c
    for c in $(pgrep -P "$HOST_TIME_PID"); do kill -KILL "$c" 2>/dev/null; done
    kill -KILL "$HOST_TIME_PID" 2>/dev/null
  fi
  for p in "${HOST_TIME_PIDS[@]}"; do
    for c in $(pgrep -P "$p"); do kill -KILL "$c" 2>/dev/null; done
    kill -KILL "$p" 2>/dev/null
  done
  [[ -n $RAW_PID ]] && kill -KILL "$RAW_PID" 2>/dev/null
  stop_pid "$RECEIVER_PID" TERM
  stop_pid "$NATS_PID" TERM
  stop_cluster
  if [[ ${KEEP_BENCH_DIR:-0} == 1 ]]; then
    cp "$PG_DIR/postgres.log" "$DIR/" 2>/dev/null
  fi
  poll_close
  pg_stop
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


# proc_cpu PID -> user+system CPU seconds of a live process ("" when it is gone).
proc_cpu() {
  proc_ticks "$1"
  [[ -z $TICKS ]] || calc "$TICKS / $CLK_TCK"
}
# busy_pct M_BUSY0 M_TOTAL0 -> share of all cores' time spent busy between that reading
# and the last machine_ticks (call it first: not inside the $(...) subshell, where its
# readings would be lost).
busy_pct() { calc "100 * ($M_BUSY - $1) / ($M_TOTAL - $2 + 0.000001)"; }
# steal_pct M_STEAL0 M_TOTAL0 -> likewise, the share the hypervisor stole.
steal_pct() { calc "100 * ($M_STEAL - $1) / ($M_TOTAL - $2 + 0.000001)"; }


# kv FILE KEY -> the value of KEY=value in FILE
kv() { sed -n "s/^$2=//p" "$1" | tail -n 1; }
# f2 NUMBER -> two decimals ("nan" stays)
f2() { if [[ -z $1 || $1 == nan ]]; then echo nan; else printf '%.2f' "$1"; fi; }
f1() { if [[ -z $1 || $1 == nan ]]; then echo nan; else printf '%.1f' "$1"; fi; }

# --- Postgres, schema, slots, load ---------------------------------------------------------
log "starting Postgres (scripts/pg-throwaway.sh) in $PG_DIR"
pg_start || die "postgres failed to start"
PSQL=("$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres)
sql() { "${PSQL[@]}" -d bench -c "$1"; }
"${PSQL[@]}" -d postgres -c "CREATE DATABASE bench"
PG_VERSION=$(sql "SHOW server_version_num")
sql "CREATE TABLE bench(id bigserial PRIMARY KEY, n int, t text, amount numeric(12,2), doc jsonb, ts timestamptz)"
sql "CREATE PUBLICATION bench_pub FOR TABLE bench"
RECV_PUB=bench_pub # pg_recvlogical's
NATS_SLOTS=(s_nats)
for ((r = 2; r <= ROUNDS; r++)); do NATS_SLOTS+=("s_nats$r"); done
if [[ $MODE == atomic ]]; then
  NATS_SLOTS=()
  for ((r = 1; r <= ROUNDS; r++)); do NATS_SLOTS+=("s_plain$r" "s_atomic$r"); done
elif [[ $MODE == cluster ]]; then
  NATS_SLOTS=()
  for ((r = 1; r <= ROUNDS; r++)); do NATS_SLOTS+=("s_nats$r"); done
elif [[ $MODE == sidecars ]]; then
  for t in bench_a bench_b; do sql "CREATE TABLE $t (LIKE bench INCLUDING ALL)"; done
  sql "CREATE PUBLICATION pub_a FOR TABLE bench_a"
  sql "CREATE PUBLICATION pub_b FOR TABLE bench_b"
  sql "CREATE PUBLICATION pub_ab FOR TABLE bench_a, bench_b"
  LOAD_TABLES="bench_a bench_b" RECV_PUB=pub_ab
  NATS_SLOTS=()
  for ((r = 1; r <= ROUNDS; r++)); do NATS_SLOTS+=("s_one$r" "s_a$r" "s_b$r"); done
fi
for slot in s_recv "${NATS_SLOTS[@]}" s_http; do
  sql "SELECT pg_create_logical_replication_slot('$slot', 'pgoutput')" >/dev/null
done
START_LSN=$(sql "SELECT pg_current_wal_insert_lsn()")
log "postgres $PG_VERSION on 127.0.0.1:$PG_PORT; slots s_recv, ${NATS_SLOTS[*]}, s_http at $START_LSN"

load_backlog

poll_open bench
# slot_poll SLOT: POLL_OUT = "t|<walsender pid>" once confirmed_flush_lsn >= END_LSN ("f|...")
slot_poll() {
  poll_sql "SELECT CASE WHEN confirmed_flush_lsn >= '$END_LSN'::pg_lsn THEN 't' ELSE 'f' END || '|' || coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = '$1';"
}

# --- 1. pg_recvlogical ------------------------------------------------------------------------
log "1/4 pg_recvlogical drains s_recv (--endpos=$END_LSN)"
t0=$(now)
timeout "$DRAIN_TIMEOUT" /usr/bin/time -v -o "$DIR/recv.time" \
  "$PG_BIN/pg_recvlogical" -d bench -h 127.0.0.1 -p "$PG_PORT" -U postgres --slot s_recv --start \
  -o proto_version=1 -o publication_names="$RECV_PUB" --endpos="$END_LSN" -f /dev/null \
  2>"$DIR/recv.stderr" &
RECV_PID=$!
RECV_WS_TICKS=
machine_ticks; b0=$M_BUSY m0=$M_TOTAL
while kill -0 "$RECV_PID" 2>/dev/null; do
  slot_poll s_recv; p=${POLL_OUT#*|}
  if [[ $p != 0 ]]; then proc_ticks "$p"; [[ -n $TICKS ]] && RECV_WS_TICKS=$TICKS; fi
  sleep "$POLL_SECS"
done
machine_ticks
RECV_BUSY=$(busy_pct "$b0" "$m0")
RECV_WS_CPU=nan
[[ -n $RECV_WS_TICKS ]] && RECV_WS_CPU=$(calc "$RECV_WS_TICKS / $CLK_TCK")
set +e; wait "$RECV_PID"; rc=$?; set -e
RECV_PID=
t1=$(now)
if [[ $rc -ne 0 ]]; then cat "$DIR/recv.stderr" >&2; die "pg_recvlogical exited with $rc"; fi
# The poll above adds up to POLL_SECS after pg_recvlogical's own exit: use GNU time's wall.
read -r RECV_CPU RECV_RSS RECV_WALL < <(parse_time "$DIR/recv.time")
[[ $RECV_WALL != 0.00 ]] || RECV_WALL=$(calc "$t1 - $t0")
RECV_CPS=$(calc "$ROWS / $RECV_WALL")
log "pg_recvlogical: ${RECV_WALL}s ($(printf '%.0f' "$RECV_CPS")/s)"

# --- cdc-host runs ------------------------------------------------------------------------
write_config() { # FILE SLOT SINK_TOML [PUBLICATION (bench_pub)]
  cat >"$1" <<EOF
[source]
dsn = "postgres://postgres@127.0.0.1:$PG_PORT/bench?sslmode=disable"
slot = "$2"
publication = "${4:-bench_pub}"
create_slot = false
status_interval_secs = 1

$3
EOF
  if [[ -n ${PIPELINE_TOML:-} ]]; then
    printf '\n[pipeline]\n%s\n' "$PIPELINE_TOML" >>"$1"
  fi
  "$HOST_BIN" check "$1" >/dev/null 2>"$1.check" || { cat "$1.check" >&2; die "cdc-host check $1 failed"; }
}

# drain_host TAG SLOT CONFIG [EXTRA_PID]: runs cdc-host until SLOT is confirmed past the end.
# Sets H_STATUS (ok|exited|timeout), H_WALL, H_CPU, H_RSS, H_RC, H_WS_CPU, H_BUSY (% of
# all cores busy meanwhile), H_STEAL (% stolen) and H_EXTRA_CPU (CPU seconds EXTRA_PID
# used meanwhile).
drain_host() {
  local tag=$1 slot=$2 cfg=$3 extra=${4:-} t0 t1 deadline pid ws i host_pid extra0= b0 m0 s0
  [[ -n $extra ]] && { proc_ticks "$extra"; extra0=$TICKS; }
  machine_ticks; b0=$M_BUSY m0=$M_TOTAL s0=$M_STEAL
  t0=$(now)
  RUST_LOG=${HOST_RUST_LOG:-warn} /usr/bin/time -v -o "$DIR/$tag.time" \
    "${RUN_BIN:-$HOST_BIN}" run "$cfg" >"$DIR/$tag.stdout" 2>"$DIR/$tag.stderr" &
  HOST_TIME_PID=$!
  deadline=$((SECONDS + DRAIN_TIMEOUT))
  H_STATUS=timeout ws=
  while :; do
    slot_poll "$slot"
    pid=${POLL_OUT#*|}
    if [[ $pid != 0 ]]; then proc_ticks "$pid"; [[ -n $TICKS ]] && ws=$TICKS; fi
    if [[ ${POLL_OUT%%|*} == t ]]; then H_STATUS=ok; break; fi
    if ! kill -0 "$HOST_TIME_PID" 2>/dev/null; then H_STATUS=exited; break; fi
    ((SECONDS < deadline)) || break
    sleep "$POLL_SECS"
  done
  t1=$(now)
  machine_ticks
  H_BUSY=$(busy_pct "$b0" "$m0")
  H_STEAL=$(steal_pct "$s0" "$m0")
  H_WALL=$(calc "$t1 - $t0")
  H_WS_CPU=nan
  [[ -n $ws ]] && H_WS_CPU=$(calc "$ws / $CLK_TCK")
  H_EXTRA_CPU=nan
  if [[ -n $extra0 ]]; then
    proc_ticks "$extra"
    [[ -n $TICKS ]] && H_EXTRA_CPU=$(calc "($TICKS - $extra0) / $CLK_TCK")
  fi
  # SIGTERM cdc-host itself (GNU time would die of it without reporting).
  host_pid=$(pgrep -P "$HOST_TIME_PID" || true)
  [[ -n $host_pid ]] && kill -TERM "$host_pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do kill -0 "$HOST_TIME_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$HOST_TIME_PID" 2>/dev/null; then
    log "$tag: cdc-host ignored SIGTERM for 15s; SIGKILL"
    [[ -n $host_pid ]] && kill -KILL "$host_pid" 2>/dev/null || true
  fi
  set +e; wait "$HOST_TIME_PID"; H_RC=$?; set -e
  HOST_TIME_PID=
  if [[ $H_STATUS != ok ]]; then
    log "$tag: cdc-host did not confirm $END_LSN ($H_STATUS, exit $H_RC); stderr tail:"
    tail -n 30 "$DIR/$tag.stderr" >&2 || true
  fi
  if [[ -s $DIR/$tag.time ]] && grep -q 'Maximum resident' "$DIR/$tag.time"; then
    read -r H_CPU H_RSS _ < <(parse_time "$DIR/$tag.time")
  else
    H_CPU=nan H_RSS=nan
  fi
  log "$tag: $(printf '%.2f' "$H_WALL")s ($H_STATUS), exit $H_RC, $(printf '%.0f' "$(calc "$ROWS / $H_WALL")")/s"
}

# --- 2. cdc-host -> NATS JetStream ------------------------------------------------------------
# start_nats: a nats-server with JetStream and an empty file store on a free port; sets
# NATS_PID, NATS_PORT, NATS_URL.
start_nats() {
  local attempt i
  rm -rf "$DIR/js"; mkdir -p "$DIR/js"
  for attempt in 1 2 3 4 5; do
    NATS_PORT=$(free_port)
    "$NATS_SERVER" -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$DIR/js" >>"$DIR/nats.log" 2>&1 &
    NATS_PID=$!
    for ((i = 0; i < 200; i++)); do
      (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break
      kill -0 "$NATS_PID" 2>/dev/null || break
      sleep 0.05
    done
    if kill -0 "$NATS_PID" 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null; then
      break
    fi
    stop_pid "$NATS_PID" KILL; NATS_PID=
    [[ $attempt -lt 5 ]] || { tail -n 20 "$DIR/nats.log" >&2; die "nats-server did not start"; }
  done
  NATS_URL=nats://127.0.0.1:$NATS_PORT
  log "$("$NATS_SERVER" --version) on $NATS_URL, store $DIR/js"
}
[[ $MODE == cluster || $MODE == sidecars ]] || start_nats

nats_sink_toml() { # [URL ($NATS_URL)]
  printf '%s\n' "[[sinks]]" 'name = "bus"' 'type = "nats"' "url = \"${1:-$NATS_URL}\"" \
    'subject = "cdc.{schema}.{table}"' 'format = "json"' "[sinks.jetstream]" 'stream = "CDC"' \
    "create_stream = true"
}

# raw_publish TAG [ARGS...]: sets R_OK, R_CPS, R_WALL, R_CPU, R_RSS, R_SERVER_CPU, R_BUSY,
# R_STEAL. Into the server at NATS_URL, or PUB_URL (server pids PUB_PIDS, comma-separated).
raw_publish() {
  local tag=$1 c0 c1; shift
  R_OK=0 R_CPS=nan R_WALL=nan R_CPU=nan R_RSS=nan R_SERVER_CPU=nan R_BUSY=nan R_STEAL=nan
  c0=$(proc_cpu "$NATS_PID")
  set +e
  # shellcheck disable=SC2086
  "$TOOLS_DIR/raw-nats-publish" --url "${PUB_URL:-$NATS_URL}" --from-file "$DIR/messages.bin" --expect "$ROWS" \
    --stream RAW --subject raw.public.bench --max-in-flight "$RAW_MAX_IN_FLIGHT" --server-pid "${PUB_PIDS:-$NATS_PID}" \
    ${RAW_ARGS:-} "$@" \
    >"$DIR/$tag.out" 2>"$DIR/$tag.stderr" &
  RAW_PID=$!
  wait "$RAW_PID"; local rc=$?
  set -e
  RAW_PID=
  c1=$(proc_cpu "$NATS_PID")
  if [[ $rc -ne 0 ]]; then
    log "$tag: raw-nats-publish exited with $rc:"; tail -n 20 "$DIR/$tag.stderr" >&2
    return 0
  fi
  R_OK=1
  R_WALL=$(kv "$DIR/$tag.out" publish_wall_s)
  R_CPU=$(kv "$DIR/$tag.out" publish_cpu_s)
  R_RSS=$(kv "$DIR/$tag.out" peak_rss_mb)
  R_CPS=$(calc "$ROWS / $R_WALL")
  R_BUSY=$(kv "$DIR/$tag.out" machine_busy_pct)
  R_STEAL=$(kv "$DIR/$tag.out" machine_steal_pct)
  # nats-server CPU during the publish phase (or, failing that, the whole run).
  R_SERVER_CPU=$(kv "$DIR/$tag.out" server_publish_cpu_s)
  if [[ -z $R_SERVER_CPU && -n $c0 && -n $c1 ]]; then R_SERVER_CPU=$(calc "$c1 - $c0"); fi
  log "$tag: ${R_WALL}s, $(printf '%.0f' "$R_CPS")/s${*:+ ($*)}"
}

# --- MODE=atomic: plain vs atomic = "transaction" ------------------------------------------------
if [[ ${MODE:-} == atomic ]]; then
  A_RATIOS=() A_ROWS=()
  for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then sides=(plain atomic); else sides=(atomic plain); fi
    for side in "${sides[@]}"; do
      stop_pid "$NATS_PID" TERM; NATS_PID=
      start_nats
      extra=
      [[ $side == atomic ]] && extra='atomic = "transaction"'
      write_config "$DIR/$side$r.toml" "s_$side$r" "$(nats_sink_toml)
$extra"
      log "round $r/$ROUNDS: cdc-host drains s_$side$r into JetStream ($side)"
      sync
      drain_host "$side$r" "s_$side$r" "$DIR/$side$r.toml" "$NATS_PID"
      [[ $H_STATUS == ok ]] || die "$side round $r: cdc-host did not confirm the end"
      "$TOOLS_DIR/raw-nats-publish" --url "$NATS_URL" --source-stream CDC --info-only \
        >"$DIR/$side$r.count" 2>&1 || true
      got=$(kv "$DIR/$side$r.count" source_messages)
      [[ $got == "$ROWS" ]] || die "$side round $r: stream CDC holds ${got:-?} messages, not $ROWS"
      cps=$(calc "$ROWS / $H_WALL")
      if [[ $side == plain ]]; then P_CPS=$cps P_CPU=$H_CPU; else A_CPS=$cps A_CPU=$H_CPU; fi
    done
    ratio=$(calc "$A_CPS / $P_CPS")
    A_RATIOS+=("$ratio")
    A_ROWS+=("$(printf '%5d  %10.0f  %10.0f  %6.2f  %8s  %8s' "$r" "$P_CPS" "$A_CPS" "$ratio" "$(f2 "$P_CPU")" "$(f2 "$A_CPU")")")
  done
  mapfile -t sorted < <(printf '%s\n' "${A_RATIOS[@]}" | sort -g)
  k=${#sorted[@]}
  if ((k % 2)); then median=${sorted[k / 2]}; else median=$(calc "(${sorted[k / 2 - 1]} + ${sorted[k / 2]}) / 2"); fi
  echo
  echo "MODE=atomic: $ROWS rows in transactions of $BATCH, $("$NATS_SERVER" --version), $ROUNDS rounds"
  echo "round  plain c/s   atomic c/s  atomic/plain  plain cpu s  atomic cpu s"
  printf '%s\n' "${A_ROWS[@]}"
  printf 'median atomic/plain: %.2f\n' "$median"
  exit 0
fi

# median_of VALUES... -> the median
median_of() {
  local sorted k
  mapfile -t sorted < <(printf '%s\n' "$@" | sort -g)
  k=${#sorted[@]}
  if ((k % 2)); then echo "${sorted[k / 2]}"; else calc "(${sorted[k / 2 - 1]} + ${sorted[k / 2]}) / 2"; fi
}
# stream_count URL STREAM TAG: S_MSGS and S_REPLICAS of STREAM (empty when unreadable).
stream_count() {
  "$TOOLS_DIR/raw-nats-publish" --url "$1" --source-stream "$2" --info-only >"$DIR/$3.count" 2>&1 || true
  S_MSGS=$(kv "$DIR/$3.count" source_messages)
  S_REPLICAS=$(kv "$DIR/$3.count" source_replicas)
}

# --- MODE=cluster: cdc-host vs the raw publisher, R3 stream on a 3-node cluster --------------
if [[ $MODE == cluster ]]; then
  stop_pid "$NATS_PID" TERM; NATS_PID=
  CL_ROWS=() CL_RATIOS=() CL_RATIOS_C=()
  # cluster_cdc R: a fresh cluster, cdc-host drains s_nats<R> into R3 stream CDC; sets C_*.
  cluster_cdc() {
    local r=$1 s0
    start_cluster
    write_config "$DIR/cl_cdc$r.toml" "s_nats$r" "$(nats_sink_toml "$CLUSTER_URL")
replicas = 3"
    log "round $r/$ROUNDS: cdc-host drains s_nats$r into R3 stream CDC"
    sync
    s0=$(ticks_of "${CLUSTER_PIDS[@]}")
    drain_host "cl_cdc$r" "s_nats$r" "$DIR/cl_cdc$r.toml"
    C_SRV=$(calc "($(ticks_of "${CLUSTER_PIDS[@]}") - $s0) / $CLK_TCK")
    [[ $H_STATUS == ok ]] || die "round $r: cdc-host did not drain s_nats$r"
    stream_count "$CLUSTER_URL" CDC "cl_cdc$r"
    [[ $S_MSGS == "$ROWS" && $S_REPLICAS == 3 ]] ||
      die "round $r: stream CDC holds ${S_MSGS:-?} messages with ${S_REPLICAS:-?} replicas, expected $ROWS with 3"
    C_CPS=$(calc "$ROWS / $H_WALL") C_CPU=$H_CPU C_STEAL=$H_STEAL
    if [[ ! -s $DIR/messages.bin ]]; then
      "$TOOLS_DIR/raw-nats-publish" --url "$CLUSTER_URL" --source-stream CDC --expect "$ROWS" \
        --dump "$DIR/messages.bin" >"$DIR/dump.out" 2>"$DIR/dump.stderr" ||
        { cat "$DIR/dump.stderr" >&2; die "reading stream CDC back failed"; }
    fi
    stop_cluster
  }
  # cluster_raw R: a fresh cluster, the same messages republished into R3 stream RAW.
  cluster_raw() {
    local r=$1 pids
    start_cluster
    pids=$(IFS=,; echo "${CLUSTER_PIDS[*]}")
    log "round $r/$ROUNDS: raw-nats-publish republishes $ROWS messages into R3 stream RAW"
    PUB_URL=$CLUSTER_URL PUB_PIDS=$pids raw_publish "cl_raw$r" --replicas 3
    [[ $R_OK == 1 ]] || die "round $r: raw-nats-publish failed"
    [[ $(kv "$DIR/cl_raw$r.out" replicas) == 3 ]] || die "round $r: stream RAW has not 3 replicas"
    # The same publish counting the creation of its R3 stream, as cdc-host's run does.
    R_CREATE=$(kv "$DIR/cl_raw$r.out" create_stream_s)
    R_CPS_C=$(calc "$ROWS / ($R_WALL + ${R_CREATE:-0})")
    stop_cluster
  }
  for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then
      cluster_cdc "$r"; cluster_raw "$r"; order="cdc first"
    else
      cluster_raw "$r"; cluster_cdc "$r"; order="raw first"
    fi
    ratio=$(calc "$C_CPS / $R_CPS") ratio_c=$(calc "$C_CPS / $R_CPS_C")
    CL_RATIOS+=("$ratio") CL_RATIOS_C+=("$ratio_c")
    CL_ROWS+=("$(printf '  %-5d %-10s %9.0f %9.0f %6.2f %8s %6.2f %8s %8s %10s %10s   %s/%s' "$r" "$order" "$C_CPS" "$R_CPS" "$ratio" \
      "$(f2 "${R_CREATE:-nan}")" "$ratio_c" "$(f2 "$C_CPU")" "$(f2 "$R_CPU")" "$(f2 "$C_SRV")" "$(f2 "$R_SERVER_CPU")" "$(f1 "$C_STEAL")" "$(f1 "$R_STEAL")")")
  done
  mapfile -t sorted < <(printf '%s\n' "${CL_RATIOS[@]}" | sort -g)
  echo
  echo "MODE=cluster: $ROWS rows in $TXNS txns of $BATCH, ~${ROW_BYTES} B/row, PG $PG_VERSION, 3 x $("$NATS_SERVER" --version) on 127.0.0.1 (R3 file streams, fresh cluster per side), $(nproc) cores, $ROUNDS rounds"
  echo "messages: avg payload $(kv "$DIR/cl_raw1.out" avg_payload_bytes) B, avg headers ~$(kv "$DIR/cl_raw1.out" avg_header_bytes) B (as cdc-host stored them)"
  printf '  %-5s %-10s %9s %9s %6s %8s %6s %8s %8s %10s %10s   %s\n' round order cdc-host raw ratio create_s r+cre cdc_cpu raw_cpu "srv_cpu c" "srv_cpu r" "steal % cdc/raw"
  printf '%s\n' "${CL_ROWS[@]}"
  printf 'median ratio cdc-host/raw-nats-publish, R3 stream (the same messages) over %d rounds: %.2f (min %.2f, max %.2f; target >= 0.9)\n' \
    "$ROUNDS" "$(median_of "${CL_RATIOS[@]}")" "${sorted[0]}" "${sorted[-1]}"
  printf 'median ratio with the raw side timed from its stream creation on (as cdc-host is): %.2f\n' "$(median_of "${CL_RATIOS_C[@]}")"
  echo "changes/s: cdc-host from its start to the slot confirmed (connecting and creating the R3 stream included); raw: its publish phase (create_s: creating its R3 stream, before; r+cre: the ratio counting it). cpu_s: the process; srv_cpu: the three nats-servers together"
  exit 0
fi

# --- MODE=sidecars: one cdc-host on both tables vs two, one per publication ------------------
# drain_hosts TAG SLOT:CONFIG...: starts one cdc-host per SLOT:CONFIG together and polls
# until every SLOT is confirmed past the end (or one exits, or DRAIN_TIMEOUT). Sets H_STATUS
# (ok|exited|timeout), H_WALL (first start to the last slot confirmed), H_DONE (each slot's
# seconds), H_CPU (summed), H_RSS (the largest), H_BUSY, H_STEAL.
drain_hosts() {
  local tag=$1 sc i n t0 t1 deadline b0 m0 s0 pid left host_pid
  shift
  local -a slots=() cfgs=() done_s=()
  for sc in "$@"; do slots+=("${sc%%:*}"); cfgs+=("${sc#*:}"); done
  n=${#slots[@]}
  machine_ticks; b0=$M_BUSY m0=$M_TOTAL s0=$M_STEAL
  t0=$(now)
  HOST_TIME_PIDS=()
  for ((i = 0; i < n; i++)); do
    RUST_LOG=${HOST_RUST_LOG:-warn} /usr/bin/time -v -o "$DIR/$tag-$i.time" \
      "$HOST_BIN" run "${cfgs[i]}" >"$DIR/$tag-$i.stdout" 2>"$DIR/$tag-$i.stderr" &
    HOST_TIME_PIDS+=($!)
    done_s+=("")
  done
  deadline=$((SECONDS + DRAIN_TIMEOUT))
  H_STATUS=timeout
  while :; do
    left=0
    for ((i = 0; i < n; i++)); do
      [[ -z ${done_s[i]} ]] || continue
      slot_poll "${slots[i]}"
      if [[ ${POLL_OUT%%|*} == t ]]; then done_s[i]=$(calc "$(now) - $t0"); else left=1; fi
    done
    ((left)) || { H_STATUS=ok; break; }
    for pid in "${HOST_TIME_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || H_STATUS=exited; done
    [[ $H_STATUS == timeout ]] || break
    ((SECONDS < deadline)) || break
    sleep "$POLL_SECS"
  done
  t1=$(now)
  machine_ticks
  H_BUSY=$(busy_pct "$b0" "$m0")
  H_STEAL=$(steal_pct "$s0" "$m0")
  H_WALL=$(calc "$t1 - $t0")
  # SIGTERM each cdc-host itself (GNU time would die of it without reporting).
  for pid in "${HOST_TIME_PIDS[@]}"; do
    host_pid=$(pgrep -P "$pid" || true)
    [[ -n $host_pid ]] && kill -TERM "$host_pid" 2>/dev/null || true
  done
  for pid in "${HOST_TIME_PIDS[@]}"; do
    for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$tag: a cdc-host ignored SIGTERM for 15s; SIGKILL"
      for host_pid in $(pgrep -P "$pid"); do kill -KILL "$host_pid" 2>/dev/null || true; done
    fi
    wait "$pid" 2>/dev/null || true
  done
  HOST_TIME_PIDS=()
  H_CPU=0 H_RSS=0 H_DONE=
  for ((i = 0; i < n; i++)); do
    H_DONE+="${H_DONE:+ }${slots[i]}=$(f2 "${done_s[i]:-nan}")s"
    if [[ -s $DIR/$tag-$i.time ]] && grep -q 'Maximum resident' "$DIR/$tag-$i.time"; then
      read -r c rss _ < <(parse_time "$DIR/$tag-$i.time")
      H_CPU=$(calc "$H_CPU + $c")
      H_RSS=$(awk -v a="$H_RSS" -v b="$rss" 'BEGIN { print (b > a ? b : a) }')
    else
      H_CPU=nan H_RSS=nan
    fi
    if [[ $H_STATUS != ok ]]; then
      log "$tag: cdc-host on ${slots[i]}: stderr tail:"; tail -n 30 "$DIR/$tag-$i.stderr" >&2 || true
    fi
  done
  log "$tag: $(f2 "$H_WALL")s ($H_STATUS; $H_DONE), $(printf '%.0f' "$(calc "$ROWS / $H_WALL")")/s"
}

if [[ $MODE == sidecars ]]; then
  stop_pid "$NATS_PID" TERM; NATS_PID=
  SC_ROWS=() SC_RATIOS=()
  SC_WHERE="one nats-server, R1 stream"
  [[ $CLUSTER == 1 ]] && SC_WHERE="3-node cluster, R3 stream"
  # sidecars_side R SIDE: a fresh server (or cluster); SIDE one|two drains into stream CDC.
  sidecars_side() {
    local r=$1 side=$2 url pids s0 extra=''
    if [[ $CLUSTER == 1 ]]; then
      start_cluster; url=$CLUSTER_URL pids=("${CLUSTER_PIDS[@]}"); extra+=$'\nreplicas = 3'
    else
      start_nats; url=$NATS_URL pids=("$NATS_PID")
    fi
    if [[ $side == one ]]; then
      write_config "$DIR/one$r.toml" "s_one$r" "$(nats_sink_toml "$url")
$extra" pub_ab
      set -- "s_one$r:$DIR/one$r.toml"
    else
      write_config "$DIR/two_a$r.toml" "s_a$r" "$(nats_sink_toml "$url")
$extra" pub_a
      write_config "$DIR/two_b$r.toml" "s_b$r" "$(nats_sink_toml "$url")
$extra" pub_b
      set -- "s_a$r:$DIR/two_a$r.toml" "s_b$r:$DIR/two_b$r.toml"
    fi
    log "round $r/$ROUNDS: $side ($*) into stream CDC ($SC_WHERE)"
    sync
    s0=$(ticks_of "${pids[@]}")
    drain_hosts "$side$r" "$@"
    S_SRV=$(calc "($(ticks_of "${pids[@]}") - $s0) / $CLK_TCK")
    [[ $H_STATUS == ok ]] || die "round $r: $side did not confirm the end ($H_STATUS)"
    stream_count "$url" CDC "$side$r"
    [[ $S_MSGS == "$ROWS" ]] || die "round $r ($side): stream CDC holds ${S_MSGS:-?} messages, expected $ROWS"
    if [[ $CLUSTER == 1 ]]; then
      [[ $S_REPLICAS == 3 ]] || die "round $r ($side): stream CDC has ${S_REPLICAS:-?} replicas"
      stop_cluster
    else
      stop_pid "$NATS_PID" TERM; NATS_PID=
    fi
  }
  for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then sides=(one two) order="one first"; else sides=(two one) order="two first"; fi
    for side in "${sides[@]}"; do
      sidecars_side "$r" "$side"
      if [[ $side == one ]]; then
        O_CPS=$(calc "$ROWS / $H_WALL") O_CPU=$H_CPU O_SRV=$S_SRV O_STEAL=$H_STEAL O_BUSY=$H_BUSY
      else
        T_CPS=$(calc "$ROWS / $H_WALL") T_CPU=$H_CPU T_SRV=$S_SRV T_STEAL=$H_STEAL T_BUSY=$H_BUSY T_DONE=$H_DONE
      fi
    done
    ratio=$(calc "$T_CPS / $O_CPS")
    SC_RATIOS+=("$ratio")
    SC_ROWS+=("$(printf '  %-5d %-9s %9.0f %9.0f %6.2f %8s %8s %9s %9s %5s/%-5s %5s/%-5s  %s' "$r" "$order" "$O_CPS" "$T_CPS" "$ratio" \
      "$(f2 "$O_CPU")" "$(f2 "$T_CPU")" "$(f2 "$O_SRV")" "$(f2 "$T_SRV")" "$(f1 "$O_BUSY")" "$(f1 "$T_BUSY")" \
      "$(f1 "$O_STEAL")" "$(f1 "$T_STEAL")" "$T_DONE")")
  done
  mapfile -t sorted < <(printf '%s\n' "${SC_RATIOS[@]}" | sort -g)
  echo
  echo "MODE=sidecars: $ROWS rows in $TXNS txns of $BATCH (alternating bench_a / bench_b), ~${ROW_BYTES} B/row, PG $PG_VERSION, $("$NATS_SERVER" --version), $SC_WHERE, fresh per side, $(nproc) cores, $ROUNDS rounds"
  printf '  %-5s %-9s %9s %9s %6s %8s %8s %9s %9s %11s %11s  %s\n' round order "one c/s" "two c/s" two/one \
    "one cpu" "two cpu" "srv one" "srv two" "busy% o/t" "steal% o/t" "two: each slot confirmed after"
  printf '%s\n' "${SC_ROWS[@]}"
  printf 'median ratio two sidecars/one (aggregate changes/s) over %d rounds: %.2f (min %.2f, max %.2f)\n' \
    "$ROUNDS" "$(median_of "${SC_RATIOS[@]}")" "${sorted[0]}" "${sorted[-1]}"
  echo "changes/s: $ROWS / (first start .. every slot confirmed); cpu: the cdc-hosts together; srv: nats-server(s) CPU seconds meanwhile"
  exit 0
fi

write_config "$DIR/nats.toml" s_nats "$(nats_sink_toml)"

log "2/4 cdc-host drains s_nats into JetStream stream CDC"
sync # no dirty pages of the load waiting to be written back meanwhile
drain_host nats s_nats "$DIR/nats.toml" "$NATS_PID"
NATS_STATUS=$H_STATUS NATS_WALL=$H_WALL NATS_CPU=$H_CPU NATS_RSS=$H_RSS
NATS_WS_CPU=$H_WS_CPU NATS_SERVER_CPU=$H_EXTRA_CPU NATS_BUSY=$H_BUSY NATS_STEAL=$H_STEAL
NATS_CPS=$(calc "$ROWS / $NATS_WALL")
# cdc_stream TAG: CDC_MSGS and CDC_BYTES of stream CDC (empty when it cannot be read).
cdc_stream() {
  "$TOOLS_DIR/raw-nats-publish" --url "$NATS_URL" --source-stream CDC --info-only >"$DIR/$1.out" 2>&1 || true
  CDC_MSGS=$(kv "$DIR/$1.out" source_messages)
  CDC_BYTES=$(kv "$DIR/$1.out" source_bytes)
}
cdc_stream cdc_stream
CDC_BYTES1=$CDC_BYTES # the report's; later rounds read the stream again
if [[ $CDC_MSGS == "$ROWS" ]]; then
  log "stream CDC holds $CDC_MSGS messages ($CDC_BYTES bytes): ok"
  NATS_VERIFIED=ok
else
  log "stream CDC holds ${CDC_MSGS:-?} messages, expected $ROWS"; cat "$DIR/cdc_stream.out" >&2
  NATS_VERIFIED="MISMATCH (${CDC_MSGS:-?} messages)"
fi

# --- 3. raw async-nats publisher (raw_publish: above) --------------------------------------------
# fresh_nats: stops the running nats-server and starts another on an empty store.
fresh_nats() {
  stop_pid "$NATS_PID" TERM; NATS_PID=
  start_nats
}
# raw_side TAG [ARGS...]: raw_publish into a fresh server; dies when it fails.
raw_side() {
  fresh_nats
  raw_publish "$@"
  [[ $R_OK == 1 ]] || die "$1: raw-nats-publish failed"
}
# bin_of R -> A or B: which cdc-host round R runs when HOST_BIN_B is set (A B B A A B B A
# ..., so each binary runs as often cdc-first as raw-first).
bin_of() { if [[ -n $HOST_BIN_B ]] && (($1 % 4 == 2 || $1 % 4 == 3)); then echo B; else echo A; fi; }
# cdc_side R: round R's cdc-host drain (slot s_nats<R>) into a fresh server; sets C_CPS,
# C_CPU, C_STEAL; dies unless the stream holds every change.
cdc_side() {
  local r=$1 RUN_BIN=$HOST_BIN
  [[ $(bin_of "$r") == B ]] && RUN_BIN=$HOST_BIN_B
  fresh_nats
  write_config "$DIR/nats$r.toml" "s_nats$r" "$(nats_sink_toml)"
  log "round $r/$ROUNDS: cdc-host ($RUN_BIN) drains s_nats$r into JetStream (fresh server)"
  sync
  drain_host "nats$r" "s_nats$r" "$DIR/nats$r.toml" "$NATS_PID"
  [[ $H_STATUS == ok ]] || die "round $r: cdc-host did not drain s_nats$r"
  cdc_stream "cdc_stream$r"
  [[ $CDC_MSGS == "$ROWS" ]] || die "round $r: stream CDC holds ${CDC_MSGS:-?} messages, expected $ROWS"
  C_CPS=$(calc "$ROWS / $H_WALL") C_CPU=$H_CPU C_STEAL=$H_STEAL
}

RAW_OK=0 PLAIN_OK=0
if [[ $SKIP_RAW != 1 && $NATS_VERIFIED == ok ]]; then
  # The same messages, published into a fresh server, as cdc-host's were: not into one
  # that still holds (and has cached) stream CDC.
  "$TOOLS_DIR/raw-nats-publish" --url "$NATS_URL" --source-stream CDC --expect "$ROWS" \
    --dump "$DIR/messages.bin" >"$DIR/dump.out" 2>"$DIR/dump.stderr" ||
    { cat "$DIR/dump.stderr" >&2; die "reading stream CDC back failed"; }
  log "3/4 raw-nats-publish republishes the $ROWS stored messages, headers as stored, into stream RAW (fresh server)"
  raw_side raw
  RAW_OK=$R_OK RAW_CPS=$R_CPS RAW_WALL=$R_WALL RAW_CPU=$R_CPU RAW_RSS=$R_RSS RAW_SERVER_CPU=$R_SERVER_CPU
  RAW_BUSY=$R_BUSY RAW_STEAL=$R_STEAL
  AVG_PAYLOAD=$(kv "$DIR/raw.out" avg_payload_bytes)
  AVG_HEADERS=$(kv "$DIR/raw.out" avg_header_bytes)
  log "3/4 again without cdc-host's ordering header (--headers no-expect), fresh server"
  raw_side raw_plain --headers no-expect
  PLAIN_OK=$R_OK PLAIN_CPS=$R_CPS PLAIN_WALL=$R_WALL PLAIN_CPU=$R_CPU PLAIN_RSS=$R_RSS
  PLAIN_SERVER_CPU=$R_SERVER_CPU PLAIN_BUSY=$R_BUSY PLAIN_STEAL=$R_STEAL
  PLAIN_HEADERS=$(kv "$DIR/raw_plain.out" avg_header_bytes)
  if [[ $RAW_VARIANTS == 1 ]]; then
    # What-ifs: only Nats-Msg-Id; waiting for every ack at the end of each pipeline batch
    # (~max_changes) as cdc-host's sink does; PubAcks taken cdc-host's way. A variant that
    # fails is reported as such.
    B=$(sed -n 's/^ *max_changes *= *//p' <<<"${PIPELINE_TOML:-}" | tail -n 1)
    B=${B:-4096}
    for v in "--headers id" "--batch $B" "--headers no-expect --batch $B" "--acks inbox" \
      "--acks inbox --headers no-expect" "--acks inbox --batch $B"; do
      # shellcheck disable=SC2086
      fresh_nats
      raw_publish "raw_variant" $v
      VARIANTS+=("$v|$R_OK|$R_WALL|$R_CPS|$R_CPU|$R_SERVER_CPU")
    done
  fi
fi

# --- 3b. more rounds: one run's pair varies (the raw publisher by up to ±20 % between runs
# here, with the hypervisor's steal), so ROUNDS rounds are measured, every side on a fresh
# server, and the median ratios reported. Even rounds run the raw publishers first, odd
# ones cdc-host first: a machine that slows down (or speeds up) during the run favours
# neither side.
RATIOS=() # same|plain|cdc_cps|raw_cps|plain_cps|cdc_steal|raw_steal|plain_steal|order|bin|cdc_cpu
if [[ $NATS_STATUS == ok && $RAW_OK == 1 && $PLAIN_OK == 1 ]]; then
  RATIOS+=("$(calc "$NATS_CPS / $RAW_CPS")|$(calc "$NATS_CPS / $PLAIN_CPS")|$NATS_CPS|$RAW_CPS|$PLAIN_CPS|$NATS_STEAL|$RAW_STEAL|$PLAIN_STEAL|cdc first|A|$NATS_CPU")
  for ((r = 2; r <= ROUNDS; r++)); do
    if ((r % 2 == 0)); then
      raw_side "raw$r"; w_cps=$R_CPS w_steal=$R_STEAL
      raw_side "raw_plain$r" --headers no-expect; p_cps=$R_CPS p_steal=$R_STEAL
      cdc_side "$r"
      order="raw first"
    else
      cdc_side "$r"
      raw_side "raw$r"; w_cps=$R_CPS w_steal=$R_STEAL
      raw_side "raw_plain$r" --headers no-expect; p_cps=$R_CPS p_steal=$R_STEAL
      order="cdc first"
    fi
    RATIOS+=("$(calc "$C_CPS / $w_cps")|$(calc "$C_CPS / $p_cps")|$C_CPS|$w_cps|$p_cps|$C_STEAL|$w_steal|$p_steal|$order|$(bin_of "$r")|$C_CPU")
  done
fi
stop_pid "$NATS_PID" TERM; NATS_PID=

# --- 4. cdc-host -> HTTP ---------------------------------------------------------------------
HTTP_STATUS=skipped
if [[ $SKIP_HTTP != 1 ]]; then
  "$TOOLS_DIR/http-sink-receiver" --port-file "$DIR/receiver.port" --status-file "$DIR/receiver.status" \
    >"$DIR/receiver.out" 2>"$DIR/receiver.stderr" &
  RECEIVER_PID=$!
  for ((i = 0; i < 200; i++)); do [[ -s $DIR/receiver.port ]] && break; sleep 0.05; done
  [[ -s $DIR/receiver.port ]] || { cat "$DIR/receiver.stderr" >&2; die "http-sink-receiver did not start"; }
  HTTP_PORT=$(tr -d '[:space:]' <"$DIR/receiver.port")
  write_config "$DIR/http.toml" s_http "[[sinks]]
name = \"hook\"
type = \"http\"
url = \"http://127.0.0.1:$HTTP_PORT/cdc\"
batch = \"ndjson\"
format = \"json\""
  log "4/4 cdc-host drains s_http into http-sink-receiver on 127.0.0.1:$HTTP_PORT"
  drain_host http s_http "$DIR/http.toml" "$RECEIVER_PID"
  HTTP_STATUS=$H_STATUS HTTP_WALL=$H_WALL HTTP_CPU=$H_CPU HTTP_RSS=$H_RSS
  HTTP_WS_CPU=$H_WS_CPU RECEIVER_CPU=$H_EXTRA_CPU HTTP_BUSY=$H_BUSY
  HTTP_CPS=$(calc "$ROWS / $HTTP_WALL")
  stop_pid "$RECEIVER_PID" TERM; RECEIVER_PID=
  HTTP_LINES=$(sed -n 's/.*lines=\([0-9]*\).*/\1/p' "$DIR/receiver.status")
  HTTP_REQS=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' "$DIR/receiver.status")
  if [[ $HTTP_LINES == "$ROWS" ]]; then
    HTTP_VERIFIED=ok
  else
    HTTP_VERIFIED="MISMATCH (${HTTP_LINES:-?} lines)"
  fi
  log "receiver: $(cat "$DIR/receiver.status")"
fi

# --- report ------------------------------------------------------------------------------------
row() { # tool status wall cps cpu rss
  if [[ $2 == ok ]]; then
    printf '%-22s %9.2f %11.0f %8.2f %12.1f\n' "$1" "$3" "$4" "$5" "$6"
  else
    printf '%-22s %9s %11s %8s %12s   (%s)\n' "$1" - - "$5" "$6" "$2"
  fi
}
echo
echo "sink benchmark: $ROWS rows in $TXNS txns of $BATCH, ${WAL_MB} MB WAL, ~${ROW_BYTES} B/row, PG $PG_VERSION, $("$NATS_SERVER" --version), $(nproc) cores"
[[ -n ${PIPELINE_TOML:-} ]] && echo "[pipeline] $(tr '\n' ' ' <<<"$PIPELINE_TOML")"
printf '%-22s %9s %11s %8s %12s\n' tool wall_s changes/s cpu_s peak_rss_MB
row pg_recvlogical ok "$RECV_WALL" "$RECV_CPS" "$RECV_CPU" "$RECV_RSS"
row "cdc-host -> nats" "$NATS_STATUS" "$NATS_WALL" "$NATS_CPS" "$NATS_CPU" "$NATS_RSS"
if [[ $RAW_OK == 1 ]]; then
  row "raw-nats-publish" ok "$RAW_WALL" "$RAW_CPS" "$RAW_CPU" "$RAW_RSS"
fi
if [[ $PLAIN_OK == 1 ]]; then
  row "raw, no ordering hdr" ok "$PLAIN_WALL" "$PLAIN_CPS" "$PLAIN_CPU" "$PLAIN_RSS"
fi
if [[ $HTTP_STATUS != skipped ]]; then
  row "cdc-host -> http" "$HTTP_STATUS" "$HTTP_WALL" "$HTTP_CPS" "$HTTP_CPU" "$HTTP_RSS"
fi
echo
[[ $NATS_STATUS == ok ]] &&
  printf 'ratio cdc-host(nats)/pg_recvlogical: %.2f\n' "$(calc "$NATS_CPS / $RECV_CPS")"
[[ $NATS_STATUS == ok && $RAW_OK == 1 ]] &&
  printf 'ratio cdc-host(nats)/raw-nats-publish: %.2f (the same messages; target >= 0.8)\n' "$(calc "$NATS_CPS / $RAW_CPS")"
[[ $NATS_STATUS == ok && $PLAIN_OK == 1 ]] &&
  printf 'ratio cdc-host(nats)/raw-nats-publish without the ordering header: %.2f\n' "$(calc "$NATS_CPS / $PLAIN_CPS")"
[[ $HTTP_STATUS == ok ]] &&
  printf 'ratio cdc-host(http)/pg_recvlogical: %.2f\n' "$(calc "$HTTP_CPS / $RECV_CPS")"
echo
echo "checks: stream CDC: $NATS_VERIFIED${CDC_BYTES1:+ ($CDC_BYTES1 bytes stored)}${HTTP_VERIFIED:+; receiver: $HTTP_VERIFIED NDJSON lines in ${HTTP_REQS:-?} requests}"
[[ -n ${AVG_PAYLOAD:-} ]] && echo "messages: avg payload ${AVG_PAYLOAD} B, avg headers ~${AVG_HEADERS} B (Nats-Msg-Id, Cdc-Op, Cdc-Table, Cdc-Lsn, Cdc-Commit-Lsn, Nats-Expected-Last-Msg-Id), ~${PLAIN_HEADERS:-?} B without the last"
echo "cpu_s elsewhere: walsender $(f2 "$RECV_WS_CPU") (recvlogical), $(f2 "$NATS_WS_CPU") (nats run)${HTTP_WS_CPU:+, $(f2 "$HTTP_WS_CPU") (http run)};" \
  "nats-server $(f2 "$NATS_SERVER_CPU") (nats run)${RAW_SERVER_CPU:+, $(f2 "$RAW_SERVER_CPU") (raw publish)}${PLAIN_SERVER_CPU:+, $(f2 "$PLAIN_SERVER_CPU") (raw, no ordering hdr)}${RECEIVER_CPU:+; receiver $(f2 "$RECEIVER_CPU")}"
echo "cores busy: $(f1 "${RECV_BUSY:-}")% (recvlogical), $(f1 "${NATS_BUSY:-}")% (nats run)${RAW_BUSY:+, $(f1 "$RAW_BUSY")% (raw publish)}${PLAIN_BUSY:+, $(f1 "$PLAIN_BUSY")% (raw, no ordering hdr)}${HTTP_BUSY:+, $(f1 "$HTTP_BUSY")% (http run)} of $(nproc) cores"
echo "raw-nats-publish: wall and cpu are the publish phase only; peak RSS includes every message held in memory"
if [[ ${#RATIOS[@]} -gt 0 ]]; then
  echo
  echo "rounds (changes/s, every side on a fresh nats-server; steal = share of the cores' time the hypervisor took):"
  printf '  %-7s %-10s %9s %9s %9s %7s %7s %7s   %s\n' round order cdc-host raw raw-plain ratio r-plain cdc_cpu "steal % cdc/raw/plain"
  SAME=() PLAIN=() SAME_A=() SAME_B=()
  for ((i = 0; i < ${#RATIOS[@]}; i++)); do
    IFS='|' read -r q qp c w p sc sw sp o b cc <<<"${RATIOS[$i]}"
    printf '  %-7s %-10s %9.0f %9.0f %9.0f %7.2f %7.2f %7s   %s/%s/%s\n' "$((i + 1))${HOST_BIN_B:+ $b}" "$o" "$c" "$w" "$p" "$q" "$qp" \
      "$(f2 "$cc")" "$(f1 "$sc")" "$(f1 "$sw")" "$(f1 "$sp")"
    SAME+=("$q") PLAIN+=("$qp")
    if [[ $b == A ]]; then SAME_A+=("$q"); else SAME_B+=("$q"); fi
  done
  if [[ -n $HOST_BIN_B && ${#SAME_B[@]} -gt 0 ]]; then
    printf 'A/B: median ratio (the same messages) A=%s: %.2f over %d rounds; B=%s: %.2f over %d rounds\n' \
      "$HOST_BIN" "$(median_of "${SAME_A[@]}")" "${#SAME_A[@]}" "$HOST_BIN_B" "$(median_of "${SAME_B[@]}")" "${#SAME_B[@]}"
  fi
  mapfile -t sorted < <(printf '%s\n' "${SAME[@]}" | sort -g)
  printf 'median ratio cdc-host(nats)/raw-nats-publish (the same messages) over %d rounds: %.2f (min %.2f, max %.2f; target >= 0.8)\n' \
    "${#SAME[@]}" "$(median_of "${SAME[@]}")" "${sorted[0]}" "${sorted[-1]}"
  mapfile -t sorted < <(printf '%s\n' "${PLAIN[@]}" | sort -g)
  printf 'median ratio cdc-host(nats)/raw-nats-publish without the ordering header: %.2f (min %.2f, max %.2f)\n' \
    "$(median_of "${PLAIN[@]}")" "${sorted[0]}" "${sorted[-1]}"
fi
if [[ ${#VARIANTS[@]} -gt 0 ]]; then
  echo
  echo "raw-nats-publish variants (same messages, --max-in-flight $RAW_MAX_IN_FLIGHT):"
  printf '  %-36s %9s %11s %8s %14s\n' args wall_s changes/s cpu_s server_cpu_s
  printf '  %-36s %9.2f %11.0f %8.2f %14s\n' "(headers as stored, as above)" "$RAW_WALL" "$RAW_CPS" "$RAW_CPU" "$(f2 "$RAW_SERVER_CPU")"
  printf '  %-36s %9.2f %11.0f %8.2f %14s\n' "--headers no-expect (as above)" "$PLAIN_WALL" "$PLAIN_CPS" "$PLAIN_CPU" "$(f2 "$PLAIN_SERVER_CPU")"
  for v in "${VARIANTS[@]}"; do
    IFS='|' read -r a ok w c u s <<<"$v"
    if [[ $ok == 1 ]]; then
      printf '  %-36s %9.2f %11.0f %8.2f %14s\n' "$a" "$w" "$c" "$u" "$(f2 "$s")"
    else
      printf '  %-36s   failed\n' "$a"
    fi
  done
fi
[[ $NATS_STATUS == ok && $NATS_VERIFIED == ok ]] || exit 2
[[ $HTTP_STATUS == skipped || ($HTTP_STATUS == ok && $HTTP_VERIFIED == ok) ]] || exit 2
