#!/usr/bin/env bash
# Does `pitr wal-push` keep up with a busy server, what does each segment
# cost, and how much space does each compression save?
#
#   bench/wal_push.sh [SECONDS] [COMPRESSIONS...]     (default: 60 zstd lz4 gzip)
#
#   WORKLOAD=bulk   pgbench runs bulk INSERTs instead of TPC-B: far more WAL
#                   per second, to see where archiving stops keeping up
#   PUSH_ARGS=...   more wal-push options, e.g. PUSH_ARGS='--level 6'
#
# A compression named `cp` is the baseline: archive_command is the
# PostgreSQL documentation's `test ! -f wal/%f && cp %p wal/%f` (no fsync).
# The `.ready` column series shows whether the backlog grows during the run.
#
# For each compression: a fresh cluster whose archive_command is
# `pitr wal-push --compress C` (release build), pgbench at full speed
# (synchronous_commit off, so WAL is made as fast as the CPU allows) for
# SECONDS, then:
#   - segments generated per second (from the WAL position) and archived per
#     second during the run (pg_stat_archiver), `.ready` files left at the
#     end, and how long the archiver needed to drain them;
#   - CPU per segment: 100 of the archived segments pushed again, one process
#     each, into an empty archive, under /usr/bin/time (and `cp` the same way);
#     the wall time per segment of that loop bounds the archiving rate of one
#     archiver process (PostgreSQL 15 runs one);
#   - bytes in the archive against 16 MiB per segment.
#
# Run as root (PostgreSQL runs as the postgres user) or as the postgres user.
# Not a test: it prints figures and leaves nothing behind.
set -euo pipefail

