#!/usr/bin/env bash
# The release build of slatrack that is shipped and benchmarked: optimised with the
# profile of a training run (profile-guided optimisation, docs/operations.md "Release
# builds"). Prints the binary's path: target/pgo/release/slatrack (SLATRACK_PGO_DIR
# replaces target/pgo).
#
#   bash scripts/build-release.sh
#
# Steps: an instrumented build (target/pgo/instrumented), a training run of it on
# generated traffic (no broker: `replay` of the pilot fixture in JSON and protobuf, and
# `demo` on librdkafka's in-process cluster in both formats), the merged profile
# (target/pgo/profiles), and the build that uses it (target/pgo). Needs rustup's
# llvm-tools component for llvm-profdata; installs it when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${SLATRACK_PGO_DIR:-$root/target/pgo}
say() { echo "build-release: $*" >&2; }

# The training run: generated traffic through every path a record takes, no broker.
# Each command's output is dropped; a failing one is named with its output.
train() {
    local bin=$1 dir
    dir=$(mktemp -d)
    quiet() {
        if ! "$@" >"$dir/output" 2>&1; then
            say "training command failed: $*"
            cat "$dir/output" >&2
            exit 1
        fi
    }
    quiet "$bin" generate --output "$dir/pilot.jsonl"
    quiet "$bin" generate --output "$dir/pilot.pb"
    quiet "$bin" replay --input "$dir/pilot.jsonl" --store "$dir/json.db"
    quiet "$bin" replay --input "$dir/pilot.pb" --store "$dir/pb.db"
    # Live traffic, tens of thousands of records a second: the poll and apply threads,
    # dense buckets, checkpoints, the scorecard the demo prints.
    quiet "$bin" demo --dir "$dir/demo-json" --format json --rate 20000 --duration 15s --listen ""
    quiet "$bin" demo --dir "$dir/demo-pb" --format protobuf --rate 20000 --duration 10s --listen ""
    rm -rf "$dir"
}

# `--train-only BINARY`: the training run alone, with any build (the test command runs it
# on the debug build, so the training's commands keep working).
if [ "${1:-}" = "--train-only" ]; then
    train "${2:?--train-only takes the binary to run}"
    say "training run: every command succeeded"
    exit 0
fi

host=$(rustc -vV | sed -n 's/^host: //p')
profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
    say "llvm-profdata is missing: installing rustup's llvm-tools component"
    if ! rustup component add llvm-tools >&2 || [ ! -x "$profdata" ]; then
        say "cannot install llvm-tools (run 'rustup component add llvm-tools' where rustup can"
        say "reach its server), or build without a profile: cargo build --release --locked"
        say "(the same figures, about an eighth more instructions per record where records"
        say "are decoded and counted: BENCHMARKS.md row 11)"
        exit 1
    fi
fi

# The flags a caller set stay; the profile flags are added to them.
base_flags=${RUSTFLAGS:-}
raw=$out/profiles/raw
mkdir -p "$raw"

say "1/4 instrumented build"
RUSTFLAGS="$base_flags -Cprofile-generate=$raw" \
    cargo build --release --locked --bin slatrack --target-dir "$out/instrumented"
# Build scripts run during the build write profiles of their own: not the service's.
rm -rf "$raw" && mkdir -p "$raw"

say "2/4 training run"
export LLVM_PROFILE_FILE="$raw/slatrack-%p-%m.profraw"
train "$out/instrumented/release/slatrack"
unset LLVM_PROFILE_FILE

say "3/4 merging the profile"
"$profdata" merge -o "$out/profiles/merged.tmp" "$raw"
# Named by its content: a new profile changes RUSTFLAGS, which makes cargo rebuild.
sum=$(sha256sum "$out/profiles/merged.tmp" | cut -c1-16)
find "$out/profiles" -maxdepth 1 -name '*.profdata' ! -name "$sum.profdata" -delete
mv "$out/profiles/merged.tmp" "$out/profiles/$sum.profdata"

say "4/4 optimised build"
RUSTFLAGS="$base_flags -Cprofile-use=$out/profiles/$sum.profdata" \
    cargo build --release --locked --bin slatrack --target-dir "$out"
echo "$out/release/slatrack"
