#!/bin/bash
# Issue 12, point 6: how SubmitReferral's throughput and latency change with the calls in
# flight (1 to 256) and the connections (1 to 16), for sizing a deployment. Starts BINARY's
# gateway on a fresh database (limits raised for the one sending agency) and prints one
# table row per run of `jisr bench --connections C --in-flight N --duration 8`.
# docs/benchmarks.md ("Sizing").
#   scripts/bench-sizing.sh BINARY sqlite|postgres
set -e
cd "$(dirname "$0")/.."
BIN=$1 BACKEND=$2
export RUST_LOG=warn JISR_LOG=warn
export JISR_LIMITS__REQUESTS_PER_SECOND=1000000 JISR_LIMITS__BURST=1000000 JISR_LIMITS__MAX_IN_FLIGHT_PER_AGENCY=4096
PG="-h 127.0.0.1 -U postgres"
rm -rf /tmp/jisr-sizing && mkdir -p /tmp/jisr-sizing
case $BACKEND in
  sqlite) URL=sqlite:///tmp/jisr-sizing/jisr.db ;;
  postgres)
    psql $PG -d test -qc "DROP DATABASE IF EXISTS jisr_sizing" -c "CREATE DATABASE jisr_sizing"
    URL=postgres://postgres@127.0.0.1:5432/jisr_sizing ;;
  *) echo "backend: sqlite or postgres" >&2; exit 2 ;;
esac
JISR_DATABASE__URL=$URL JISR_DOCUMENTS__DIR=/tmp/jisr-sizing/docs "$BIN" serve > /tmp/jisr-sizing/serve.log 2>&1 &
GW=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/7443) 2>/dev/null && break; sleep 0.2; done
echo "| connections (C) | in flight (N) | req/s | errors | p50 ms | p99 ms | p99.9 ms |"
echo "|---|---|---|---|---|---|---|"
for cn in "4 1" "4 4" "4 16" "4 64" "4 256" "1 64" "16 64"; do
  read -r c n <<< "$cn"
  "$BIN" bench --connections "$c" --in-flight "$n" --duration 8 | python3 -c "
import json, sys
d = json.load(sys.stdin)
print(f\"| $c | $n | {d['throughput_rps']:,.0f} | {d['errors']} | {d['p50_ms']:.2f} | {d['p99_ms']:.2f} | {d['p999_ms']:.2f} |\")"
done
kill -TERM $GW; wait $GW || true
[ "$BACKEND" = postgres ] && psql $PG -d test -qc "DROP DATABASE IF EXISTS jisr_sizing" || true
