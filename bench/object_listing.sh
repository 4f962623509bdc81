#!/usr/bin/env bash
# LIST requests of `pitr list` and `pitr plan` on an S3 archive of 100,000
# segments (issue 14, point 6): the issue wants about segments/1000 pages,
# and fewer once the facts cache knows the older segments.
#
#   bench/object_listing.sh [SEGMENTS]        (default 100000)
#
# The fixture: a real PostgreSQL 15 cluster whose WAL starts at log 0x400
# (pg_resetwal -l), archiving with `pitr wal-push` into s3s-fs, one backup
# (`pitr backup`, streamed) and a few segments after it; below them,
# SEGMENTS older segment names of timeline 1 written straight into
# s3s-fs's directory (64-byte bodies, a real first page header: no plan reads them, every listing must
# page through them). s3s-fs logs every request (RUST_LOG=s3s::service=debug);
# a LIST is a `GET /bucket?list-type=2...`.
#
# Run as root (PostgreSQL runs as the postgres user). Needs s3s-fs
# (./scripts/object-stores.sh fetch s3, or PITR_S3S_FS=path). Prints
# figures and leaves nothing behind.
set -euo pipefail
. "$(dirname "$0")/common.sh"
SEGMENTS=${1:-100000}
pitr_built=${PITR_BIN:-$here/target/debug/pitr}
[ -x "$pitr_built" ] || (cd "$here" && cargo build --quiet)
make_work listing primary
install_pitr "$pitr_built"

start_s3s_fs s3s::service=debug

port=$((5900 + RANDOM % 90))
primary_conf <<CONF
archive_mode = on
archive_command = '$(s3_archive_command)'
fsync = off
CONF
# WAL from log 0x400 on: the older segment names are free for the fixture.
as_pg "$PG_BIN/pg_resetwal" -l 000000010000040000000000 -D "$work/primary" >/dev/null
"$pitr" init --repo "$url" >/dev/null 2>&1
as_pg "$PG_BIN/pg_ctl" -D "$work/primary" -l "$work/primary.log" -w start >/dev/null
sql "CREATE TABLE t (id int)"
PGHOST=$work PGPORT=$port PGUSER=postgres "$pitr" backup --repo "$url" --fast --quiet
for i in 1 2 3; do sql "INSERT INTO t VALUES ($i)"; sql "SELECT pg_switch_wal()" >/dev/null; done
wait_archived

start=$(date +%s.%N)
# Each body: the first page header of a real segment (pitr reads the
# oldest segment's header to learn the segment size), nothing more.
first_real=$(ls "$work/primary/pg_wal" | grep -E '^[0-9A-F]{24}$' | sort | head -1)
python3 - "$work/s3/$bucket/repo/wal" "$SEGMENTS" "$work/primary/pg_wal/$first_real" <<'PY'
import os, sys
wal, n, real = sys.argv[1], int(sys.argv[2]), sys.argv[3]
header = open(real, "rb").read(64)
for i in range(1, n + 1):
    with open(os.path.join(wal, "00000001%08X%08X" % (i >> 8, i & 0xFF)), "wb") as f:
        f.write(header)
PY
echo "fixture: $SEGMENTS older segments written in $(echo "$(date +%s.%N) - $start" | bc) s; archive holds $(ls "$work/s3/$bucket/repo/wal" | wc -l) objects"

lists() { grep -c "list-type=2" "$work/s3.log" || true; }
heads() { grep -c "method: HEAD" "$work/s3.log" || true; }
measure() {
    local what=$1; shift
    local before after s e heads_before
    before=$(lists)
    heads_before=$(heads)
    s=$(date +%s.%N)
    if "$pitr" "$@" > "$work/out" 2> "$work/err"; then status=ok; else status="exit $?: $(tail -1 "$work/err")"; fi
    e=$(date +%s.%N)
    after=$(lists)
    # s3s-fs lists no ETags: the driver HEADs each listed object (real
    # stores need none of these).
    printf '%-40s %6d LIST pages %7d HEADs %7.1f s  %s\n' "$what" $((after - before)) \
        $(($(heads) - heads_before)) "$(echo "$e - $s" | bc)" "$status"
    # SHOW_LISTS=1: each LIST's query (prefix, start-after, token), in order.
    if [ -n "${SHOW_LISTS:-}" ]; then
        grep -o 'uri: [^ ]*list-type=2[^ ,]*' "$work/s3.log" | tail -n $((after - before)) | sed 's/^/    /' | cut -c1-160
    fi
}
# The first command finds the local caches (facts, listing) empty.
measure "list (empty caches)" list --repo "$url"
measure "plan --to latest (after list)" plan --repo "$url" --to latest
measure "list (again)" list --repo "$url"
for i in 4 5 6; do sql "INSERT INTO t VALUES ($i)"; sql "SELECT pg_switch_wal()" >/dev/null; done
wait_archived
measure "plan --to latest (3 new segments)" --json plan --repo "$url" --to latest
cp "$work/out" "$work/plan-resumed.json"
rm -rf "$work/cache"
measure "plan --to latest (empty caches)" --json plan --repo "$url" --to latest
if cmp -s "$work/out" "$work/plan-resumed.json"; then
    echo "the plan from the resumed listing is the plan from a full one"
else
    echo "DIFFERENT plans from the resumed and the full listing:"; diff "$work/plan-resumed.json" "$work/out" | head -20
fi
