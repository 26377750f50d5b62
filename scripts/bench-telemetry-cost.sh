#!/bin/bash
# Telemetry cost: SubmitReferral 4x64, traces off vs traces at 1.0 + metrics scraped every 5 s.
# Also the gateway's CPU time per call (utime+stime from /proc, the gateway run only) and the
# sink's CPU. Needs: cargo build --release --bin jisr --example otlp_sink. docs/benchmarks.md,
# "Telemetry cost".
cd "$(dirname "$0")/.."
B=./target/release/jisr
TCK=$(getconf CLK_TCK)
cpu() { awk -v t=$TCK '{print ($14+$15)/t}' /proc/$1/stat; }
export RUST_LOG=warn JISR_LOG=warn
export JISR_LIMITS__REQUESTS_PER_SECOND=1000000 JISR_LIMITS__BURST=1000000 JISR_LIMITS__MAX_IN_FLIGHT_PER_AGENCY=4096
./target/release/examples/otlp_sink 127.0.0.1:4317 > /tmp/tb/sink.log 2>&1 &
SINK=$!
sleep 1
for round in 1 2 3 4; do
for mode in off on; do
  rm -rf /tmp/gw && mkdir -p /tmp/gw
  export JISR_DATABASE__URL=sqlite:///tmp/gw/jisr.db JISR_DOCUMENTS__DIR=/tmp/gw/docs
  if [ $mode = on ]; then
    env JISR_TELEMETRY__ENDPOINT=http://127.0.0.1:4317 JISR_TELEMETRY__SAMPLING_RATIO=1.0 $B serve > /tmp/tb/gw.log 2>&1 &
  else
    env JISR_ADMIN__ENABLED=false $B serve > /tmp/tb/gw.log 2>&1 &
  fi
  GW=$!
  for i in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/7443) 2>/dev/null && break; sleep 0.2; done
  SCRAPER=
  if [ $mode = on ]; then
    (while true; do curl -s -o /dev/null 127.0.0.1:9464/metrics; sleep 5; done) &
    SCRAPER=$!
  fi
  g0=$(cpu $GW); s0=$(cpu $SINK); n0=$(tail -1 /tmp/tb/sink.log | grep -o '[0-9]*$'); n0=${n0:-0}
  out=$($B bench --baseline --rpc submit --connections 4 --in-flight 64 --duration 20)
  g1=$(cpu $GW); s1=$(cpu $SINK)
  [ -n "$SCRAPER" ] && kill $SCRAPER
  sleep 3
  n1=$(tail -1 /tmp/tb/sink.log | grep -o '[0-9]*$'); n1=${n1:-0}
  python3 - "$round" "$mode" "$out" "$g0" "$g1" "$s0" "$s1" "$n0" "$n1" <<'PY'
import json,sys
r,mode,out,g0,g1,s0,s1,n0,n1=sys.argv[1:]
lines=[json.loads(l) for l in out.splitlines() if l.startswith('{')]
d=lines[-1]
calls=d['ok']
gw_cpu=float(g1)-float(g0)
print(f"round {r} {mode:3}: {d['throughput_rps']:8.1f}/s  ratio {d['ratio_to_baseline']['throughput']:.3f}  echo {d['baseline']['throughput_rps']:8.1f}/s  p50 {d['p50_ms']:.2f} p99 {d['p99_ms']:.2f} ms  errors {d['errors']}  gateway CPU {gw_cpu*1e6/calls:6.1f} us/call  sink CPU {float(s1)-float(s0):.2f} s  spans {int(n1)-int(n0)} for {calls} calls")
PY
  kill -TERM $GW; wait $GW
done
done
kill $SINK
