#!/usr/bin/env bash
# make bench-seekable: issue 16's benchmark. Full restore from a seekable
# backup against the default backup, pgBackRest and the floors (a write floor
# measured in the same run, PostgreSQL's replay); delta restore over a copy
# that pgbench changed afterwards against pitr's full restore, pgBackRest
# --delta and the read floor. See bench/seekable.py for what is measured.
#
#   SCALE=300 ROUNDS=3 ./bench/seekable.sh     # what `make bench-seekable` runs
#   SCALE=20 ROUNDS=1 ./bench/seekable.sh      # a few minutes
#
# Environment:
#   SCALE             pgbench scale (default 300: 4.4 GiB of data)
#   ROUNDS            timed runs per method, interleaved (default 3)
#   DELTA_PCT         pages of the backup the changed copy differs in (default 5)
#   PARTS             full,delta (default both)
#   PERF_DIR          record a perf profile of every pitr restore there (not for figures)
#   WORKLOAD_WAL_MB   the workload after the backups writes this much WAL
#                     (default 100: its replay changes pages of the copy too)
#   PG_BIN, BENCH_DIR, KEEP, CARGO_TARGET_DIR   as in bench/restore.sh
#   RESULTS           file receiving a copy of the output (default
#                     bench/results-seekable-<date>-s<SCALE>.txt; RESULTS= to skip)
#
# Needs root: PostgreSQL runs as the postgres OS user, the repositories live on
# a loop device of their own (their bytes read are its counters), and every
# timed run starts with cold caches (echo 3 > /proc/sys/vm/drop_caches, which
# the whole machine feels). Everything is removed at the end, the loop device
# detached, every server stopped by its PID, also on failure or Ctrl-C.
set -euo pipefail
. "$(dirname "$0")/common.sh"
export WORKLOAD_WAL_MB=${WORKLOAD_WAL_MB:-100}
prepare_driver 3 " (loop device, drop_caches, PostgreSQL as postgres)" pgbackrest zstd
build_release

commit=$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)
header="reproduce: SCALE=$SCALE ROUNDS=$ROUNDS WORKLOAD_WAL_MB=$WORKLOAD_WAL_MB DELTA_PCT=${DELTA_PCT:-5} PARTS=${PARTS:-full,delta} ./bench/seekable.sh  (make bench-seekable; commit $commit$(git -C "$here" diff --quiet HEAD 2>/dev/null || echo ', with uncommitted changes'))"
run_python seekable.py "${RESULTS-$here/bench/results-seekable-$(date +%Y-%m-%d)-s$SCALE.txt}" "$header"
