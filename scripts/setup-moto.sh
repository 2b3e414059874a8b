#!/usr/bin/env bash
# Creates <repo>/.venv with the pinned moto emulator used by the integration tests.
# Idempotent: does nothing if .venv/bin/moto_server already exists at the pinned version.
set -euo pipefail

MOTO_VERSION="5.2.5"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
PYTHON="${PYTHON:-python3}"

die() {
    echo "setup-moto.sh: error: $*" >&2
    exit 1
}

installed_version() {
    [ -x "$VENV/bin/moto_server" ] || return 1
    [ -x "$VENV/bin/python" ] || return 1
    "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null
}

if [ "$(installed_version || true)" = "$MOTO_VERSION" ]; then
    echo "moto $MOTO_VERSION already installed: $VENV/bin/moto_server"
    exit 0
fi

command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found; install Python 3 (3.9+) or set PYTHON=/path/to/python3"

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV" \
        || die "'$PYTHON -m venv $VENV' failed (on Debian/Ubuntu: apt-get install python3-venv)"
fi

echo "installing moto[server]==$MOTO_VERSION into $VENV (takes ~30 s)"
"$VENV/bin/python" -m pip install --disable-pip-version-check --quiet "moto[server]==$MOTO_VERSION" \
    || die "pip install 'moto[server]==$MOTO_VERSION' failed (network access to the Python package index needed)"

got="$(installed_version || true)"
[ "$got" = "$MOTO_VERSION" ] || die "after install, moto version is '${got:-missing}', expected $MOTO_VERSION"
[ -x "$VENV/bin/moto_server" ] || die "$VENV/bin/moto_server missing after install"

echo "moto $MOTO_VERSION installed: $VENV/bin/moto_server"
