#!/usr/bin/env bash
# Peak RSS of `pitr restore` from s3s-fs (issue 14, point 6: < 200 MB at
# any database size), and of the `pitr backup` that made the backup.
#
#   flock /tmp/pitr-bench-heavy.lock bench/object_restore_rss.sh SCALE [PITR]
#
# A PostgreSQL 15 cluster of pgbench scale SCALE archiving with `pitr
# wal-push` into s3s-fs; `pitr backup` (streamed into the store); pgbench
# for BENCH_SECONDS (default 30) so that the restore replays WAL from the
# store; then `pitr restore --to latest --action shutdown` into a new data
# directory, under /usr/bin/time (peak RSS of pitr; PostgreSQL's own
# processes are not pitr's). PITR defaults to target/release/pitr.
#
# pitr's own peak (VmHWM) is also read from /proc while it runs, with its
# resident set every 0.2 s: SAMPLES=FILE keeps that timeline, and
# RESTORE_WRAP="heaptrack -o FILE" runs the restore under a heap profiler
# (what bench/results-object-rss-2026-12-06.txt quotes; heaptrack prints to
# stdout, so the restored-rows check at the end then fails to read the JSON).
#
# Run as root. Needs s3s-fs (PITR_S3S_FS) and /usr/bin/time. Leaves
# nothing behind.
set -euo pipefail
. "$(dirname "$0")/common.sh"
SCALE=${1:?usage: $0 SCALE [PITR]}
PITR_BUILT=${2:-$here/target/release/pitr}
BENCH_SECONDS=${BENCH_SECONDS:-30}
make_work objrestore primary restored
install_pitr "$PITR_BUILT"

start_s3s_fs

port=$((5900 + RANDOM % 90))
primary_conf <<CONF
archive_mode = on
archive_command = '$(s3_archive_command)'
max_wal_size = 4GB
wal_keep_size = 4GB
fsync = off
CONF
"$pitr" init --repo "$url" >/dev/null 2>&1
as_pg "$PG_BIN/pg_ctl" -D "$work/primary" -l "$work/primary.log" -w start >/dev/null
as_pg "$PG_BIN/pgbench" -i -q -s "$SCALE" -h "$work" -p "$port" -U postgres postgres 2>/dev/null
size=$(sql "SELECT pg_size_pretty(pg_database_size('postgres'))")
echo "pgbench scale $SCALE: database $size; load average $(cut -d' ' -f1-3 /proc/loadavg)"

start=$(date +%s.%N)
PGHOST=$work PGPORT=$port PGUSER=postgres /usr/bin/time -f '%M' -o "$work/backup.rss" \
    "$pitr" backup --repo "$url" --fast --quiet > /dev/null
echo "backup (streamed): $(echo "$(date +%s.%N) - $start" | bc | cut -c1-6) s, peak RSS $(tail -1 "$work/backup.rss") kB, stored $(du -sm "$work/s3/$bucket/repo/base" | cut -f1) MB"

as_pg "$PG_BIN/pgbench" -c 2 -T "$BENCH_SECONDS" -h "$work" -p "$port" -U postgres postgres > /dev/null 2>&1
sql "SELECT pg_switch_wal()" > /dev/null
wait_archived
expected=$(sql "SELECT sum(abalance) FROM pgbench_accounts")
as_pg "$PG_BIN/pg_ctl" -D "$work/primary" -w stop -m fast > /dev/null
echo "WAL after the backup: $(ls "$work/s3/$bucket/repo/wal" | wc -l) archived files"

rport=$((port + 100))
start=$(date +%s.%N)
/usr/bin/time -f '%M' -o "$work/restore.rss" ${RESTORE_WRAP:-} "$pitr" --json restore --repo "$url" --to latest \
    --pgdata "$work/restored" --port "$rport" --action promote > "$work/restore.out" 2> "$work/restore.err" &
timer=$!
# /usr/bin/time's figure is the largest of pitr and every process it
# waited for; pitr's own peak (VmHWM) and its resident set over time are
# read from /proc while it runs.
pid=""
for _ in $(seq 100); do pid=$(cat /proc/$timer/task/$timer/children 2>/dev/null | cut -d' ' -f1); [ -n "$pid" ] && break; sleep 0.05; done
: > "$work/restore.samples"
while [ -n "$pid" ] && [ -r /proc/$pid/status ]; do
    awk -v t="$(date +%s.%N)" '/^VmHWM|^VmRSS|^RssAnon|^RssFile|^Threads/ {printf "%s %s ", $1, $2} END {printf "t=%s\n", t}' /proc/$pid/status >> "$work/restore.samples" 2>/dev/null || true
    sleep 0.2
done
wait $timer || { echo "restore failed:"; tail -20 "$work/restore.err"; exit 1; }
own_peak=$(grep -o 'VmHWM: [0-9]*' "$work/restore.samples" | tail -1 | cut -d' ' -f2)
[ -n "${SAMPLES:-}" ] && cp "$work/restore.samples" "$SAMPLES"
wall=$(echo "$(date +%s.%N) - $start" | bc | cut -c1-6)
socket=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["socket_dir"])' "$work/restore.out")
got=$(as_pg "$PG_BIN/psql" -X -q -A -t -h "$socket" -p "$rport" -U postgres -d postgres -c "SELECT sum(abalance) FROM pgbench_accounts" 2>/dev/null || echo "?")
echo "restore --to latest: $wall s, peak RSS $(tail -1 "$work/restore.rss") kB (/usr/bin/time, pitr and what it waited for; target < 204800 kB), pitr's own VmHWM ${own_peak:-?} kB; sum(abalance) restored $got, expected $expected"
