#!/bin/bash
# Issue 12: where a SubmitReferral load's time goes on PostgreSQL. Starts BINARY's gateway on
# a fresh database, runs `jisr bench --rpc RPC` at 4 x 64 for 14 s, and prints the CPU ticks
# of the gateway and of every postgres process and the machine's idle ticks over 8 s of it
# (100 ticks are one core-second), the busiest postgres processes on their own, what the
# database's sessions were doing, and the writer's batch sizes from /metrics. docs/benchmarks.md.
#   scripts/bench-pg-split.sh BINARY [submit|get]
set -e
cd "$(dirname "$0")/.."
BIN=$1 RPC=${2:-submit}
export RUST_LOG=warn JISR_LOG=warn
export JISR_LIMITS__REQUESTS_PER_SECOND=1000000 JISR_LIMITS__BURST=1000000 JISR_LIMITS__MAX_IN_FLIGHT_PER_AGENCY=4096
PG="-h 127.0.0.1 -U postgres"
psql $PG -d test -qc "DROP DATABASE IF EXISTS jisr_split" -c "CREATE DATABASE jisr_split" 2>/dev/null
rm -rf /tmp/jisr-split && mkdir -p /tmp/jisr-split
JISR_DATABASE__URL=postgres://postgres@127.0.0.1:5432/jisr_split JISR_DOCUMENTS__DIR=/tmp/jisr-split/docs \
  "$BIN" serve > /tmp/jisr-split/serve.log 2>&1 &
GW=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/7443) 2>/dev/null && break; sleep 0.2; done
ticks() {
  local g p=0 t
  g=$(awk '{print $14 + $15}' /proc/$GW/stat)
  for pid in $(pgrep -x postgres); do
    t=$(awk '{print $14 + $15}' /proc/$pid/stat 2>/dev/null || echo 0)
    p=$((p + t))
  done
  echo "$g $p $(awk '/^cpu /{print $5}' /proc/stat)"
}
# Each postgres process's ticks and what it is (the writer's backend, the WAL writer, ...).
each_postgres() {
  for pid in $(pgrep -x postgres); do
    echo "$pid $(awk '{print $14 + $15}' /proc/$pid/stat 2>/dev/null || echo 0) $(tr '\0' ' ' < /proc/$pid/cmdline 2>/dev/null | cut -c1-60)"
  done
}
"$BIN" bench --rpc "$RPC" --connections 4 --in-flight 64 --duration 14 > /tmp/jisr-split/bench.json &
B=$!
sleep 3
read -r g0 p0 i0 < <(ticks)
each_postgres > /tmp/jisr-split/pg0
sleep 8
read -r g1 p1 i1 < <(ticks)
each_postgres > /tmp/jisr-split/pg1
echo "over 8 s: gateway $((g1 - g0)) ticks, postgres $((p1 - p0)), idle $((i1 - i0))"
echo "postgres processes over 8 s (800 ticks are one core), the busiest first:"
python3 -c "
before = {l.split()[0]: int(l.split()[1]) for l in open('/tmp/jisr-split/pg0')}
rows = []
for l in open('/tmp/jisr-split/pg1'):
    pid, t, what = (l.rstrip('\n').split(None, 2) + [''])[:3]
    if pid in before:
        rows.append((int(t) - before[pid], what))
for d, what in sorted(rows, reverse=True)[:4]:
    print(f'  {d:4d}  {what}')"
psql $PG -d jisr_split -tAc "SELECT state, wait_event, left(query, 60) FROM pg_stat_activity \
  WHERE datname = 'jisr_split' AND pid <> pg_backend_pid()" | sort | uniq -c | sort -rn
curl -s 127.0.0.1:9464/metrics | grep -E "^jisr_writer_batch_size_(sum|count)"
wait $B
python3 -c "import json; d = json.load(open('/tmp/jisr-split/bench.json')); print(d['throughput_rps'], 'calls/s, p50', d['p50_ms'], 'ms')"
kill -TERM $GW; wait $GW || true
psql $PG -d test -qc "DROP DATABASE IF EXISTS jisr_split"
