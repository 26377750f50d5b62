#!/bin/bash
# Issue 12: PostgreSQL's own ceiling for SubmitReferral's write set on this machine, with
# nothing else running (no gateway, no load generator): pgbench commits batches of N
# submissions, one multi-row INSERT per table, synchronous_commit on. docs/benchmarks.md.
# GATEWAY_BIN: the jisr binary that creates the schema (default ./target/release/jisr).
set -e
cd "$(dirname "$0")/.."
DB=jisr_ceiling
PG="-h 127.0.0.1 -U postgres"
psql $PG -d test -qc "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
# The gateway's own schema: start it once on the database (it migrates), then stop it.
mkdir -p /tmp/jisr-ceiling
JISR_DATABASE__URL=postgres://postgres@127.0.0.1:5432/$DB JISR_LISTEN_ADDR=127.0.0.1:17443 \
  JISR_ADMIN__LISTEN_ADDR=127.0.0.1:0 JISR_DOCUMENTS__DIR=/tmp/jisr-ceiling/docs JISR_LOG=warn \
  "${GATEWAY_BIN:-./target/release/jisr}" serve >/tmp/jisr-ceiling/serve.log 2>&1 &
GW=$!
for _ in $(seq 1 120); do
  [ "$(psql $PG -d $DB -Atc "SELECT to_regclass('referrals') IS NOT NULL")" = t ] && break
  sleep 0.5
done
kill -TERM $GW; wait $GW || true
psql $PG -d $DB -Atc "SHOW synchronous_commit" -c "SHOW fsync"
for n in 64 256 1024; do
  for clients in 1 4; do
    tps=$(pgbench $PG -n -f scripts/pg-ceiling/submit-batch.sql -D n=$n -c $clients -j 2 -T 20 $DB \
      | awk '/^tps/ {print $3}')
    echo "batch $n, $clients client(s): $tps transactions/s = $(echo "$tps * $n" | bc) submissions/s"
  done
done
psql $PG -d test -qc "DROP DATABASE $DB"