SECONDS_RUN=${1:-60}
shift || true
COMPRESSIONS=("$@")
[ ${#COMPRESSIONS[@]} -eq 0 ] && COMPRESSIONS=(zstd lz4 gzip)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

(cd "$ROOT" && cargo build --release --quiet)

WORK=$(mktemp -d /tmp/pitr-bench-XXXXXX)
chmod 755 "$WORK"
cp "$TARGET/release/pitr" "$WORK/pitr"
chmod 755 "$WORK/pitr"
PITR="$WORK/pitr"

if [ "$(id -u)" -eq 0 ]; then
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

PGDATA=""
cleanup() {
    if [ -n "$PGDATA" ] && [ -f "$PGDATA/postmaster.pid" ]; then
        kill -INT "$(head -1 "$PGDATA/postmaster.pid")" 2>/dev/null || true
        sleep 2
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

sql() { as_pg "$PG_BIN/psql" -X -A -t -q -h "$RUN" -p "$PORT" -U postgres -d postgres -c "$1"; }

printf '%-6s %8s %8s %6s %8s %9s %11s %12s %10s %7s\n' \
    compress gen/s arch/s ready drain_s segments "cpu_ms/seg" "wall_ms/seg" "cp_cpu_ms" ratio

for C in "${COMPRESSIONS[@]}"; do
    DIR="$WORK/$C"
    mkdir -p "$DIR/wal" "$DIR/run"
    chmod -R 777 "$DIR"
    PGDATA="$DIR/data"
    RUN="$DIR/run"
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    as_pg "$PG_BIN/initdb" -U postgres --auth=trust -D "$PGDATA" >/dev/null
    if [ "$C" = cp ]; then
        ARCHIVE_COMMAND="test ! -f $DIR/wal/%f && cp %p $DIR/wal/%f"
    else
        ARCHIVE_COMMAND="$PITR wal-push --wal-archive $DIR/wal --compress $C ${PUSH_ARGS:-} %p"
    fi
    cat >>"$PGDATA/postgresql.conf" <<EOF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$RUN'
wal_level = replica
archive_mode = on
archive_command = '$ARCHIVE_COMMAND'
synchronous_commit = off
max_wal_size = 4GB
checkpoint_timeout = 30min
shared_buffers = 512MB
EOF
    as_pg "$PG_BIN/pg_ctl" start -w -D "$PGDATA" -l "$RUN/log" >/dev/null
    as_pg "$PG_BIN/pgbench" -q -i -s 30 -h "$RUN" -p "$PORT" -U postgres postgres >/dev/null 2>&1
    # Start from an idle archiver with everything archived.
    sql "CHECKPOINT" >/dev/null
    sql "SELECT pg_switch_wal()" >/dev/null
    while [ "$(find "$PGDATA/pg_wal/archive_status" -name '*.ready' | wc -l)" -gt 0 ]; do sleep 0.5; done
    sql "SELECT pg_stat_reset_shared('archiver')" >/dev/null
    START_LSN=$(sql "SELECT pg_current_wal_lsn()")
    if [ "${WORKLOAD:-tpcb}" = bulk ]; then
        sql "CREATE TABLE bulk (id int, pad text)" >/dev/null
        echo "INSERT INTO bulk SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g;" >"$RUN/bulk.sql"
        chmod 644 "$RUN/bulk.sql"
        WORKLOAD_ARGS=(-f "$RUN/bulk.sql")
    else
        WORKLOAD_ARGS=()
    fi
    # The backlog of .ready files every 10 s while pgbench runs.
    (
        for _ in $(seq 1 $((SECONDS_RUN / 10))); do
            sleep 10
            printf '%s ' "$(find "$PGDATA/pg_wal/archive_status" -name '*.ready' | wc -l)"
        done >"$RUN/backlog"
    ) &
    SAMPLER=$!
    as_pg "$PG_BIN/pgbench" "${WORKLOAD_ARGS[@]}" -c 4 -j 2 -T "$SECONDS_RUN" -h "$RUN" -p "$PORT" -U postgres postgres >"$RUN/pgbench.out" 2>&1
    wait "$SAMPLER" || true
    GENERATED=$(sql "SELECT (pg_current_wal_lsn() - '$START_LSN'::pg_lsn) / (16*1024*1024)")
    ARCHIVED=$(sql "SELECT archived_count FROM pg_stat_archiver")
    FAILED=$(sql "SELECT failed_count FROM pg_stat_archiver")
    READY=$(find "$PGDATA/pg_wal/archive_status" -name '*.ready' | wc -l)
    T0=$(date +%s.%N)
    sql "SELECT pg_switch_wal()" >/dev/null
    while [ "$(find "$PGDATA/pg_wal/archive_status" -name '*.ready' | wc -l)" -gt 0 ]; do sleep 0.2; done
    DRAIN=$(echo "$(date +%s.%N) - $T0" | bc)
    TPS=$(grep -o 'tps = [0-9.]*' "$RUN/pgbench.out" | head -1)
    kill -INT "$(head -1 "$PGDATA/postmaster.pid")"
    while [ -f "$PGDATA/postmaster.pid" ]; do sleep 0.2; done

    # Compression ratio over every segment archived (not history files).
    SEGS=$(find "$DIR/wal" -regextype posix-extended -regex '.*/[0-9A-F]{24}(\.[a-z0-9]+)?' | wc -l)
    BYTES=$(find "$DIR/wal" -regextype posix-extended -regex '.*/[0-9A-F]{24}(\.[a-z0-9]+)?' -printf '%s\n' | awk '{s+=$1} END {print s+0}')
    RATIO=$(echo "scale=3; $BYTES / ($SEGS * 16777216)" | bc)

    # CPU per segment: 100 real segments, one wal-push process each.
    mkdir -p "$DIR/plain" "$DIR/again" "$DIR/cp"
    find "$DIR/wal" -regextype posix-extended -regex '.*/[0-9A-F]{24}(\.[a-z0-9]+)?' | sort | tail -100 |
        while read -r f; do
            n=$(basename "$f"); n=${n%%.*}
            "$PITR" wal-fetch --wal-archive "$DIR/wal" "$n" "$DIR/plain/$n"
        done
    N=$(ls "$DIR/plain" | wc -l)
    sync
    PUSH_COMPRESS=$C
    [ "$C" = cp ] && PUSH_COMPRESS=none
    CPU=$(/usr/bin/time -f '%U %S %e' bash -c "for f in $DIR/plain/*; do $PITR wal-push --wal-archive $DIR/again --compress $PUSH_COMPRESS ${PUSH_ARGS:-} \$f; done" 2>&1 | tail -1)
    CP=$(/usr/bin/time -f '%U %S' bash -c "for f in $DIR/plain/*; do cp \$f $DIR/cp/; done" 2>&1 | tail -1)
    CPU_MS=$(echo "$CPU" | awk -v n="$N" '{printf "%.1f", ($1+$2)*1000/n}')
    WALL_MS=$(echo "$CPU" | awk -v n="$N" '{printf "%.1f", $3*1000/n}')
    CP_MS=$(echo "$CP" | awk -v n="$N" '{printf "%.1f", ($1+$2)*1000/n}')

    printf '%-6s %8s %8s %6s %8.1f %9s %11s %12s %10s %7s   (%s, failed %s)\n' \
        "$C" "$(echo "scale=2; $GENERATED / $SECONDS_RUN" | bc)" \
        "$(echo "scale=2; $ARCHIVED / $SECONDS_RUN" | bc)" "$READY" "$DRAIN" \
        "$SEGS" "$CPU_MS" "$WALL_MS" "$CP_MS" "$RATIO" "$TPS" "$FAILED"
    echo "       .ready every 10 s: $(cat "$RUN/backlog")"
    rm -rf "$DIR"
    PGDATA=""
done
