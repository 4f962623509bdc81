#!/usr/bin/env bash
# make bench-extract: one small table from a small database of a cluster
# that also holds the pgbench database, by `pitr extract` and by the manual
# way (a whole `pitr restore`, pg_dump, pg_restore), from the two backup
# forms pitr offers (`pitr backup`, `pitr backup --seekable`). Issue 18's
# target: extract <= 0.2x the manual way, measured in the same run.
#
#   SCALE=300 ./bench/extract.sh       # what `make bench` runs
#   SCALE=20 ROUNDS=1 ./bench/extract.sh   # a few minutes
#
# Environment:
#   SCALE             pgbench scale (default 300: 4.5 GiB of data)
#   ROUNDS            extracts and manual restores per backup form (default 2)
#   WORKLOAD_SECONDS  pgbench -c 2 after the backups (default 30)
#   PG_BIN            PostgreSQL 15 server programs (default /usr/lib/postgresql/15/bin)
#   BENCH_DIR         where the temporary directory goes (default /tmp)
#   RESULTS           file receiving a copy of the output (default
#                     bench/results-extract-<date>-s<SCALE>.txt, as the seekable
#                     benchmark names its results; RESULTS= to skip)
#   KEEP=1            keep the temporary directory (servers are still stopped)
#
# Needs root (PostgreSQL runs as the `postgres` OS user). Everything lives in
# one temporary directory removed at the end; every server started is
# stopped by its PID.
set -euo pipefail
. "$(dirname "$0")/common.sh"
prepare_driver 2 ": PostgreSQL runs as the postgres OS user"
build_release

run_python extract.py "${RESULTS-$here/bench/results-extract-$(date +%Y-%m-%d)-s$SCALE.txt}"
