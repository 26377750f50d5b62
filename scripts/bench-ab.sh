#!/bin/bash
# Issue 12: two gateway binaries alternated in one run, each on a fresh database, every
# figure with the in-process echo baseline of the same run (`jisr bench --baseline`):
# GetReferral and SubmitReferral at 4 x 64, SubmitReferral at 1 x 1, and RSS.
# docs/benchmarks.md.
#   scripts/bench-ab.sh sqlite|postgres BEFORE_BINARY AFTER_BINARY [ROUNDS]
set -e
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
BACKEND=$1 BEFORE=$2 AFTER=$3 ROUNDS=${4:-2}
run() {
  local name=$1 bin=$2
  URL=$(fresh_database "$BACKEND" jisr_ab)
  start_gateway "$bin" "$URL" jisr_ab
  local gw=$GW
  for rpc in get submit; do
    echo "== $name $rpc 4x64: $("$bin" bench --baseline --rpc $rpc --connections 4 --in-flight 64 --duration 10 )"
  done
  echo "== $name submit 1x1: $("$bin" bench --baseline --connections 1 --in-flight 1 --duration 5 )"
  echo "== $name RSS: $(grep VmRSS /proc/$gw/status)"
  kill -TERM $gw; wait $gw || true
}
for r in $(seq 1 "$ROUNDS"); do
  run "before (round $r)" "$BEFORE"
  run "after (round $r)" "$AFTER"
done
drop_database "$BACKEND" jisr_ab
