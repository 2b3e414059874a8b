#!/usr/bin/env bash
# Deploy-speed benchmark against the local emulator with an injected latency
# model (default 50 ms per call, +1000 ms for the calls slow on AWS).
# Usage: scripts/bench.sh [LATENCY_MS [SLOW_MS]]
# BENCH_RELEASE=1 measures the release binary (a ~15 min build the first time).
# BENCH_UPS=N: fresh ups counted (median; default 5). BENCH_LATENCY=added: the
# latency is added to the emulator's own time instead of being the whole round trip.
# BENCH_EMULATORS=one: one emulator for every service as the main layout (the
# default gives API Gateway, EC2, and Logs+CloudWatch+SNS emulators of their
# own; the other layout's fresh ups are measured in the same run either way).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup-moto.sh >/dev/null
if [ "${BENCH_RELEASE:-0}" = 1 ]; then
    cargo build --locked --release --bin webhook-deploy
    export WEBHOOK_DEPLOY_BIN="${CARGO_TARGET_DIR:-target}/release/webhook-deploy"
else
    cargo build --locked --bin webhook-deploy
fi
cargo run --locked --example deploy-bench -- "$@"
