#!/usr/bin/env bash
# `systemd-analyze verify` of both units as they would be installed, without
# touching the host: a scratch root holds systemd's own units, /bin/sh and the
# two binaries at /usr/local/bin (ExecStart= must name existing executables),
# and the units in /etc/systemd/system. Fails on any finding: verify prints
# unknown keys and bad values as warnings but still exits 0.
#
# Usage: deploy/systemd/verify.sh [BIN_DIR | --from-images]
#   binaries from BIN_DIR (default target/release) or, with --from-images or
#   when BIN_DIR lacks them, copied out of the localhost/switchyard/* images
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root_dir=$(cd "$here/../.." && pwd)
bin=${1:-$root_dir/target/release}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

mkdir -p "$scratch/usr/local/bin" "$scratch/usr/lib/systemd" "$scratch/bin" \
    "$scratch/etc/systemd/system"
cp -a /usr/lib/systemd/system "$scratch/usr/lib/systemd/"
cp -L /bin/sh "$scratch/bin/sh"
for b in dataplane controlplane; do
    if [ "$bin" != --from-images ] && [ -x "$bin/$b" ]; then
        cp "$bin/$b" "$scratch/usr/local/bin/$b"
    else
        c=$(podman create "localhost/switchyard/$b:latest" 2>/dev/null)
        podman cp "$c:/usr/local/bin/$b" "$scratch/usr/local/bin/$b"
        podman rm -v "$c" >/dev/null 2>&1
    fi
done
cp "$here"/*.service "$scratch/etc/systemd/system/"
systemd-analyze --version | head -1
echo "+ systemd-analyze verify --root=$scratch switchyard-controlplane.service switchyard-dataplane.service"
out=$(cd "$scratch/etc/systemd/system" &&
    systemd-analyze verify --root="$scratch" switchyard-controlplane.service \
        switchyard-dataplane.service 2>&1) || { echo "$out"; exit 1; }
if [ -n "$out" ]; then
    echo "$out"
    exit 1
fi
echo "systemd-analyze verify: switchyard-controlplane.service switchyard-dataplane.service: clean"
