#!/bin/bash
# Issue 12, point 6: how SubmitReferral's throughput and latency change with the calls in
# flight (1 to 256) and the connections (1 to 16), for sizing a deployment. Starts BINARY's
# gateway on a fresh database (limits raised for the one sending agency) and prints one
# table row per run of `jisr bench --connections C --in-flight N --duration 8`.
# docs/benchmarks.md ("Sizing").
#   scripts/bench-sizing.sh BINARY sqlite|postgres
set -e
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
BIN=$1 BACKEND=$2
URL=$(fresh_database "$BACKEND" jisr_sizing)
start_gateway "$BIN" "$URL" jisr_sizing
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
drop_database "$BACKEND" jisr_sizing
