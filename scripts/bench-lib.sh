# Sourced by the gateway benchmarks (bench-ab.sh, bench-split.sh, bench-sizing.sh): the
# limits raised for a one-agency load (docs/benchmarks.md), a fresh database, and a gateway
# started on it.
export RUST_LOG=warn JISR_LOG=warn
export JISR_LIMITS__REQUESTS_PER_SECOND=1000000 JISR_LIMITS__BURST=1000000 JISR_LIMITS__MAX_IN_FLIGHT_PER_AGENCY=4096
PG="-h 127.0.0.1 -U postgres"

# fresh_database sqlite|postgres NAME: empties /tmp/NAME and creates database NAME (a file
# there on SQLite); prints its URL. Assign it (URL=$(fresh_database …)), so that a wrong
# backend stops the script.
fresh_database() {
  rm -rf "/tmp/$2" && mkdir -p "/tmp/$2"
  case $1 in
    sqlite) echo "sqlite:///tmp/$2/jisr.db" ;;
    postgres)
      psql $PG -d test -qc "DROP DATABASE IF EXISTS $2" -c "CREATE DATABASE $2" >&2
      echo "postgres://postgres@127.0.0.1:5432/$2" ;;
    *) echo "backend: sqlite or postgres" >&2; exit 2 ;;
  esac
}

# drop_database sqlite|postgres NAME
drop_database() {
  if [ "$1" = postgres ]; then psql $PG -d test -qc "DROP DATABASE IF EXISTS $2"; fi
}

# start_gateway BINARY URL NAME: `BINARY serve` on URL (documents and log under /tmp/NAME)
# once its listener takes connections; GW is its pid.
start_gateway() {
  JISR_DATABASE__URL=$2 JISR_DOCUMENTS__DIR=/tmp/$3/docs "$1" serve > "/tmp/$3/serve.log" 2>&1 &
  GW=$!
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/7443) 2>/dev/null && break; sleep 0.2; done
}
