#!/usr/bin/env bash
# Snapshot benchmark: how fast does cdc-host copy a table that already exists (its initial
# snapshot, op `read`, to the stdout sink into /dev/null), compared with
# `COPY (SELECT * FROM t) TO STDOUT` read by psql on one connection — the per-connection
# ceiling — on the same table in the same run? A benchmark: run it on demand, it prints
# figures; it is not a test.
#
#   bench/snapshot.sh                       # 5,000,000 rows (~1 GB), workers 1, 2 and 4
#   ROWS=500000 WORKERS="1 2" bench/snapshot.sh
#
# Steps: build cdc-host (release) -> throwaway Postgres (scripts/pg-throwaway.sh) -> table
# `bench` (the drain benchmark's shape, ~200 B/row) filled with ROWS rows, VACUUM ANALYZE
# -> COPY reference (timed with /usr/bin/time -v around psql) -> for each W in WORKERS:
# cdc-host with a new slot and `[source.snapshot] workers = W`, from start until every
# row of cdc_host.snapshots is done, then SIGTERM; wall time, CPU and peak RSS.
#
# Env: ROWS (5000000), WORKERS ("1 2 4"), FORMATS ("binary"; "binary text" compares the two
# COPY formats), CHUNK_ROWS (cdc-host's default when unset), MEMORY_BUDGET_MB (256),
# CARGO_TARGET_DIR (/var/tmp/cdc-host-target), SKIP_BUILD=1 with HOST_BIN to bench a built
# binary, CDC_TEST_PG_BIN (/usr/lib/postgresql/15/bin), HOST_RUST_LOG (warn; with
# cdc_host::source::snapshot=debug the chunks' COPY, permit-wait and watermark times are summed). ROUNDS (1) repeats the COPY reference
# and every run; HOST_BINS="a b" (with SKIP_BUILD=1) compares builds on the same table,
# alternated round by round, each run's ratio to its own round's COPY, medians at the end:
#   ROUNDS=3 WORKERS=1 SKIP_BUILD=1 HOST_BINS="/tmp/cdc-host-before /tmp/cdc-host-after" bench/snapshot.sh
set -euo pipefail

ROWS=${ROWS:-5000000}
WORKERS=${WORKERS:-"1 2 4"}
# COPY formats cdc-host uses: "binary" (its default where every column has a binary decoder)
# and/or "text" (`[source.snapshot] binary = false`).
FORMATS=${FORMATS:-"binary"}
CHUNK_ROWS=${CHUNK_ROWS:-}
MEMORY_BUDGET_MB=${MEMORY_BUDGET_MB:-256}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/cdc-host-target}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '[snapshot %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
[[ $ROWS =~ ^[0-9]+$ && $ROWS -gt 0 ]] || die "ROWS must be a positive integer"
/usr/bin/time -v true >/dev/null 2>&1 || die "/usr/bin/time (GNU time) missing: apt-get install time"

HOST_BIN=${HOST_BIN:-$CARGO_TARGET_DIR/release/cdc-host}
# HOST_BINS: several builds compared on the same table, alternated round by round.
HOST_BINS=${HOST_BINS:-$HOST_BIN}
ROUNDS=${ROUNDS:-1}
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -gt 0 ]] || die "ROUNDS must be a positive integer"
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  log "cargo build --release -p cdc-host"
  (cd "$REPO" && cargo build --release -p cdc-host)
fi
for b in $HOST_BINS; do [[ -x $b ]] || die "$b not built"; done

