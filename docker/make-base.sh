#!/usr/bin/env bash
# Makes the two local base images of docker/Dockerfile.* from Debian packages
# (no image registry is needed):
#
#   localhost/switchyard/runtime-base:bookworm  Debian 12 minbase, slim-like:
#       no docs, man pages or locales, no apt lists; + ca-certificates (system
#       roots for h3 upstreams)
#   localhost/switchyard/build-base:bookworm    the same + Debian's Rust 1.96
#       (rustc-web, cargo-web from bookworm-security) and gcc/libc6-dev/make
#       (ring and glommio's bundled liburing compile C)
#
# Why Debian's rustc-web and not rustup: the locked dependencies need
# rustc >= 1.89 (uuid 1.29; tonic 0.14, time 0.3.55, icu 2.x need 1.88),
# Debian's `rustc` is 1.63 and trixie's 1.85, while `rustc-web`/`cargo-web`
# (the toolchain Debian keeps current for Firefox and Chromium) are 1.96
# in bookworm-security; rustup's installer is not reachable from these
# machines, and a Debian package is reproducible from the Debian archive.
# Runtime and build bases are the same release, so the binary's glibc
# matches.
#
# Needs root, mmdebstrap and podman (docker/build.sh installs them). The
# rootfs tarballs are written to docker/.build/ (gitignored) and deleted
# after `podman import`.
#
# Usage: docker/make-base.sh [runtime|build|all]   (default: all)
#   SUITE=bookworm MIRROR=http://deb.debian.org/debian
#   SECURITY=http://deb.debian.org/debian-security  ENGINE=podman
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
security=${SECURITY:-http://deb.debian.org/debian-security}
engine=${ENGINE:-podman}
out="$here/.build"
mkdir -p "$out"

sources=(
    "deb $mirror $suite main"
    "deb $mirror $suite-updates main"
    "deb $security $suite-security main"
)

# Slim like debian:*-slim: keep copyright files, drop the rest of the docs.
slim=(
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/lintian/*'
    --aptopt='Acquire::Languages "none"'
    --aptopt='APT::Install-Recommends "false"'
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log "$1"/var/log/apt/*'
)

make_one() { # NAME PACKAGES
    local name=$1 packages=$2
    local tag="localhost/switchyard/$name-base:$suite"
    local tar="$out/$name-base-$suite.tar"
    echo "== $tag: mmdebstrap $suite (minbase + $packages)"
    # merged-usr hook: /usr merged without the usrmerge package (which
    # would pull in perl, ~50 MB).
    mmdebstrap --quiet --mode=root --variant=minbase --include="$packages" \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
        "${slim[@]}" "$suite" "$tar" "${sources[@]}"
    "$engine" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        --message "switchyard $name base: Debian $suite minbase + $packages" \
        "$tar" "$tag" >/dev/null
    rm -f "$tar"
    "$engine" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$tag"
}

what=${1:-all}
case $what in
runtime | all) make_one runtime ca-certificates ;;&
build | all) make_one build ca-certificates,rustc-web,cargo-web,gcc,libc6-dev,make ;;
runtime) ;;
*) echo "usage: $0 [runtime|build|all]" >&2; exit 2 ;;
esac
