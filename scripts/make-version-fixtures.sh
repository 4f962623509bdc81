#!/usr/bin/env bash
# Regenerates fixtures/<major>/: small real files written by each PostgreSQL
# major, for the tests in tests/version_fixtures.rs.
#
#   scripts/make-version-fixtures.sh [MAJOR...]     (default: 13 14 15 16 17 18)
#
# Per major, from a throwaway cluster with 1 MiB WAL segments (so that a
# whole segment compresses to a few kB):
#   backup_label, <start>.<offset>.backup (the backup history file),
#   backup_manifest.gz, pg_control and pg_controldata.txt (its reading by
#   that major's pg_controldata, the oracle the tests compare with), and
#   wal/<segment>.gz, the backup's first segment (checkpoint to backup end);
# for 17 and later also incremental/: the same files of an incremental
# backup taken on top of the full one (pg_basebackup --incremental).
#
# Server programs: Debian's for 15, else the version matrix's cache
# (scripts/pg-matrix.sh). As root, PostgreSQL runs as the postgres OS user.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$PWD"

as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

bin_for() {
    if [ "$1" = 15 ] && [ -x /usr/lib/postgresql/15/bin/postgres ]; then
        echo /usr/lib/postgresql/15/bin
    else
        "$ROOT/scripts/pg-matrix.sh" bin "$1"
    fi
}

# Waits until the archiver has archived the segment holding `lsn`.
wait_archived() {
    local bin="$1" sock="$2" port="$3" segment="$4"
    for _ in $(seq 1 300); do
        local last
        last="$(as_pg "$bin/psql" -X -At -h "$sock" -p "$port" -U postgres -d postgres \
            -c "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")"
        last="${last:0:24}"
        if [ -n "$last" ] && [[ "$last" > "$segment" || "$last" == "$segment" ]]; then
            return 0
        fi
        sleep 0.1
    done
    echo "segment $segment was not archived in time" >&2
    return 1
}

# Copies the files of one backup into `out`.
collect() {
    local bin="$1" work="$2" backup="$3" label="$4" out="$5"
    mkdir -p "$out/wal"
    cp "$backup/backup_label" "$out/backup_label"
    gzip -9n <"$backup/backup_manifest" >"$out/backup_manifest.gz"
    cp "$backup/global/pg_control" "$out/pg_control"
    LC_ALL=C TZ=UTC "$bin/pg_controldata" "$backup" >"$out/pg_controldata.txt"
    local history
    history="$(grep -l "^LABEL: $label\$" "$work"/wal/*.backup)"
    cp "$history" "$out/"
    local segment
    segment="$(sed -n 's/^START WAL LOCATION: .* (file \([0-9A-F]*\))$/\1/p' "$backup/backup_label")"
    gzip -9n <"$work/wal/$segment" >"$out/wal/$segment.gz"
}

make_one() {
    local major="$1"
    local bin
    bin="$(bin_for "$major")"
    local work
    work="$(mktemp -d /tmp/pitr-fixtures-"$major".XXXXXX)"
    chmod 755 "$work"
    mkdir -p "$work/wal"
    if [ "$(id -u)" -eq 0 ]; then chown postgres "$work" "$work/wal"; fi
    local port=$((20000 + major * 10 + RANDOM % 10))
    as_pg "$bin/initdb" -U postgres --auth=trust -E UTF8 --locale=C --wal-segsize=1 \
        -D "$work/data" >/dev/null
    {
        echo "port = $port"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$work'"
        echo "wal_level = replica"
        echo "archive_mode = on"
        echo "archive_command = 'cp %p $work/wal/%f'"
        echo "timezone = 'UTC'"
        echo "log_timezone = 'UTC'"
        echo "fsync = off"
        if [ "$major" -ge 17 ]; then echo "summarize_wal = on"; fi
    } >>"$work/data/postgresql.conf"
    as_pg "$bin/pg_ctl" start -w -D "$work/data" -l "$work/server.log" >/dev/null
    # shellcheck disable=SC2064
    [ -n "${KEEP:-}" ] || trap "as_pg '$bin/pg_ctl' stop -m immediate -D '$work/data' >/dev/null 2>&1 || true; rm -rf '$work'" RETURN
    local sql=(as_pg "$bin/psql" -X -At -q -v ON_ERROR_STOP=1 -h "$work" -p "$port" -U postgres -d postgres)
    "${sql[@]}" -c "CREATE TABLE t (id int PRIMARY KEY, v text)"
    "${sql[@]}" -c "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 100) g"
    as_pg "$bin/pg_basebackup" -D "$work/full" -Fp -X stream -c fast -l fixture-full \
        -h "$work" -p "$port" -U postgres
    if [ "$major" -ge 17 ]; then
        "${sql[@]}" -c "INSERT INTO t SELECT g, 'incremental' FROM generate_series(101, 200) g"
        as_pg "$bin/pg_basebackup" -D "$work/incremental" -Fp -X stream -c fast \
            -l fixture-incremental --incremental="$work/full/backup_manifest" \
            -h "$work" -p "$port" -U postgres
    fi
    # A record in the current segment, so that the switch has something to
    # close, then wait for the archiver.
    "${sql[@]}" -c "INSERT INTO t VALUES (0, 'end')"
    local segment
    segment="$("${sql[@]}" -c "SELECT pg_walfile_name(pg_current_wal_insert_lsn())")"
    "${sql[@]}" -c "SELECT pg_switch_wal()" >/dev/null
    wait_archived "$bin" "$work" "$port" "$segment"

    local out="$ROOT/fixtures/$major"
    rm -rf "$out"
    collect "$bin" "$work" "$work/full" fixture-full "$out"
    if [ "$major" -ge 17 ]; then
        collect "$bin" "$work" "$work/incremental" fixture-incremental "$out/incremental"
    fi
    "$bin/postgres" --version >"$out/VERSION"
    chmod -R a+rX,go-w "$out"
    echo "fixtures/$major: $(cat "$out/VERSION")" >&2
}

for major in ${*:-13 14 15 16 17 18}; do
    make_one "$major"
done
