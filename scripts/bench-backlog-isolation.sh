#!/bin/bash
# Issue 13, point 2: another agency's calls next to a backlog of more than a million
# undelivered rows for one agency (housing, an inbox that never pulls). docs/benchmarks.md.
cd "$(dirname "$0")/.."
B=./target/release/jisr
export RUST_LOG=warn JISR_LOG=warn
export JISR_LIMITS__REQUESTS_PER_SECOND=1000000 JISR_LIMITS__BURST=1000000 JISR_LIMITS__MAX_IN_FLIGHT_PER_AGENCY=4096
rm -rf /tmp/gw && mkdir -p /tmp/gw
export JISR_DATABASE__URL=sqlite:///tmp/gw/jisr.db JISR_DOCUMENTS__DIR=/tmp/gw/docs
$B serve > /tmp/tb/gw-iso.log 2>&1 &
GW=$!
for i in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/7443) 2>/dev/null && break; sleep 0.2; done
OTHER="--from family-court --to police --service urgent-protection"
echo "== other agency, empty outbox"
$B bench $OTHER --connections 1 --in-flight 4 --duration 20
$B bench $OTHER --rpc get --connections 1 --in-flight 4 --duration 10
echo "== building housing's backlog"
$B bench --connections 4 --in-flight 64 --duration 170 | cut -c1-400
echo "pending for housing: $(curl -s 127.0.0.1:9464/metrics | grep 'jisr_outbox_rows{agency="housing",state="pending"}')"
echo "== other agency, housing's backlog in place"
$B bench $OTHER --connections 1 --in-flight 4 --duration 20
$B bench $OTHER --rpc get --connections 1 --in-flight 4 --duration 10
echo "pending for housing: $(curl -s 127.0.0.1:9464/metrics | grep 'jisr_outbox_rows{agency=\"housing\"')"
echo "RSS: $(grep VmRSS /proc/$GW/status)"
kill -TERM $GW; wait $GW
