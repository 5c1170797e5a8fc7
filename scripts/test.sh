#!/usr/bin/env bash
# Runs every test of the workspace, on a fresh machine too: installs what the
# interop tests need (Python `websockets` and `pproxy` in .venv/, cargo-nextest
# if missing), then runs the whole suite. Used by README and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
export SWITCHYARD_PYTHON="$PWD/.venv/bin/python"

command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
