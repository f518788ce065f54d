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
# ROW_BYTES.
load_backlog() {
  local pad=${PAD:-0}
  [[ $pad =~ ^[0-9]+$ ]] || die "PAD must be a non-negative integer"
  local wide=
  ((pad > 0)) && wide=" (+$pad bytes of text per row)"
  log "loading $ROWS rows in transactions of $BATCH$wide"
  local t0 t1
  t0=$(now)
  # In the background + `wait`, so a signal is handled at once (the caller's trap).
  "${PSQL[@]}" -d bench >"$DIR/end_lsn" <<SQL &
DO \$\$
DECLARE s bigint := 1;
BEGIN
  WHILE s <= $ROWS LOOP
    INSERT INTO bench(n, t, amount, doc, ts)
    SELECT g, md5(g::text) || md5((g * 2)::text) || md5((g * 3)::text) || repeat('x', $pad),
           (g % 10000) / 100.0,
           jsonb_build_object('k', g, 'v', md5(g::text)),
           now()
    FROM generate_series(s, least(s + $BATCH - 1, $ROWS)) AS g;
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
  ROW_BYTES=$(sql "SELECT round(avg(pg_column_size(b.*))) FROM (SELECT * FROM bench LIMIT 10000) b")
  log "loaded in $(printf '%.1f' "$(calc "$t1 - $t0")")s: $TXNS txns, WAL $START_LSN..$END_LSN (${WAL_MB} MB), ~${ROW_BYTES} B/row"
}
