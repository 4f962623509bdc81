#!/usr/bin/env bash
# `pitr backup --repo s3://…` before and after streaming (issue 14, point
# 5): peak local disk in $TMPDIR (where a backup into an object store used
# to be staged), peak RSS of pitr, wall time and stored size, for each
# binary given, on one pgbench database in s3s-fs.
#
#   bench/object_backup.sh SCALE BINARY...
#   e.g. bench/object_backup.sh 20 /work/main/target/debug/pitr target/debug/pitr
#
# SCALE >= 100 takes the heavy-run slot: flock /tmp/pitr-bench-heavy.lock.
# Run as root (PostgreSQL runs as the postgres user). Needs s3s-fs
# (PITR_S3S_FS, default /var/cache/pitr/s3s-fs/bin/s3s-fs) and
# /usr/bin/time. Prints figures and leaves nothing behind.
set -euo pipefail
. "$(dirname "$0")/common.sh"
SCALE=${1:?usage: $0 SCALE BINARY...}
shift
make_work objbackup primary

start_s3s_fs

port=$((5900 + RANDOM % 90))
primary_conf <<CONF
max_wal_size = 4GB
wal_keep_size = 2GB
fsync = off
CONF
as_pg "$PG_BIN/pg_ctl" -D "$work/primary" -l "$work/primary.log" -w start >/dev/null
as_pg "$PG_BIN/pgbench" -i -q -s "$SCALE" -h "$work" -p "$port" -U postgres postgres 2>/dev/null
size=$(sql "SELECT pg_size_pretty(pg_database_size('postgres'))")
load=$(cut -d' ' -f1-3 /proc/loadavg)
echo "pgbench scale $SCALE: database $size; load average at start $load"
printf '%-44s %12s %12s %9s %10s\n' binary "peak TMPDIR" "peak RSS" "wall s" stored
n=0
for binary in "$@"; do
    n=$((n + 1))
    cp "$binary" "$work/pitr-$n"; chmod 755 "$work/pitr-$n"
    url=s3://$bucket/repo-$n
    "$work/pitr-$n" init --repo "$url" >/dev/null 2>&1
    tmp="$work/tmp-$n"; mkdir -p "$tmp"
    peak_file="$work/peak-$n"; echo 0 > "$peak_file"
    ( peak=0; while [ -d "$tmp" ]; do
        b=$(du -sb "$tmp" 2>/dev/null | cut -f1); b=${b:-0}
        [ "$b" -gt "$peak" ] && peak=$b && echo "$peak" > "$peak_file"
        sleep 0.05; done ) &
    watcher=$!
    start=$(date +%s.%N)
    TMPDIR=$tmp PGHOST=$work PGPORT=$port PGUSER=postgres /usr/bin/time -f '%M' -o "$work/rss-$n" \
        "$work/pitr-$n" backup --repo "$url" --fast --archive-wait 0 --quiet 2> "$work/err-$n" \
        || { echo "backup with $binary failed:"; cat "$work/err-$n"; }
    wall=$(echo "$(date +%s.%N) - $start" | bc)
    sleep 0.2; rmdir "$tmp" 2>/dev/null || rm -rf "$tmp"; wait "$watcher" 2>/dev/null || true
    stored=$(du -sb "$work/s3/$bucket/repo-$n/base" | cut -f1)
    printf '%-44s %9d kB %9d kB %9.1f %7d MB\n' "$binary" $(( $(cat "$peak_file") / 1024 )) \
        "$(tail -1 "$work/rss-$n")" "$wall" $((stored / 1048576))
done
