#!/bin/bash
# Store calls under concurrent requests on a PostgreSQL-backed serve node, this build
# against an older one, in one run (issue 25: the store off the request path).
#   BENCH_BEFORE=/path/to/older/runway bash benches/store_calls.sh    (as root)
# Needs this build in release (cargo build --release) and Debian's PostgreSQL 15. Each
# variant serves a fresh database on a throwaway cluster (fsync off); 16 clients make
# 150 requests each (the builds list, a build by number (404 here: no builds), the
# workers' list with the API token); rounds alternate, before, after, before, after.
set -u
: "${BENCH_BEFORE:?BENCH_BEFORE=/path/to/an/older/runway}"
HERE=$(cd "$(dirname "$0")" && pwd)
B=$(mktemp -d /tmp/runway-store-calls.XXXX)
chmod 755 "$B"
PG=/usr/lib/postgresql/15/bin
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mkdir -p "$B/data" && chown postgres "$B/data"
runuser -u postgres -- $PG/initdb -D "$B/data" -A trust -U postgres >/dev/null
pgport=$(free_port)
runuser -u postgres -- $PG/postgres -D "$B/data" -p "$pgport" -k "$B/data" -c fsync=off \
  -c listen_addresses=127.0.0.1 > "$B/pg.log" 2>&1 &
PGPID=$!
for _ in $(seq 150); do $PG/pg_isready -q -h 127.0.0.1 -p "$pgport" && break; sleep 0.2; done
$PG/pg_isready -q -h 127.0.0.1 -p "$pgport" || { cat "$B/pg.log"; exit 1; }
for variant in before after before after; do
  bin=$([ $variant = before ] && echo "$BENCH_BEFORE" || echo "$HERE/../target/release/runway")
  db=bench_$(date +%s%N)
  runuser -u postgres -- $PG/psql -h 127.0.0.1 -p "$pgport" -U postgres -c "create database $db" >/dev/null
  port=$(free_port)
  mkdir -p "$B/state-$db"
  cat > "$B/runway-$db.toml" <<TOML
listen = "127.0.0.1:$port"
database_url_env = "BENCH_DB"
api_token_env = "BENCH_TOKEN"
concurrency = 1
[[repo]]
name = "o/app"
url = "$B"
TOML
  BENCH_DB="postgres://postgres@127.0.0.1:$pgport/$db" BENCH_TOKEN=tok RUNWAY_STATE_DIR="$B/state-$db" \
    "$bin" serve --config "$B/runway-$db.toml" > "$B/serve-$db.log" 2>&1 &
  SP=$!
  for _ in $(seq 150); do curl -s -m 2 -o /dev/null "http://127.0.0.1:$port/api/builds" && break; sleep 0.2; done
  echo -n "$variant: "
  python3 "$HERE/store_calls.py" "127.0.0.1:$port" 16 150
  kill $SP; wait $SP 2>/dev/null
done
kill $PGPID; wait $PGPID 2>/dev/null
rm -rf "$B"
