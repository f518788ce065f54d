#!/usr/bin/env bash
# What a snapshot's chunk queries cost the server, without cdc-host: the same table as
# bench/snapshot.sh read by psql (to /dev/null) whole and in key-ordered chunks, each way
# timed. A benchmark: run it on demand, it prints figures.
#
#   bench/chunk-queries.sh                  # 3,000,000 rows, chunks of 25,000, 2 rounds
#   ROWS=1000000 CHUNK=50000 bench/chunk-queries.sh
#
# Ways: seq-text   COPY (SELECT * FROM bench) TO STDOUT          (snapshot.sh's reference)
#       seq-binary the same, FORMAT binary
#       keytext    chunks as cdc-host sent them before 2026-12-04: the columns plus id::text,
#                  ORDER BY id LIMIT n+1, FORMAT binary
#       chunk      chunks as cdc-host sends them for a key it prints itself (no id::text)
#       bitmap     id ranges without ORDER BY, enable_indexscan = off (a bitmap heap scan)
#       bounds     only the lookups a range needs first: SELECT id … OFFSET n-1 LIMIT 1
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROWS=${ROWS:-3000000}
CHUNK=${CHUNK:-25000}
ROUNDS=${ROUNDS:-2}
# shellcheck source=../scripts/pg-throwaway.sh
source "$REPO/scripts/pg-throwaway.sh"
trap pg_stop EXIT
PG_EXTRA_OPTS="-c max_wal_size=8GB -c shared_buffers=512MB" pg_start
pg_psql postgres -c "CREATE DATABASE bench" >/dev/null
sql() { pg_psql bench -A -t -c "$1"; }
sql "CREATE TABLE bench(id bigserial PRIMARY KEY, n int, t text, amount numeric(12,2), doc jsonb, ts timestamptz)"
sql "INSERT INTO bench(n, t, amount, doc, ts)
     SELECT g, md5(g::text) || md5((g * 2)::text) || md5((g * 3)::text), (g % 10000) / 100.0,
            jsonb_build_object('k', g, 'v', md5(g::text)), now()
       FROM generate_series(1, $ROWS) g" >/dev/null
sql "VACUUM ANALYZE bench" >/dev/null
cols="id, n, t, amount, doc, ts"
for way in keytext chunk bitmap bounds; do
  {
    [[ $way == bitmap ]] && echo "SET enable_indexscan = off;"
    for ((lo = 0; lo < ROWS; lo += CHUNK)); do
      case $way in
        keytext) echo "COPY (SELECT $cols, id::text FROM bench WHERE (id) > ('$lo') ORDER BY 1 LIMIT $((CHUNK + 1))) TO STDOUT (FORMAT binary);" ;;
        chunk) echo "COPY (SELECT $cols FROM bench WHERE (id) > ('$lo') ORDER BY id LIMIT $((CHUNK + 1))) TO STDOUT (FORMAT binary);" ;;
        bitmap) echo "COPY (SELECT $cols FROM bench WHERE id > $lo AND id <= $((lo + CHUNK))) TO STDOUT (FORMAT binary);" ;;
        bounds) echo "SELECT id FROM bench WHERE id > $lo ORDER BY id OFFSET $((CHUNK - 1)) LIMIT 1;" ;;
      esac
    done
  } >"$PG_DIR/$way.sql"
done
pg_psql bench -c "COPY (SELECT * FROM bench) TO STDOUT" >/dev/null # warm the cache
echo "chunk queries: $ROWS rows, chunks of $CHUNK, PG $(cat "$PG_DIR/data/PG_VERSION"), $(nproc) cores"
printf '%-6s %-11s %8s\n' round way wall_s
for ((r = 1; r <= ROUNDS; r++)); do
  for way in seq-text seq-binary keytext chunk bitmap bounds; do
    t0=$(date +%s.%N)
    case $way in
      seq-text) pg_psql bench -c "COPY (SELECT * FROM bench) TO STDOUT" >/dev/null ;;
      seq-binary) pg_psql bench -c "COPY (SELECT * FROM bench) TO STDOUT (FORMAT binary)" >/dev/null ;;
      *) pg_psql bench -f "$PG_DIR/$way.sql" >/dev/null ;;
    esac
    printf '%-6s %-11s %8s\n' "$r" "$way" "$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.2f", a - b }')"
  done
done
