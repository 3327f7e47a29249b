#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: installs what the tests need, checks formatting
# and lints, then runs every test. CI (.ci/run) runs exactly this, with KILN_TEST_STRICT=1.
#
# A test whose prerequisite is missing prints `SKIPPED: why` and returns. With
# KILN_TEST_STRICT=1 any SKIPPED line in the tests' output fails the run (after every test ran,
# so one run lists every skip).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/scripts/install-deps.sh
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# Benches are compiled by clippy above and run with `cargo bench`, not here: some generate
# gigabytes of input.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --show-output prints what passing tests printed, so their SKIPPED lines are seen.
cargo test --locked -- --show-output 2>&1 | tee "$log"
if grep -q 'SKIPPED' "$log"; then
  echo "== tests that skipped:"
  grep 'SKIPPED' "$log" | sort | uniq
  if [[ ${KILN_TEST_STRICT:-0} == 1 ]]; then
    echo "KILN_TEST_STRICT=1: a skipped test is a failure (install what it needs, run as root)" >&2
    exit 1
  fi
fi
