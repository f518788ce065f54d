#!/usr/bin/env bash
# Memory benchmark: cdc-host's peak RSS while draining (1) the 1M-row backlog of
# bench/drain.sh and (2) one ~1.2 GB transaction (1M rows of ~1.2 KB), each next to the
# configured memory budget ([pipeline] memory_budget_mb, default 256). A benchmark: run it on
# demand, it prints figures; it is not a test.
#
#   bench/memory.sh                          # both runs
#   ONLY=big bench/memory.sh                 # only the 1 GB transaction
#   HOST_EXTRA_TOML=$'[pipeline]\nmemory_budget_mb = 128' bench/memory.sh
#
# Each run is bench/drain.sh (throwaway Postgres, pg_recvlogical then cdc-host on the same
# backlog; peak RSS from /usr/bin/time -v), so the same env applies (HOST_BIN,
# CARGO_TARGET_DIR, KEEP_BENCH_DIR, HOST_EXTRA_TOML, ...); SKIP_BUILD=1 skips the release
# build. BUDGET_MB (256) is what the figures are compared with: set it with the config.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
BUDGET_MB=${BUDGET_MB:-256}
ONLY=${ONLY:-}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/cdc-target}
results=()

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  (cd .. && cargo build --release -p cdc-host)
fi

run() {
  local name=$1 out
  shift
  out=$(mktemp)
  echo "[memory] $name: $*" >&2
  env "$@" ./drain.sh 2>&1 | tee "$out" >&2
  # The cdc-host line of drain.sh's table: tool wall_s changes/s cpu_s peak_rss_MB
  local line
  line=$(grep -E '^cdc-host ' "$out" | tail -n 1)
  rm -f "$out"
  [[ -n $line ]] || { echo "[memory] $name: no cdc-host figures" >&2; exit 1; }
  results+=("$name|$line")
}

if [[ -z $ONLY || $ONLY == backlog ]]; then
  run "1M-row backlog (txns of 1000)" SKIP_BUILD=1 ROWS=1000000 BATCH=1000
fi
if [[ -z $ONLY || $ONLY == big ]]; then
  run "one ~1.2 GB transaction" SKIP_BUILD=1 ROWS=1000000 BATCH=1000000 PAD=1000
fi

echo
echo "memory benchmark: cdc-host peak RSS against a budget of ${BUDGET_MB} MB"
printf '%-34s %8s %10s %7s %12s %s\n' run wall_s changes/s cpu_s peak_rss_MB verdict
for r in "${results[@]}"; do
  name=${r%%|*}
  read -r _ wall cps cpu rss _ <<<"${r#*|}"
  verdict=$(awk -v r="$rss" -v b="$BUDGET_MB" 'BEGIN { print (r <= b) ? "within budget" : "OVER BUDGET" }')
  printf '%-34s %8s %10s %7s %12s %s\n' "$name" "$wall" "$cps" "$cpu" "$rss" "$verdict"
done
