#!/usr/bin/env bash
# Plan time on an archive of thousands of segments: 1 MiB segments (initdb
# --wal-segsize=1), one switch per small transaction, a `cp` archive.
# Prints `pitr plan` and `pitr list` times with a cold and a warm cache.
#
#   bench/plan_speed.sh [SEGMENTS]
set -euo pipefail
. "$(dirname "$0")/common.sh"
SEGMENTS=${1:-3000}
make_work planspeed primary
pitr="$here/target/release/pitr"
port=$((5900 + RANDOM % 90))
as_pg mkdir -p "$work/repo/base" "$work/repo/wal"
primary_conf --wal-segsize=1 <<CONF
archive_mode = on
archive_command = 'cp %p $work/repo/wal/%f'
fsync = off
CONF
as_pg "$PG_BIN/pg_ctl" -D "$work/primary" -l "$work/primary.log" -w start >/dev/null
sql "CREATE TABLE t (id int)"
as_pg "$PG_BIN/pg_basebackup" -h "$work" -p "$port" -U postgres -D "$work/repo/base/b1" -Ft -X stream -c fast
sql "DO \$\$ BEGIN FOR i IN 1..$SEGMENTS LOOP INSERT INTO t VALUES (i); COMMIT; PERFORM pg_switch_wal(); END LOOP; END \$\$"
middle=$(sql "SELECT now() - interval '1 second'")
sql "INSERT INTO t VALUES (0)"; sql "SELECT pg_switch_wal()" >/dev/null
wait_archived 1
echo "archive: $(ls "$work/repo/wal" | wc -l) files"
export PITR_CACHE_DIR="$work/cache"
t() { local s=$(date +%s.%N); "$@" > /dev/null; echo "$(echo "$(date +%s.%N) - $s" | bc)"; }
echo "plan --to latest, cold cache: $(t "$pitr" plan --repo "$work/repo" --to latest) s"
echo "plan --to latest, warm cache: $(t "$pitr" plan --repo "$work/repo" --to latest) s"
rm -rf "$work/cache"
echo "plan --to <middle>, cold cache: $(t "$pitr" plan --repo "$work/repo" --to "$middle") s"
echo "plan --to <middle>, warm cache: $(t "$pitr" plan --repo "$work/repo" --to "$middle") s"
echo "list, warm cache: $(t "$pitr" list --repo "$work/repo") s"
