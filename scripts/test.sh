#!/usr/bin/env bash
# The project's test command: installs the pinned emulator if needed, checks
# formatting and lints, then runs every test (unit and moto-backed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup-moto.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Ignored tests run too: the bit-identical rebuild of the Lambda binaries
# (a cold release build, minutes) is slow, not optional.
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast --run-ignored all
else
    cargo test --workspace --locked --no-fail-fast -- --include-ignored
fi
