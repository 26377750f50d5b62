#!/bin/bash
# Issue 12: where a load's CPU goes. Starts BINARY's gateway on a fresh database, runs
# `jisr bench --rpc RPC` at 4 x 64 for 14 s, and prints over 8 s of it (100 ticks are one
# core-second; the 2 cores have 1,600 in 8 s) the CPU ticks of the gateway, of all postgres
# processes and of the busiest ones on their own, and the machine's idle ticks (the rest is
# the load generator and the kernel); then what the database's sessions were doing
# (PostgreSQL), the writer's batch sizes from /metrics, and the run's rate and latency.
# docs/benchmarks.md.
#   scripts/bench-split.sh BINARY sqlite|postgres [submit|get]
set -e
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
BIN=$1 BACKEND=$2 RPC=${3:-submit}
URL=$(fresh_database "$BACKEND" jisr_split)
start_gateway "$BIN" "$URL" jisr_split
# Each postgres process's ticks and what it is (the writer's backend, the WAL writer, ...).
each_postgres() {
  for pid in $(pgrep -x postgres); do
    echo "$pid $(awk '{print $14 + $15}' /proc/$pid/stat 2>/dev/null || echo 0) $(tr '\0' ' ' < /proc/$pid/cmdline 2>/dev/null | cut -c1-60)"
  done
}
ticks() {
  local p
  p=$(each_postgres | awk '{s += $2} END {print s + 0}')
  echo "$(awk '{print $14 + $15}' /proc/$GW/stat) $p $(awk '/^cpu /{print $5}' /proc/stat)"
}
"$BIN" bench --rpc "$RPC" --connections 4 --in-flight 64 --duration 14 > /tmp/jisr_split/bench.json &
B=$!
sleep 3
read -r g0 p0 i0 < <(ticks)
each_postgres > /tmp/jisr_split/pg0
sleep 8
read -r g1 p1 i1 < <(ticks)
each_postgres > /tmp/jisr_split/pg1
echo "over 8 s: gateway $((g1 - g0)) ticks, postgres $((p1 - p0)), idle $((i1 - i0))"
if [ "$BACKEND" = postgres ]; then
  echo "postgres processes over 8 s (800 ticks are one core), the busiest first:"
  python3 -c "
before = {l.split()[0]: int(l.split()[1]) for l in open('/tmp/jisr_split/pg0')}
rows = []
for l in open('/tmp/jisr_split/pg1'):
    pid, t, what = (l.rstrip('\n').split(None, 2) + [''])[:3]
    if pid in before:
        rows.append((int(t) - before[pid], what))
for d, what in sorted(rows, reverse=True)[:4]:
    print(f'  {d:4d}  {what}')"
  psql $PG -d jisr_split -tAc "SELECT state, wait_event, left(query, 60) FROM pg_stat_activity \
    WHERE datname = 'jisr_split' AND pid <> pg_backend_pid()" | sort | uniq -c | sort -rn
fi
curl -s 127.0.0.1:9464/metrics | grep -E "^jisr_writer_batch_size_(sum|count)"
wait $B
python3 -c "import json; d = json.load(open('/tmp/jisr_split/bench.json')); print(d['throughput_rps'], 'calls/s, p50', d['p50_ms'], 'ms, p99', d['p99_ms'], 'ms')"
kill -TERM $GW; wait $GW || true
drop_database "$BACKEND" jisr_split
