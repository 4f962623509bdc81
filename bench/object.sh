#!/usr/bin/env bash
# make bench-object: pitr against pgBackRest 2.45 on object storage (issue
# 14), both on one S3 store: s3s-fs on 127.0.0.1 (each request logged, so
# requests per archived segment are counted), with stunnel in front for
# pgBackRest, which speaks only TLS to S3 (self-signed certificate,
# repo1-storage-verify-tls=n, repo1-s3-uri-style=path).
#
#   SCALE=300 ROUNDS=3 ./bench/object.sh        # what `make bench` runs
#   SCALE=300 ROUNDS=1 STORE=garage ./bench/object.sh
#   SCALE=10 ROUNDS=1 WORKLOAD_WAL_MB=100 ARCHIVE_SEGMENTS=16 ./bench/object.sh
#
# (a) archiving throughput from a backlog: pitr wal-push with and without
#     push-ahead against pgBackRest's async archive-push (process-max 2),
#     segments per second and requests per segment;
# (b) the restore of a pgbench cluster to a target time from the store:
#     pitr against pgBackRest (process-max 2, with and without async
#     archive-get), medians of interleaved rounds, marker counts checked,
#     pitr's peak RSS and the share of replay spent in restore_command.
#
# Environment: as bench/restore.sh (SCALE, ROUNDS, WORKLOAD_WAL_MB,
# WORKLOAD_SECONDS, PG_BIN, BENCH_DIR, RESULTS, KEEP, CARGO_TARGET_DIR), and
#   ARCHIVE_SEGMENTS  segments of backlog per archiving drain (default 48)
#   STORE             s3s-fs (default) or garage: three garage nodes on
#                     127.0.0.1, replication factor 3, as `make test-cluster`
#                     starts them (built once into the cache, ~41 min)
#
# Needs root; installs Debian's pgbackrest, stunnel4 and time packages when
# missing, and s3s-fs into its cache (scripts/object-stores.sh). Everything
# lives in one temporary directory, removed at the end; every server started
# is stopped by its PID.
set -euo pipefail
. "$(dirname "$0")/common.sh"
prepare_driver 3 ": PostgreSQL runs as the postgres OS user" pgbackrest stunnel4 openssl time
export STORE=${STORE:-s3s-fs}
case "$STORE" in
    s3s-fs)
        S3S_FS=$("$here/scripts/object-stores.sh" bin s3s-fs)
        export S3S_FS ;;
    garage)
        GARAGE=$("$here/scripts/object-stores.sh" bin garage)
        export GARAGE ;;
    *) echo "STORE must be s3s-fs or garage, not $STORE" >&2; exit 2 ;;
esac
build_release

store=; [ "$STORE" = s3s-fs ] || store=-$STORE
run_python object.py "${RESULTS-$here/bench/results-object-$(date +%Y-%m-%d)$store-s$SCALE.txt}"
