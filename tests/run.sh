#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: installs what the tests need, checks formatting
# and lints, then runs every test. CI (.ci/run) runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/scripts/install-deps.sh
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# Benches are compiled by clippy above and run with `cargo bench`, not here: some generate
# gigabytes of input.
cargo test --locked
