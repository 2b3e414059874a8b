#!/usr/bin/env bash
# Deploy-speed benchmark against the local emulator with an injected latency
# model (default 50 ms per call, +1000 ms for the calls slow on AWS).
# Usage: scripts/bench.sh [LATENCY_MS [SLOW_MS]]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup-moto.sh >/dev/null
cargo build --locked --bin webhook-deploy
cargo run --locked --example deploy-bench -- "$@"
