#!/bin/bash
# Issue 12: two gateway binaries alternated in one run, each on a fresh database, every
# figure with the in-process echo baseline of the same run (`jisr bench --baseline`):
# GetReferral and SubmitReferral at 4 x 64, SubmitReferral at 1 x 1, and RSS.
# docs/benchmarks.md.
#   scripts/bench-ab.sh sqlite|postgres BEFORE_BINARY AFTER_BINARY [ROUNDS]
set -e
cd "$(dirname "$0")/.."
BACKEND=$1 BEFORE=$2 AFTER=$3 ROUNDS=${4:-2}
export RUST_LOG=warn JISR_LOG=warn
export JISR_LIMITS__REQUESTS_PER_SECOND=1000000 JISR_LIMITS__BURST=1000000 JISR_LIMITS__MAX_IN_FLIGHT_PER_AGENCY=4096
PG="-h 127.0.0.1 -U postgres"
fresh_database() {
  rm -rf /tmp/jisr-ab && mkdir -p /tmp/jisr-ab
  case $BACKEND in
    sqlite) echo sqlite:///tmp/jisr-ab/jisr.db ;;
    postgres)
      psql $PG -d test -qc "DROP DATABASE IF EXISTS jisr_ab" -c "CREATE DATABASE jisr_ab" >&2
      echo postgres://postgres@127.0.0.1:5432/jisr_ab ;;
    *) echo "backend: sqlite or postgres" >&2; exit 2 ;;
  esac
}
run() {
  local name=$1 bin=$2
  JISR_DATABASE__URL=$(fresh_database) JISR_DOCUMENTS__DIR=/tmp/jisr-ab/docs \
    "$bin" serve > /tmp/jisr-ab/serve.log 2>&1 &
  local gw=$!
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/7443) 2>/dev/null && break; sleep 0.2; done
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
[ "$BACKEND" = postgres ] && psql $PG -d test -qc "DROP DATABASE IF EXISTS jisr_ab" || true
