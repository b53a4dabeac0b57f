#!/usr/bin/env bash
# Installs what the tests need and runs all of them: the README's second command and
# what CI runs (.ci/run). Safe to run repeatedly; each step says what it does.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain: $(cargo --version)"
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt

step "tansu broker for the integration suite (prebuilt, hash-verified)"
SLATRACK_TANSU=$(bash scripts/fetch-tansu.sh)
export SLATRACK_TANSU
echo "$SLATRACK_TANSU"

step "Prometheus (prometheus, promtool) from Debian's prometheus package"
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus >/dev/null
fi
promtool --version | head -1
prometheus --version | head -1

step "OpenSSL headers (TLS to Kafka) and socat (the TLS endpoint the tests put in front of tansu)"
if ! pkg-config --exists openssl 2>/dev/null || ! command -v socat >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libssl-dev pkg-config socat >/dev/null
fi
pkg-config --modversion openssl
socat -V | grep -m1 'socat version'

step "PostgreSQL server binaries (initdb, pg_ctl) from Debian's postgresql package; the tests start their own servers"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v psql >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
# No system service: the package may start one; the tests use their own data directories.
ls -d /usr/lib/postgresql/*/bin | tail -1
psql --version

step "Chromium from Debian's chromium package (the HTML scorecard rendered headless)"
if ! command -v chromium >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
chromium --version 2>/dev/null | head -1

step "format check (cargo fmt --check)"
cargo fmt --all -- --check

step "lint (cargo clippy --all-targets --features integration -- -D warnings)"
cargo clippy --all-targets --features integration --locked -- -D warnings

step "tests (unit, property, whole-program, mock cluster, tansu integration)"
cargo test --locked --features integration --lib --bins --tests

step "the release build's training run, on the debug build (scripts/build-release.sh --train-only)"
bash scripts/build-release.sh --train-only target/debug/slatrack

step "generated alert rules: promtool check + unit tests"
promtool check rules deploy/prometheus/slatrack-rules.yml
promtool test rules deploy/prometheus/tests/slatrack-rules.test.yml

step "deploy/: compose spec, Kubernetes schemas, hadolint, promtool (scripts/validate-deploy.sh)"
bash scripts/validate-deploy.sh

step "dependency advisories (cargo audit: Cargo.lock against the RustSec advisory database)"
# The database is a git repository on github.com. Where github.com is unreachable (as on
# the machines this was built on: only crates.io and PyPI answer), point
# SLATRACK_ADVISORY_DB at a checkout of github.com/rustsec/advisory-db to audit offline.
if [ -n "${SLATRACK_ADVISORY_DB:-}" ] || timeout 15 git ls-remote https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
  command -v cargo-audit >/dev/null || cargo install cargo-audit --locked --version 0.22.2
  if [ -n "${SLATRACK_ADVISORY_DB:-}" ]; then
    cargo audit --db "$SLATRACK_ADVISORY_DB" --no-fetch --stale
  else
    cargo audit
  fi
else
  echo "SKIPPED: github.com (the RustSec advisory database) is unreachable from here;"
  echo "         set SLATRACK_ADVISORY_DB=<checkout of rustsec/advisory-db> to audit offline"
fi

step "fuzz targets, briefly (20,000 runs each from the seed corpus; long runs: fuzz/README.md)"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
# cargo-fuzz passes instrumentation flags that stable rustc accepts only with
# RUSTC_BOOTSTRAP=1 (the machine has one stable toolchain; --sanitizer none: no ASan).
# New inputs go to a temporary first corpus dir; the committed seeds stay untouched.
fuzz_out=$(mktemp -d)
for t in decode_protobuf decode_json engine_ingest; do
  mkdir -p "$fuzz_out/$t"
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "$fuzz_out/$t" corpus/"$t" --sanitizer none -O -- -runs=20000 -seed=1 2>&1 | tail -n 2)
done
rm -rf "$fuzz_out"

step "benches build (never timed in CI: speed lives in BENCHMARKS.md)"
# The dev profile: it reuses the test build's dependencies (an optimized build would compile
# them all again for minutes); clippy --all-targets has already checked the benches' code.
cargo build --locked --benches
