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

here=$(cd "$(dirname "$0")/.." && pwd)
export SCALE=${SCALE:-300}
export ROUNDS=${ROUNDS:-2}
export PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
target_dir=${CARGO_TARGET_DIR:-$here/target}

if [ "$(id -u)" -ne 0 ]; then
    echo "bench/extract.sh must run as root: PostgreSQL runs as the postgres OS user" >&2
    exit 2
fi
if [ ! -x "$PG_BIN/postgres" ]; then
    echo "no PostgreSQL server programs in $PG_BIN (make postgres installs them)" >&2
    exit 2
fi

(cd "$here" && CARGO_TARGET_DIR="$target_dir" ${CARGO:-cargo} build --release --quiet)
export PITR_BUILD="$target_dir/release/pitr"

results=${RESULTS-$here/bench/results-extract-$(date +%Y-%m-%d)-s$SCALE.txt}
if [ -n "$results" ]; then
    python3 -u "$here/bench/extract.py" 2>&1 | tee "$results"
    exit "${PIPESTATUS[0]}"
else
    exec python3 -u "$here/bench/extract.py"
fi
