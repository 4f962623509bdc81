#!/usr/bin/env bash
# make demo: the main job of pitr, end to end, in a throwaway directory.
#
# A cluster set up for archiving with `pitr init`, a base backup with
# `pitr backup`, some work, an accident (DROP TABLE) that
# `pitr events --kind drop` finds, and `pitr restore --to "<N>s ago"`
# bringing the table back into a second data directory. Everything is
# removed at the end.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
here=$(cd "$(dirname "$0")/.." && pwd)
pitr_build=${PITR_BIN:-$here/target/release/pitr}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

work=$(mktemp -d /tmp/pitr-demo.XXXXXX)
chmod 755 "$work"
# PostgreSQL refuses to run as root: as root, its programs run as `postgres`.
if [ "$(id -u)" -eq 0 ]; then
    as_pg() { runuser -u postgres -- "$@"; }
    chown postgres: "$work"
else
    as_pg() { "$@"; }
fi

stop_server() {
    local pgdata=$1
    if [ -f "$pgdata/postmaster.pid" ]; then
        local pid
        pid=$(head -n 1 "$pgdata/postmaster.pid")
        kill -INT "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
}
cleanup() {
    stop_server "$work/restored" || true
    stop_server "$work/primary" || true
    rm -rf "$work"
}
trap cleanup EXIT

# restore_command runs pitr as the postgres user: give it a copy it can run.
install -m 755 "$pitr_build" "$work/pitr"
pitr="$work/pitr"

port=$((5500 + RANDOM % 400))
sql() { as_pg "$PG_BIN/psql" -X -q -A -t -h "$work" -p "$port" -U postgres -d postgres -c "$1"; }

say "1. A primary, set up for archiving with pitr init (the repository, a conf.d file, then a check)"
as_pg "$PG_BIN/initdb" -U postgres --auth=trust -D "$work/primary" >/dev/null
cat >> "$work/primary/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$work'
include_dir = 'conf.d'
CONF
as_pg mkdir "$work/primary/conf.d"
"$pitr" init --repo "$work/repo" --conf-file "$work/primary/conf.d/pitr.conf"
cat "$work/primary/conf.d/pitr.conf"
as_pg "$PG_BIN/pg_ctl" -D "$work/primary" -l "$work/primary.log" -w start >/dev/null
"$pitr" init --repo "$work/repo" --pgdata "$work/primary"
sql "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL)"
sql "INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 1000) g"
echo "customers: $(sql 'SELECT count(*) FROM customers') rows"

say "2. A base backup with pitr backup"
PGHOST="$work" PGPORT="$port" PGUSER=postgres "$pitr" backup --repo "$work/repo" --fast

say "3. More work after the backup"
sleep 2
sql "INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1001, 1500) g"
echo "customers: $(sql 'SELECT count(*) FROM customers') rows"
sleep 2

say "4. The accident"
echo "DROP TABLE customers;"
sql "DROP TABLE customers"
accident=$(date +%s)
sql "SELECT pg_switch_wal()" >/dev/null
sleep 2
echo "customers: $(sql "SELECT count(*) FROM pg_tables WHERE tablename = 'customers'") tables named customers left"

say "5. What does pitr have?"
"$pitr" list --repo "$work/repo"

say "5b. What happened in the WAL? pitr events --kind drop finds the DROP"
"$pitr" events --repo "$work/repo" --from '5m ago' --kind drop
echo
"$pitr" events --repo "$work/repo" --from '5m ago' --per-minute

ago=$(( $(date +%s) - accident + 1 ))
say "6. The plan: pitr plan --to \"${ago}s ago\""
"$pitr" plan --repo "$work/repo" --to "${ago}s ago"

restored_port=$((port + 1))
say "7. The restore: pitr restore --to \"${ago}s ago\" --pgdata $work/restored --port $restored_port"
ago=$(( $(date +%s) - accident + 1 ))
"$pitr" restore --repo "$work/repo" --to "${ago}s ago" --pgdata "$work/restored" --port "$restored_port"

say "8. The table is back"
count=
# The restored server's socket: its data directory, or the backup's own.
for host in "$work/restored" "$work"; do
    if [ -S "$host/.s.PGSQL.$restored_port" ]; then
        count=$(as_pg "$PG_BIN/psql" -X -q -A -t -h "$host" -p "$restored_port" -U postgres -d postgres -c "SELECT count(*) FROM customers")
        break
    fi
done
echo "customers in the restored cluster: $count rows"
if [ "$count" != 1500 ]; then
    echo "demo failed: expected 1500 rows" >&2
    exit 1
fi
say "Done: the restored cluster has all 1500 customers. Cleaning up."
