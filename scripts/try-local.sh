#!/usr/bin/env bash
# Newcomer path without an AWS account: builds webhook-deploy, starts the
# pinned AWS emulator (moto) on 127.0.0.1, runs up / status / outputs /
# plan / down against it, then runs the pipeline itself with `local` and
# follows one signed event end to end with `send`.
# `scripts/try-local.sh serve` leaves the emulator and `local` running.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PORT="${MOTO_PORT:-4566}"
scripts/setup-moto.sh
cargo build --locked

.venv/bin/moto_server -H 127.0.0.1 -p "$PORT" >/tmp/webhook-deploy-moto.log 2>&1 &
MOTO_PID=$!
LOCAL_PID=
cleanup() {
    [ -n "$LOCAL_PID" ] && kill -INT "$LOCAL_PID" 2>/dev/null && wait "$LOCAL_PID" 2>/dev/null
    kill "$MOTO_PID" 2>/dev/null || true
}
trap cleanup EXIT
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
"$BIN" --state-dir "$STATE" up --suffix demo --yes
"$BIN" --state-dir "$STATE" status --suffix demo
"$BIN" --state-dir "$STATE" outputs --suffix demo --output json
"$BIN" --state-dir "$STATE" plan --suffix demo
"$BIN" --state-dir "$STATE" down --suffix demo --yes
set +x

# The pipeline itself: the embedded functions run here, against the emulator.
"$BIN" --state-dir "$STATE" local --suffix try --port 0 >"$STATE/local.log" 2>&1 &
LOCAL_PID=$!
for _ in $(seq 1 120); do
    [ -f "$STATE/try.local-session.json" ] && break
    kill -0 "$LOCAL_PID" 2>/dev/null || { cat "$STATE/local.log"; exit 1; }
    sleep 0.5
done
set -x
"$BIN" --state-dir "$STATE" send --local --suffix try
set +x
echo "--- what local logged (functions, front door, stream):"
cat "$STATE/local.log"

if [ "${1:-}" = "serve" ]; then
    echo
    echo "The emulator (AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL) and local are running; Ctrl-C stops both."
    echo "  $BIN --state-dir $STATE send --local --suffix try"
    echo "  tail -f $STATE/local.log"
    wait "$LOCAL_PID"
fi
