#!/usr/bin/env bash
# Runs every test of the workspace, on a fresh machine too: installs what the
# interop tests need (Python `websockets` and `pproxy` in .venv/, curl,
# Debian's chromium, prometheus and etcd-server and the npm package
# playwright-core, cargo-nextest if missing), then runs the whole suite.
# Used by README and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
export SWITCHYARD_PYTHON="$PWD/.venv/bin/python"

command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }

# Prometheus (dataplane/tests/observability.rs): promtool checks /metrics and
# a real server scrapes it. Only the binaries are used (the packaged service
# is not started by the test).
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
fi

# etcd (controlplane/tests/fleet.rs): a 3-member cluster on loopback, one
# process per member, started by the test (the packaged service is not).
if ! command -v etcd >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server
fi

# Chromium interop (dataplane/tests/chromium.rs): Debian's chromium, driven
# through playwright-core from dataplane/tests/js (npm ci; it downloads no
# browser). Node.js comes with the machine.
if [ -z "${SWITCHYARD_CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
js=dataplane/tests/js
if [ ! -f "$js/node_modules/playwright-core/package.json" ] \
  || [ "$js/package-lock.json" -nt "$js/node_modules/.package-lock.json" ]; then
  (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
