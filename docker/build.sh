#!/usr/bin/env bash
# Builds Switchyard's container images with podman, from Debian packages only
# (no image registry is needed):
#   1. the local bases (docker/make-base.sh: runtime + build, mmdebstrap);
#   2. localhost/switchyard/dataplane and localhost/switchyard/controlplane
#      (multi-stage: `cargo build --release -p <crate>` in the build base,
#      the stripped binary on the runtime base as uid 10001).
# Installs podman, buildah and mmdebstrap with apt-get when missing (root).
# Compiling takes about 8 minutes on 2 cores (measured here: data plane
# 294 s, control plane 165 s); later builds reuse the cargo cache mounts.
#
# Usage: docker/build.sh [--rebuild-bases] [--no-cache]
#   BUILD_NETWORK=host   network of the build stage (cargo fetches crates.io)
#   TAG=latest           tag of the two images
#   CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt   the host's CA bundle, bind-
#                        mounted over the build stage's for its RUN steps only
#                        (not in any image): cargo then trusts what the host
#                        trusts, e.g. a TLS-inspecting proxy's CA; CA_BUNDLE=
#                        (empty) uses the build base's own Debian bundle
#   OCI_RUNTIME=crun|runc   else the first of crun, runc that starts a
#                        container here (crun refuses hybrid cgroup v1+v2
#                        hosts that enable a v2 controller; runc does not)
#
# Hosts whose hard open-files limit is below podman's default for root
# containers (1048576) without CAP_SYS_RESOURCE (sandboxes) cannot start a
# container with that default: the build containers then get the host's own
# hard limits (nofile, nproc) instead.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tag=${TAG:-latest}
net=${BUILD_NETWORK:-host}
rebuild_bases=0
extra=()
for a in "$@"; do
    case $a in
    --rebuild-bases) rebuild_bases=1 ;;
    --no-cache) extra+=(--no-cache) ;;
    *) echo "usage: $0 [--rebuild-bases] [--no-cache]" >&2; exit 2 ;;
    esac
done

need=()
command -v podman >/dev/null || need+=(podman)
command -v buildah >/dev/null || need+=(buildah)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if [ ${#need[@]} -gt 0 ]; then
    echo "== apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" uidmap fuse-overlayfs >/dev/null
fi

# Limits the build containers can be given on this host.
limits=()
hn=$(ulimit -Hn)
if [ "$hn" != unlimited ] && [ "$hn" -lt 1048576 ]; then
    hu=$(ulimit -Hu)
    if [ "$hu" = unlimited ] || [ "$hu" -gt 32768 ]; then hu=32768; fi
    limits=(--ulimit "nofile=$hn:$hn" --ulimit "nproc=$hu:$hu")
    echo "== hard open-files limit $hn < 1048576: build containers get ${limits[*]}"
fi

for base in runtime build; do
    if [ $rebuild_bases = 1 ] || ! podman image exists "localhost/switchyard/$base-base:bookworm"; then
        docker/make-base.sh "$base"
    fi
done

ca=${CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}
mounts=()
if [ -n "$ca" ] && [ -f "$ca" ]; then
    mounts=(--volume "$ca:/etc/ssl/certs/ca-certificates.crt:ro")
fi

runtime=${OCI_RUNTIME:-}
if [ -z "$runtime" ]; then
    for r in crun runc; do
        if [ $r = runc ] && ! command -v runc >/dev/null; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc >/dev/null
        fi
        command -v $r >/dev/null || continue
        if err=$(podman run --rm --runtime $r "${limits[@]}" --network none \
            localhost/switchyard/runtime-base:bookworm true 2>&1); then
            runtime=$r
            break
        fi
        echo "== $r cannot start a container here: $err"
    done
    [ -n "$runtime" ] || { echo "no OCI runtime starts a container here" >&2; exit 1; }
fi
echo "== OCI runtime: $runtime"

# etcd: the fleet profile's members (Debian's etcd-server on the runtime base).
for crate in dataplane controlplane etcd; do
    echo "== localhost/switchyard/$crate:$tag"
    start=$(date +%s)
    # --format docker: OCI images have no HEALTHCHECK.
    podman build --format docker --runtime "$runtime" --network "$net" \
        "${limits[@]}" "${mounts[@]}" "${extra[@]}" \
        -f "docker/Dockerfile.$crate" -t "localhost/switchyard/$crate:$tag" .
    echo "   built in $(($(date +%s) - start)) s"
done

# Dangling build stages go; the cargo caches (registry, target dir) stay for
# the next build.
podman image prune -f >/dev/null
podman image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep 'localhost/switchyard/' | sort
