#!/bin/bash
# Issue 12: SubmitReferral on PostgreSQL at 4 x 64 (and 1 x 1), two gateway binaries
# alternated in one run, each on a fresh database, every figure with the in-process echo
# baseline of the same run (`jisr bench --baseline`). docs/benchmarks.md.
#   scripts/bench-pg-writes.sh BEFORE_BINARY AFTER_BINARY [ROUNDS]
set -e
cd "$(dirname "$0")/.."
BEFORE=$1 AFTER=$2 ROUNDS=${3:-2}
export RUST_LOG=warn JISR_LOG=warn
export JISR_LIMITS__REQUESTS_PER_SECOND=1000000 JISR_LIMITS__BURST=1000000 JISR_LIMITS__MAX_IN_FLIGHT_PER_AGENCY=4096
PG="-h 127.0.0.1 -U postgres"
run() {
  local name=$1 bin=$2
  psql $PG -d test -qc "DROP DATABASE IF EXISTS jisr_bench" -c "CREATE DATABASE jisr_bench"
  rm -rf /tmp/jisr-bench && mkdir -p /tmp/jisr-bench
  JISR_DATABASE__URL=postgres://postgres@127.0.0.1:5432/jisr_bench JISR_DOCUMENTS__DIR=/tmp/jisr-bench/docs \
    "$bin" serve > /tmp/jisr-bench/serve.log 2>&1 &
  local gw=$!
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/7443) 2>/dev/null && break; sleep 0.2; done
  echo "== $name 4x64: $("$bin" bench --baseline --connections 4 --in-flight 64 --duration 10 | cut -c1-600)"
  echo "== $name 1x1:  $("$bin" bench --baseline --connections 1 --in-flight 1 --duration 5 | cut -c1-600)"
  echo "== $name RSS: $(grep VmRSS /proc/$gw/status)"
  kill -TERM $gw; wait $gw || true
}
for r in $(seq 1 "$ROUNDS"); do
  run "before (round $r)" "$BEFORE"
  run "after (round $r)" "$AFTER"
done
psql $PG -d test -qc "DROP DATABASE IF EXISTS jisr_bench"
