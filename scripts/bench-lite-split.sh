#!/bin/bash
# Issue 12: where a load's CPU goes on SQLite. Starts BINARY's gateway on a fresh SQLite
# database, runs `jisr bench --rpc RPC` at 4 x 64 for 12 s, and prints the gateway's CPU ticks
# and the machine's idle ticks over 6 s of it (100 ticks are one core-second; the 2 cores have
# 1,200 in 6 s; the rest is the load generator and the kernel), the writer's batch sizes from
# /metrics, and the run's rate and latency. docs/benchmarks.md ("Where issue #12 ends").
# scripts/bench-pg-split.sh does the same on PostgreSQL.
#   scripts/bench-lite-split.sh BINARY [submit|get]
set -e
cd "$(dirname "$0")/.."
BIN=$1 RPC=${2:-submit}
export RUST_LOG=warn JISR_LOG=warn
export JISR_LIMITS__REQUESTS_PER_SECOND=1000000 JISR_LIMITS__BURST=1000000 JISR_LIMITS__MAX_IN_FLIGHT_PER_AGENCY=4096
rm -rf /tmp/jisr-split && mkdir -p /tmp/jisr-split
JISR_DATABASE__URL=sqlite:///tmp/jisr-split/jisr.db JISR_DOCUMENTS__DIR=/tmp/jisr-split/docs \
  "$BIN" serve > /tmp/jisr-split/serve.log 2>&1 &
GW=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/7443) 2>/dev/null && break; sleep 0.2; done
ticks() { echo "$(awk '{print $14 + $15}' /proc/$GW/stat) $(awk '/^cpu /{print $5}' /proc/stat)"; }
"$BIN" bench --rpc "$RPC" --connections 4 --in-flight 64 --duration 12 > /tmp/jisr-split/bench.json &
B=$!
sleep 3
read -r g0 i0 < <(ticks)
sleep 6
read -r g1 i1 < <(ticks)
echo "over 6 s: gateway $((g1 - g0)) ticks, idle $((i1 - i0))"
curl -s 127.0.0.1:9464/metrics | grep -E "^jisr_writer_batch_size_(sum|count)"
wait $B
python3 -c "import json; d = json.load(open('/tmp/jisr-split/bench.json')); print(d['throughput_rps'], 'calls/s, p50', d['p50_ms'], 'ms, p99', d['p99_ms'], 'ms')"
kill -TERM $GW; wait $GW || true