# shellcheck source=../scripts/pg-throwaway.sh
source "$REPO/scripts/pg-throwaway.sh"
HOST_PID=
cleanup() {
  local rc=$?
  set +e
  [[ -n $HOST_PID ]] && { pkill -KILL -P "$HOST_PID"; kill -KILL "$HOST_PID"; } 2>/dev/null
  pg_stop
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP
DIR=$PG_DIR
PG_EXTRA_OPTS="-c max_wal_size=8GB -c shared_buffers=512MB" pg_start
log "postgres $(cat "$PG_DIR/data/PG_VERSION") on 127.0.0.1:$PG_PORT"
sql() { pg_psql bench -A -t -c "$1"; }
pg_psql postgres -c "CREATE DATABASE bench" >/dev/null
sql "CREATE TABLE bench(id bigserial PRIMARY KEY, n int, t text, amount numeric(12,2), doc jsonb, ts timestamptz)"
sql "CREATE PUBLICATION bench_pub FOR TABLE bench" >/dev/null
log "loading $ROWS rows"
t0=$(now)
sql "INSERT INTO bench(n, t, amount, doc, ts)
     SELECT g, md5(g::text) || md5((g * 2)::text) || md5((g * 3)::text), (g % 10000) / 100.0,
            jsonb_build_object('k', g, 'v', md5(g::text)), now()
       FROM generate_series(1, $ROWS) g" >/dev/null
sql "VACUUM ANALYZE bench" >/dev/null
SIZE_MB=$(sql "SELECT pg_total_relation_size('bench') / 1048576")
log "loaded in $(printf '%.0f' "$(calc "$(now) - $t0")") s: ${SIZE_MB} MB"

# --- the reference: COPY on one connection -------------------------------------------------
# Warmed once (the page cache, as the host runs see it), then timed once per round: this
# machine's speed drifts, so each run's ratio is to the COPY of its own round.
pg_psql bench -c "COPY (SELECT * FROM bench) TO STDOUT" >/dev/null
copy_ref() {
  local t0
  t0=$(now)
  /usr/bin/time -v -o "$DIR/copy.time" "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d bench \
    -c "COPY (SELECT * FROM bench) TO STDOUT" >/dev/null
  COPY_WALL=$(calc "$(now) - $t0")
  read -r COPY_CPU COPY_RSS _ < <(parse_time "$DIR/copy.time")
  COPY_RPS=$(calc "$ROWS / $COPY_WALL")
  log "COPY: $(printf '%.2f' "$COPY_WALL") s"
}

# --- cdc-host, one run per binary, format and worker count ---------------------------------
# snapshot_run BIN FMT W TAG: one initial snapshot; appends a line to RESULTS.
snapshot_run() {
  local bin=$1 fmt=$2 w=$3 tag=$4 binary t0 wall cpu rss rows ranges faults switches left pending total
  local slot="s_snap_$tag"
  binary=$([[ $fmt == text ]] && echo false || echo true)
  cat >"$DIR/cfg_$tag.toml" <<TOML
[source]
dsn = "postgres://postgres@127.0.0.1:$PG_PORT/bench?sslmode=disable"
slot = "$slot"
publication = "bench_pub"
[source.snapshot]
mode = "initial"
workers = $w
${CHUNK_ROWS:+chunk_rows = $CHUNK_ROWS}
binary = $binary
[pipeline]
memory_budget_mb = $MEMORY_BUDGET_MB
[[sinks]]
type = "stdout"
format = "json"
TOML
  sql "DELETE FROM cdc_host.snapshots" >/dev/null 2>&1 || true
  log "cdc-host $(basename "$bin"), $w worker(s), COPY $fmt"
  t0=$(now)
  # The worker's info lines: "snapshot of table complete" once a table (range) is done.
  RUST_LOG="${HOST_RUST_LOG:-warn},cdc_host::source::snapshot::worker=info" /usr/bin/time -v -o "$DIR/host_$tag.time" "$bin" run "$DIR/cfg_$tag.toml" >/dev/null 2>"$DIR/host_$tag.log" &
  HOST_PID=$!
  # Done when every table (range) of the snapshot is done: the state table is asked only
  # when cdc-host logs that one more is complete. Asking it every 0.2 s (a psql process and a
  # new server backend each time, ~10 ms of CPU apiece) took 0.3–0.7 s of CPU from the run it
  # measured on a 2-core machine; the COPY reference pays nothing like it.
  local seen=0 complete
  while :; do
    sleep 0.05
    kill -0 "$HOST_PID" 2>/dev/null || { tail -n 20 "$DIR/host_$tag.log" >&2; die "cdc-host exited"; }
    complete=$(grep -c 'snapshot of table complete' "$DIR/host_$tag.log" || true)
    ((complete > seen)) || continue
    seen=$complete
    left=$(sql "SELECT count(*) FILTER (WHERE state <> 'done') || ' ' || count(*) FROM cdc_host.snapshots WHERE slot = '$slot'" 2>/dev/null || echo "1 0")
    read -r pending total <<<"$left"
    [[ $total -gt 0 && $pending -eq 0 ]] && break
  done
  wall=$(calc "$(now) - $t0")
  # HOST_PID is /usr/bin/time: signal cdc-host, its child.
  pkill -TERM -P "$HOST_PID" || true
  wait "$HOST_PID" || true
  HOST_PID=
  read -r cpu rss _ < <(parse_time "$DIR/host_$tag.time")
  rows=$(sql "SELECT sum(rows_done) FROM cdc_host.snapshots WHERE slot = '$slot'")
  [[ $rows -ge $ROWS ]] || die "only $rows of $ROWS rows delivered"
  ranges=$(sql "SELECT count(*) FROM cdc_host.snapshots WHERE slot = '$slot'")
  # The walsender outlives the client by a moment.
  for _ in $(seq 100); do
    [[ $(sql "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot' AND active") == 0 ]] && break
    sleep 0.1
  done
  sql "SELECT pg_drop_replication_slot('$slot')" >/dev/null
  faults=$(awk -F': ' '/Minor \(reclaiming a frame\) page faults/ {print $2}' "$DIR/host_$tag.time")
  switches=$(awk -F': ' '/Voluntary context switches/ {v=$2} /Involuntary context switches/ {i=$2} END {print v "+" i}' "$DIR/host_$tag.time")
  log "cdc-host, $w worker(s): $(printf '%.2f' "$wall") s, $ranges range(s), $faults minor page faults, $switches (in)voluntary context switches"
  # With HOST_RUST_LOG=cdc_host::source::snapshot=debug: where the chunks' time went.
  grep -q 'snapshot chunk timings' "$DIR/host_$tag.log" 2>/dev/null &&
    log "chunks: $(grep 'snapshot chunk timings' "$DIR/host_$tag.log" | sed 's/\x1b\[[0-9;]*m//g' | awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] ~ /_ms$/) t[kv[1]] += kv[2] } n++ }
      END { printf "%d chunks, sum", n; for (k in t) printf " %s=%d", k, t[k] }')"
  RESULTS+=("$round $(basename "$bin") $w $fmt $ranges $wall $cpu $rss $COPY_RPS")
}

RESULTS=()
read -r -a BINS <<<"$HOST_BINS"
for ((round = 1; round <= ROUNDS; round++)); do
  copy_ref
  # Each round starts with a different binary, so none always runs first.
  for ((j = 0; j < ${#BINS[@]}; j++)); do
    b=$(((j + round - 1) % ${#BINS[@]}))
    for fmt in $FORMATS; do
      for w in $WORKERS; do
        snapshot_run "${BINS[$b]}" "$fmt" "$w" "r${round}_b${b}_${fmt}_w$w"
      done
    done
  done
done

# --- report --------------------------------------------------------------------------------
printf '\nsnapshot of %s rows (%s MB table), chunk_rows %s, memory_budget_mb %s, %s cores\n' \
  "$ROWS" "$SIZE_MB" "${CHUNK_ROWS:-default}" "$MEMORY_BUDGET_MB" "$(nproc)"
printf '%-5s %-30s %8s %10s %8s %8s %9s %8s\n' round tool ranges wall_s rows/s cpu_s peak_MB x_COPY
last_round=
for r in "${RESULTS[@]}"; do
  read -r round bin w fmt ranges wall cpu rss copy_rps <<<"$r"
  if [[ $round != "$last_round" ]]; then
    printf '%-5s %-30s %8s %10.2f %8.0f %8s %9s %8s\n' "$round" "psql COPY (1 conn)" 1 "$(calc "$ROWS / $copy_rps")" "$copy_rps" - - 1.00
    last_round=$round
  fi
  rps=$(calc "$ROWS / $wall")
  label="cdc-host w=$w $fmt"
  ((${#BINS[@]} > 1)) && label+=" $bin"
  printf '%-5s %-30s %8s %10.2f %8.0f %8.2f %9.1f %8.2f\n' "$round" "$label" "$ranges" "$wall" "$rps" "$cpu" "$rss" "$(calc "$rps / $copy_rps")"
done
if ((ROUNDS > 1)); then
  echo "median over $ROUNDS rounds (x_COPY to each round's COPY; cpu_s):"
  printf '%s\n' "${RESULTS[@]}" | awk -v rows="$ROWS" '{ k = "w=" $3 " " $4 " " $2; x[k] = x[k] " " (rows / $6) / $9; c[k] = c[k] " " $7 }
    function med(s,   a, n, i, j, t) { n = split(s, a, " "); for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    END { for (k in x) printf "  %-40s x_COPY %.2f   cpu_s %.2f\n", k, med(x[k]), med(c[k]) }'
fi
