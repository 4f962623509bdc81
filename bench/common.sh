# Sourced by the bench/*.sh scripts (never run on its own): what they all do
# before and around their measurements, in one place.
#
# Sourcing it sets `here` (the repository) and PG_BIN (exported; default
# /usr/lib/postgresql/15/bin). The functions fall in two groups:
#
# - the `make bench-*` drivers (restore.sh, seekable.sh, extract.sh,
#   object.sh), which check the machine, build pitr and run a Python
#   benchmark: prepare_driver (require_root, require_pg_bin,
#   install_missing), build_release, run_python;
# - the small shell benchmarks (object_*.sh, plan_speed.sh, prefetch.sh),
#   which run one cluster in a temporary directory: make_work (remove_work
#   on exit), install_pitr, start_s3s_fs, s3_archive_command, primary_conf,
#   sql, wait_archived.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

# --- the `make bench-*` drivers ------------------------------------------------

# prepare_driver ROUNDS WHY PACKAGE...: SCALE (default 300) and ROUNDS (default
# ROUNDS) exported for the benchmark; root (WHY says what for), PostgreSQL's
# programs and the packages the benchmark runs checked or installed.
prepare_driver() {
    export SCALE=${SCALE:-300}
    export ROUNDS=${ROUNDS:-$1}
    require_root "$2"
    require_pg_bin
    install_missing "${@:3}"
}

# require_root WHY: stop unless root, saying why this script needs it.
require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "bench/$(basename "$0") must run as root$1" >&2
        exit 2
    fi
}

require_pg_bin() {
    if [ ! -x "$PG_BIN/postgres" ]; then
        echo "no PostgreSQL server programs in $PG_BIN (make postgres installs them)" >&2
        exit 2
    fi
}

# install_missing PACKAGE...: install from Debian's packages those whose
# program is not there (`time` is /usr/bin/time: bash has a keyword of that
# name).
install_missing() {
    local missing=() package
    [ $# -gt 0 ] || return 0
    for package in "$@"; do
        if [ "$package" = time ]; then
            [ -x /usr/bin/time ] || missing+=(time)
        else
            command -v "$package" >/dev/null || missing+=("$package")
        fi
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]} from Debian's packages"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# build_release: pitr built in release mode into CARGO_TARGET_DIR (default
# ./target), its path exported as PITR_BUILD for the Python benchmark.
build_release() {
    local target_dir=${CARGO_TARGET_DIR:-$here/target}
    (cd "$here" && CARGO_TARGET_DIR="$target_dir" ${CARGO:-cargo} build --release --quiet)
    export PITR_BUILD="$target_dir/release/pitr"
}

# run_python SCRIPT RESULTS [HEADER]: run bench/SCRIPT, its output (after
# HEADER, when given) also copied into the file RESULTS unless RESULTS is
# empty; exits with the benchmark's status.
run_python() {
    local script=$here/bench/$1 results=$2 header=${3:-}
    if [ -n "$results" ]; then
        { [ -z "$header" ] || echo "$header"; python3 -u "$script" 2>&1; } | tee "$results"
        exit "${PIPESTATUS[0]}"
    else
        [ -z "$header" ] || echo "$header"
        exec python3 -u "$script"
    fi
}

# --- the small shell benchmarks ------------------------------------------------

# make_work NAME DATADIR...: a temporary directory $work
# (/tmp/pitr-NAME.XXXXXX) that the postgres OS user may use, and as_pg, which
# runs a command as that user when this script runs as root. On exit, the
# servers of the data directories $work/DATADIR are stopped by their PIDs,
# s3s-fs too when started, and $work is removed.
make_work() {
    work=$(mktemp -d "/tmp/pitr-$1.XXXXXX")
    work_datadirs=("${@:2}")
    s3s_pid=""
    chmod 755 "$work"
    as_pg() { "$@"; }
    if [ "$(id -u)" -eq 0 ]; then
        # PostgreSQL refuses to run as root: its programs run as postgres.
        as_pg() { runuser -u postgres -- "$@"; }
        chown postgres: "$work"
    fi
    trap remove_work EXIT
}

remove_work() {
    local datadir
    for datadir in "${work_datadirs[@]}"; do
        [ -f "$work/$datadir/postmaster.pid" ] && kill -INT "$(head -1 "$work/$datadir/postmaster.pid")" 2>/dev/null && sleep 2
    done
    [ -n "$s3s_pid" ] && kill "$s3s_pid" 2>/dev/null
    rm -rf "$work"
}

# install_pitr BINARY: a copy of BINARY in $work that the postgres OS user
# may run (archive_command, restore_command), named by $pitr.
install_pitr() {
    install -m 755 "$1" "$work/pitr"
    pitr="$work/pitr"
}

# start_s3s_fs [RUST_LOG]: s3s-fs (PITR_S3S_FS, default the cache of
# scripts/object-stores.sh) on a free-ish port of 127.0.0.1, serving
# $work/s3 with the empty bucket $bucket, its log in $work/s3.log; sets
# s3s_pid (stopped by remove_work), s3_port and url (s3://$bucket/repo,
# the repository the scripts archive into), exports the AWS_*
# variables pitr reads and PITR_CACHE_DIR=$work/cache, and waits for the
# port. RUST_LOG=s3s::service=debug logs every request.
start_s3s_fs() {
    local s3s=${PITR_S3S_FS:-/var/cache/pitr/s3s-fs/bin/s3s-fs}
    bucket=pitr-bench
    mkdir -p "$work/s3/$bucket"
    s3_port=$((20000 + RANDOM % 20000))
    url=s3://$bucket/repo
    env ${1:+RUST_LOG=$1} "$s3s" --host 127.0.0.1 --port "$s3_port" --access-key bench-access \
        --secret-key bench-secret-0123456789 "$work/s3" > "$work/s3.log" 2>&1 &
    s3s_pid=$!
    export AWS_ENDPOINT_URL=http://127.0.0.1:$s3_port AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true \
        AWS_ACCESS_KEY_ID=bench-access AWS_SECRET_ACCESS_KEY=bench-secret-0123456789
    export PITR_CACHE_DIR="$work/cache" TZ=UTC
    local _
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$s3_port) 2>/dev/null && break; sleep 0.1; done
}

# s3_archive_command: `pitr wal-push` ($pitr) into $url as an archive_command,
# with the AWS_* settings of start_s3s_fs on its command line (the server
# was not started with them in its environment).
s3_archive_command() {
    echo "env AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=bench-access AWS_SECRET_ACCESS_KEY=bench-secret-0123456789 $pitr wal-push --repo $url %p"
}

# primary_conf [INITDB_ARG...] <<CONF: initdb of $work/primary (as postgres,
# trust), listening only on the socket in $work at $port with wal_level
# replica, plus the settings read from standard input.
primary_conf() {
    as_pg "$PG_BIN/initdb" -U postgres --auth=trust "$@" -D "$work/primary" >/dev/null
    {
        printf "port = %s\nlisten_addresses = ''\nunix_socket_directories = '%s'\nwal_level = replica\n" \
            "$port" "$work"
        cat
    } >> "$work/primary/postgresql.conf"
}

# sql SQL: one statement on the primary, unaligned tuples only.
sql() { as_pg "$PG_BIN/psql" -X -q -A -t -h "$work" -p "$port" -U postgres -d postgres -c "$1"; }

# wait_archived [SECONDS]: until the primary has archived every segment it
# has finished, polling every SECONDS (default 0.5).
wait_archived() {
    while [ "$(sql "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")" != 0 ]; do
        sleep "${1:-0.5}"
    done
}
