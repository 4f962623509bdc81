#!/bin/bash
# Issue 18, point 2 (not implemented yet): can the files of the databases an
# extract does not need be written as sparse zero files of the same size,
# and replay still pass over them?
#
# Run as the postgres user:  scripts/excluded-databases-experiment.sh on|off
# (PGBIN=<bin dir of a major>, PGTAG=<suffix of the work directory>).
# It makes a cluster with databases `keep` and `other`, a plain base backup,
# then updates, deletes, a VACUUM and inserts in both across a checkpoint;
# restores the backup with every file of `other` except PG_VERSION turned
# into a sparse zero file; replays to the end; compares `keep` with the
# source and drops `other`.
#
# Seen on 2026-12-06: full_page_writes=on, PostgreSQL 13.4, 15 and 18.6:
# replay completes, `keep` is exact, connecting to `other` fails with
# `relation mapping file "base/<oid>/pg_filenode.map" contains invalid
# data`, and DROP DATABASE other works. full_page_writes=off (15): PANIC
# `WAL contains references to invalid pages` (Heap/LOCK on a zeroed page):
# the zeroed pages are only safe because the first change of every page
# after the checkpoint replay starts from carries a full-page image.
set -e
FPW=${1:-on}
B=${PGBIN:-/usr/lib/postgresql/15/bin}
D=${WORKDIR:-/tmp/pitr-excluded-databases}/$FPW${PGTAG:-}
rm -rf $D; mkdir -p $D/wal $D/run
P=$((20000 + RANDOM % 20000))
$B/initdb -U postgres --auth=trust -D $D/src >/dev/null
cat >> $D/src/postgresql.conf <<CONF
port = $P
listen_addresses = ''
unix_socket_directories = '$D/run'
wal_level = replica
archive_mode = on
archive_command = 'cp %p $D/wal/%f'
full_page_writes = $FPW
autovacuum = off
CONF
$B/pg_ctl -D $D/src -l $D/src.log -w start >/dev/null
Q() { $B/psql -X -At -q -h $D/run -p $P -U postgres -d "$1" -c "$2"; }
Q postgres "CREATE DATABASE keep"
Q postgres "CREATE DATABASE other"
for db in keep other; do
  Q $db "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1,200000) g; CREATE INDEX ON t (v)"
done
Q postgres "CHECKPOINT"
$B/pg_basebackup -h $D/run -p $P -U postgres -D $D/base -Fp -X stream -c fast
# After the backup: changes in both databases, spread over many pages, across a checkpoint.
for db in keep other; do
  Q $db "UPDATE t SET v = v || 'x' WHERE id % 3 = 0"
done
Q postgres "CHECKPOINT"
for db in keep other; do
  Q $db "UPDATE t SET v = v || 'y' WHERE id % 5 = 0; DELETE FROM t WHERE id % 11 = 0"; Q $db "VACUUM t"; Q $db "INSERT INTO t SELECT g, 'new' FROM generate_series(200001, 210000) g"
done
Q keep "SELECT count(*) || ' ' || md5(string_agg(t::text, '|' ORDER BY id)) FROM t" > $D/expected
Q postgres "SELECT pg_switch_wal()" >/dev/null; sleep 2
OTHER_OID=$(Q postgres "SELECT oid FROM pg_database WHERE datname='other'")
$B/pg_ctl -D $D/src -m fast -w stop >/dev/null
# The restore: the other database's files become sparse zero files of the same size (PG_VERSION kept).
cp -a $D/base $D/restored
n=0
for f in $D/restored/base/$OTHER_OID/*; do
  case "$(basename $f)" in PG_VERSION) continue;; esac
  size=$(stat -c %s $f); truncate -s 0 $f; truncate -s $size $f; n=$((n+1))
done
echo "zeroed $n files of base/$OTHER_OID ($(du -sh --apparent-size $D/restored/base/$OTHER_OID | cut -f1) apparent, $(du -sh $D/restored/base/$OTHER_OID | cut -f1) on disk)"
cat >> $D/restored/postgresql.conf <<CONF
restore_command = 'cp $D/wal/%f %p'
archive_mode = off
CONF
touch $D/restored/recovery.signal
if $B/pg_ctl -D $D/restored -l $D/restored.log -w -t 120 start >/dev/null; then
  for i in $(seq 1 120); do [ "$(Q postgres 'SELECT pg_is_in_recovery()')" = f ] && break; sleep 0.5; done
  echo "in recovery: $(Q postgres 'SELECT pg_is_in_recovery()')"
  got=$(Q keep "SELECT count(*) || ' ' || md5(string_agg(t::text, '|' ORDER BY id)) FROM t")
  echo "keep: expected $(cat $D/expected) got $got"
  [ "$got" = "$(cat $D/expected)" ] && echo "KEEP EXACT" || echo "KEEP DIFFERS"
  Q other "SELECT count(*) FROM t" 2>&1 | head -2 || true
  Q postgres "DROP DATABASE other" && echo "dropped other" || true
  $B/pg_ctl -D $D/restored -m fast -w stop >/dev/null
else
  echo "START FAILED"
fi
grep -E "PANIC|FATAL|ERROR|WARNING|redo done|consistent" $D/restored.log | head -10
