#!/usr/bin/env bash
# make bench: how fast does `pitr restore` bring a cluster back to a point in
# time, against the manual runbook (tar -xzf + restore_command = 'cp ...'),
# pgBackRest (with and without asynchronous archive-get), and the floors (the
# disk, gzip, and PostgreSQL replaying with every segment already local)?
#
#   SCALE=300 ROUNDS=3 ./bench/restore.sh      # what `make bench` runs
#   SCALE=20 ROUNDS=2 WORKLOAD_WAL_MB=150 ./bench/restore.sh   # a few minutes
#
# Environment:
#   SCALE             pgbench scale (default 300: 4.5 GiB of data)
#   ROUNDS            restores per method, interleaved (default 3)
#   WORKLOAD_WAL_MB   the workload after the backups (pgbench -c 2) runs until it
#                     has written this much WAL (default 440, as in issue 7)
#   WORKLOAD_SECONDS  ... or for this long at most (default 600)
#   PG_BIN            PostgreSQL 15 server programs (default /usr/lib/postgresql/15/bin)
#   BENCH_DIR         where the temporary directory goes (default /tmp; must be
#                     on the same filesystem as the data you care about)
#   RESULTS           file receiving a copy of the output (default
#                     bench/results-<date>.txt, -s<SCALE> added when not 300;
#                     RESULTS= to skip)
#   KEEP=1            keep the temporary directory (servers are still stopped)
#   CARGO_TARGET_DIR  where cargo builds pitr (default ./target)
#   PITR_COMPARE      a second pitr binary (another branch, a candidate fix)
#                     restored with the same arguments, as one more method
#
# Needs root (PostgreSQL runs as the `postgres` OS user); installs Debian's
# pgbackrest and time packages when missing. Everything lives in one
# temporary directory that is removed at the end, and every server started is
# stopped by its PID, also on failure or Ctrl-C.
set -euo pipefail
. "$(dirname "$0")/common.sh"
prepare_driver 3 ": PostgreSQL runs as the postgres OS user" pgbackrest time
build_release

suffix=; [ "$SCALE" = 300 ] || suffix=-s$SCALE
run_python restore.py "${RESULTS-$here/bench/results-$(date +%Y-%m-%d)$suffix.txt}"
