#!/usr/bin/env bash
# Newcomer path without an AWS account: builds webhook-deploy, starts the
# pinned AWS emulator (moto) on 127.0.0.1, and runs up / status / outputs /
# plan / down against it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PORT="${MOTO_PORT:-4566}"
scripts/setup-moto.sh
cargo build --locked

.venv/bin/moto_server -H 127.0.0.1 -p "$PORT" >/tmp/webhook-deploy-moto.log 2>&1 &
MOTO_PID=$!
trap 'kill $MOTO_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" \
        "http://127.0.0.1:$PORT/moto-api/" >/dev/null 2>&1 && break
    sleep 0.5
done

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT"
BIN="${CARGO_TARGET_DIR:-target}/debug/webhook-deploy"
STATE="$(mktemp -d)"

set -x
"$BIN" --state-dir "$STATE" up --suffix demo
"$BIN" --state-dir "$STATE" status --suffix demo
"$BIN" --state-dir "$STATE" outputs --suffix demo --output json
"$BIN" --state-dir "$STATE" plan --suffix demo
"$BIN" --state-dir "$STATE" down --suffix demo --yes
