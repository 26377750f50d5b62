#!/bin/bash
# Issue 12: two gateway binaries alternated in one run on SQLite (a fresh database each):
# GetReferral and SubmitReferral at 4 x 64 with the echo baseline of the same run
# (`jisr bench --baseline`), and RSS. docs/benchmarks.md.
#   scripts/bench-sqlite-ab.sh BEFORE_BINARY AFTER_BINARY [ROUNDS]
set -e
cd "$(dirname "$0")/.."
BEFORE=$1 AFTER=$2 ROUNDS=${3:-2}
export RUST_LOG=warn JISR_LOG=warn
export JISR_LIMITS__REQUESTS_PER_SECOND=1000000 JISR_LIMITS__BURST=1000000 JISR_LIMITS__MAX_IN_FLIGHT_PER_AGENCY=4096
run() {
  local name=$1 bin=$2
  rm -rf /tmp/jisr-ab && mkdir -p /tmp/jisr-ab
  JISR_DATABASE__URL=sqlite:///tmp/jisr-ab/jisr.db JISR_DOCUMENTS__DIR=/tmp/jisr-ab/docs \
    "$bin" serve > /tmp/jisr-ab/serve.log 2>&1 &
  local gw=$!
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/7443) 2>/dev/null && break; sleep 0.2; done
  for rpc in get submit; do
    echo "== $name $rpc 4x64: $("$bin" bench --baseline --rpc $rpc --connections 4 --in-flight 64 --duration 10 \
      | grep -o '"baseline":{[^}]*"throughput_rps":[0-9.]*\|"p50_ms":[0-9.]*,"p90_ms":[0-9.]*,"p999_ms":[0-9.]*,"p99_ms":[0-9.]*,"ratio_to_baseline":{[^}]*},"rpc":"[A-Za-z]*","seeded":[0-9]*,"throughput_rps":[0-9.]*' | tr '\n' ' ')"
  done
  echo "== $name RSS: $(grep VmRSS /proc/$gw/status)"
  kill -TERM $gw; wait $gw || true
}
for r in $(seq 1 "$ROUNDS"); do
  run "before (round $r)" "$BEFORE"
  run "after (round $r)" "$AFTER"
done
