#!/usr/bin/env bash
# Time PostgreSQL spends waiting on restore_command, with and without
# pitr's prefetch, over a zstd archive written by `pitr wal-push`.
#
#   bench/prefetch.sh [SEGMENTS_OF_WAL] [ARCHIVE_LATENCY_MS]
#
# ARCHIVE_LATENCY_MS simulates a remote archive (PITR_FETCH_DELAY_MS).
# Prints the sum of wal-fetch times and the replay time of each restore.
set -euo pipefail
. "$(dirname "$0")/common.sh"
UPDATES=${1:-6}
LATENCY=${2:-0}
make_work prefetch primary r-prefetch r-no-prefetch
stop() { [ -f "$1/postmaster.pid" ] && kill -INT "$(head -1 "$1/postmaster.pid")" 2>/dev/null; sleep 1; }
install_pitr "$here/target/release/pitr"
port=$((5600 + RANDOM % 300))
as_pg "$work/pitr" --version >/dev/null
as_pg mkdir -p "$work/repo/base" "$work/repo/wal"
primary_conf <<CONF
archive_mode = on
archive_command = '$work/pitr wal-push --repo $work/repo %p'
max_wal_size = 1GB
CONF
as_pg "$PG_BIN/pg_ctl" -D "$work/primary" -l "$work/primary.log" -w start >/dev/null
as_pg "$PG_BIN/pgbench" -i -s 10 -q -h "$work" -p "$port" -U postgres postgres >/dev/null 2>&1
as_pg "$PG_BIN/pg_basebackup" -h "$work" -p "$port" -U postgres -D "$work/repo/base/b1" -Ft -z -X stream -c fast
for i in $(seq 1 "$UPDATES"); do sql "UPDATE pgbench_accounts SET abalance = abalance + 1" ; done
sql "SELECT pg_switch_wal()" >/dev/null
sleep 3
echo "archive: $(ls "$work/repo/wal" | wc -l) files, $(du -sh "$work/repo/wal" | cut -f1)"
for mode in prefetch no-prefetch; do
  log="$work/fetch-$mode.log"; : > "$log"; chmod 666 "$log"
  extra=""; [ "$mode" = no-prefetch ] && extra="--no-prefetch"
  dir="$work/r-$mode"
  PITR_FETCH_LOG="$log" PITR_FETCH_DELAY_MS="$LATENCY" "$work/pitr" --json --quiet restore --repo "$work/repo" --to latest --pgdata "$dir" $extra > "$work/summary-$mode.json"
  recovery=$(python3 -c "import json;print(round(json.load(open('$work/summary-$mode.json'))['seconds']['recovery'],2))")
  waited=$(awk '{s+=$3} END {printf "%.2f", s/1e6}' "$log")
  calls=$(wc -l < "$log")
  echo "$mode: recovery ${recovery}s, restore_command ${calls} calls, ${waited}s in restore_command"
  stop "$dir"
done
