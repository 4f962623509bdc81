#!/usr/bin/env bash
# Builds every fuzz target and runs each briefly on its seeds, so that a
# signature change in pitr cannot silently break a target again (tar_extract
# did not compile for 8 days) and each target still runs its seeds clean.
#
#   scripts/fuzz-smoke.sh          build, then FUZZ_SECONDS (default 10) per target
#
# Needs cargo-fuzz (installed from crates.io when missing), libFuzzer's C++
# runtime built by g++, and nightly features: RUSTC_BOOTSTRAP=1 lets the
# stable compiler accept cargo-fuzz's flags. The build is the dev profile
# without sanitizer: it compiles in seconds once fuzz/target exists (a
# first build takes some minutes); long fuzzing runs belong to fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${FUZZ_SECONDS:-10}"
CARGO="${CARGO:-cargo}"
export RUSTC_BOOTSTRAP=1

if ! "$CARGO" fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz from crates.io" >&2
    "$CARGO" install --locked cargo-fuzz
fi

started=$SECONDS
"$CARGO" fuzz build --dev -s none
echo "fuzz targets built in $((SECONDS - started)) s" >&2

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for target in $("$CARGO" fuzz list); do
    seeds="fuzz/seeds/$target"
    if [ ! -d "$seeds" ] || [ -z "$(ls -A "$seeds")" ]; then
        echo "fuzz target $target has no seeds in $seeds" >&2
        exit 1
    fi
    mkdir -p "$work/$target"
    t0=$SECONDS
    # New inputs go to a scratch corpus; the seeds are only read. A crash
    # fails this script and leaves the input in fuzz/artifacts/$target/.
    "$CARGO" fuzz run --dev -s none "$target" "$work/$target" "$seeds" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len=300000 -print_final_stats=0 \
        2> "$work/$target.log" || {
        tail -n 40 "$work/$target.log" >&2
        echo "fuzz target $target FAILED" >&2
        exit 1
    }
    echo "fuzz target $target: $(grep -o 'Done [0-9]* runs' "$work/$target.log" | tail -n 1) in $((SECONDS - t0)) s, no crash" >&2
done
echo "fuzz smoke run: $((SECONDS - started)) s" >&2
