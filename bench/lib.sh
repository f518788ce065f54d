# Sourced by bench/drain.sh and bench/sinks.sh: helpers and THE backlog workload, defined once
# so both benchmarks measure the same thing. The caller defines log(), sql(), the PSQL array,
# DIR, ROWS, BATCH and START_LSN, and a LOAD_PID variable its cleanup trap kills.

die() { log "ERROR: $*"; exit 1; }
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
now() { date +%s.%N; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# parse_time FILE -> "cpu_s rss_mb elapsed_s" from `/usr/bin/time -v` output
parse_time() {
  awk -F': ' '
    /User time \(seconds\)/ {u = $2}
    /System time \(seconds\)/ {s = $2}
    /Maximum resident set size/ {r = $2}
    /Elapsed \(wall clock\) time/ {
      n = split($2, a, ":"); e = 0
      for (i = 1; i <= n; i++) e = e * 60 + a[i]
    }
    END {printf "%.2f %.1f %.2f\n", u + s, r / 1024, e}' "$1"
}

# load_backlog: ROWS ~200-byte rows into `bench` in transactions of BATCH rows (one DO block,
# COMMIT after every BATCH); PAD (default 0) adds that many bytes of text to each row (wide
# rows: e.g. ROWS=1000000 BATCH=1000000 PAD=1000 is a ~1.2 GB single transaction). The end
# LSN is read in the same session right after the last COMMIT. Sets END_LSN, TXNS, WAL_MB,
# ROW_BYTES. LOAD_TABLES (default `bench`): several tables of bench's columns, e.g.
# "bench_a bench_b": transaction k goes to table k mod their number (bench/sinks.sh
# MODE=sidecars: two tables, each its own publication, the rows split evenly).
load_backlog() {
  local pad=${PAD:-0}
  [[ $pad =~ ^[0-9]+$ ]] || die "PAD must be a non-negative integer"
  local wide=
  ((pad > 0)) && wide=" (+$pad bytes of text per row)"
  log "loading $ROWS rows in transactions of $BATCH$wide"
  local t0 t1 tables
  read -r -a tables <<<"${LOAD_TABLES:-bench}"
  ((${#tables[@]} > 0)) || die "LOAD_TABLES is empty"
  # The INSERT of one transaction; with several tables, the same statement run through
  # EXECUTE on table k mod n (\$1, \$2: the first and last row number).
  local insert="SELECT g, md5(g::text) || md5((g * 2)::text) || md5((g * 3)::text) || repeat('x', $pad),
           (g % 10000) / 100.0,
           jsonb_build_object('k', g, 'v', md5(g::text)),
           now()"
  local body
  if ((${#tables[@]} == 1)); then
    body="INSERT INTO ${tables[0]}(n, t, amount, doc, ts)
    $insert
    FROM generate_series(s, least(s + $BATCH - 1, $ROWS)) AS g;"
  else
    local list
    list=$(printf "'%s'," "${tables[@]}")
    body="EXECUTE format(\$q\$INSERT INTO %I(n, t, amount, doc, ts) ${insert//%/%%}
      FROM generate_series(\$1, \$2) AS g\$q\$, (ARRAY[${list%,}])[k % ${#tables[@]} + 1])
      USING s, least(s + $BATCH - 1, $ROWS);
    k := k + 1;"
  fi
  t0=$(now)
  # In the background + `wait`, so a signal is handled at once (the caller's trap).
  "${PSQL[@]}" -d bench >"$DIR/end_lsn" <<SQL &
DO \$\$
DECLARE s bigint := 1; k int := 0;
BEGIN
  WHILE s <= $ROWS LOOP
    $body
    COMMIT;
    s := s + $BATCH;
  END LOOP;
END
\$\$;
SELECT pg_current_wal_insert_lsn();
SQL
  LOAD_PID=$!
  wait "$LOAD_PID" || die "load failed"
  LOAD_PID=
  END_LSN=$(tr -d '[:space:]' <"$DIR/end_lsn")
  t1=$(now)
  TXNS=$(( (ROWS + BATCH - 1) / BATCH ))
  WAL_MB=$(sql "SELECT round(pg_wal_lsn_diff('$END_LSN', '$START_LSN') / 1048576.0, 1)")
  ROW_BYTES=$(sql "SELECT round(avg(pg_column_size(b.*))) FROM (SELECT * FROM ${tables[0]} LIMIT 10000) b")
  log "loaded in $(printf '%.1f' "$(calc "$t1 - $t0")")s: $TXNS txns, WAL $START_LSN..$END_LSN (${WAL_MB} MB), ~${ROW_BYTES} B/row"
}

# --- polling without disturbing the measurement ----------------------------------------------
# The drain loops poll the slot every POLL_SECS. A psql process per poll (fork, exec, a new
# backend, auth) cost ~20 ms of CPU each, 10 % of a core taken from the process being timed
# on a busy 2-core box; so one psql session is kept open as a coprocess, and /proc is read
# with builtins. The caller's cleanup runs poll_close.
POLL_SECS=${POLL_SECS:-0.1}

# poll_open DB: starts the session (needs the PSQL array).
poll_open() {
  coproc POLL_PSQL { exec "${PSQL[@]}" -d "$1" -f - 2>&1; }
  POLL_PSQL_IN=${POLL_PSQL[1]} POLL_PSQL_OUT=${POLL_PSQL[0]}
}
poll_close() {
  [[ -n ${POLL_PSQL_PID:-} ]] && kill -TERM "$POLL_PSQL_PID" 2>/dev/null
  POLL_PSQL_PID=
  return 0
}
# poll_sql SQL: runs one single-row, single-column query; the value in POLL_OUT (no
# subshell: the coprocess's descriptors are not inherited by one).
poll_sql() {
  printf '%s\n' "$1" >&"$POLL_PSQL_IN" || die "polling session gone"
  IFS= read -r -t 60 POLL_OUT <&"$POLL_PSQL_OUT" || die "polling session: no answer to: $1"
  [[ $POLL_OUT != *ERROR* ]] || die "polling query failed: $POLL_OUT"
}

# proc_ticks PID: user+system CPU clock ticks of a live process in TICKS (empty when gone).
proc_ticks() {
  local s f
  TICKS=
  { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 0
  # Fields after "pid (comm) ": state is 1st, utime 12th, stime 13th.
  read -r -a f <<<"${s##*) }"
  TICKS=$((f[11] + f[12]))
}

# machine_ticks: busy (steal included), stolen (by the hypervisor: a noisy neighbour) and
# total clock ticks of all CPUs so far, in M_BUSY, M_STEAL and M_TOTAL; the difference of
# two readings tells whether a phase kept every core busy, and how much of it the
# machine's other tenants took.
machine_ticks() {
  local cpu user nice sys idle iowait irq softirq steal rest
  read -r cpu user nice sys idle iowait irq softirq steal rest </proc/stat
  M_BUSY=$((user + nice + sys + irq + softirq + steal))
  M_STEAL=$steal
  M_TOTAL=$((M_BUSY + idle + iowait))
}
