#!/bin/bash
# Runs the data plane, first waiting (up to SWITCHYARD_WAIT_SECS, 30) for the
# control plane's ring region SWITCHYARD_WAIT_SHM when that is set: the edge
# attaches to the region only at start, and engines that ignore depends_on's
# `condition: service_healthy` (podman 4) start both containers at once.
if [ -n "${SWITCHYARD_WAIT_SHM:-}" ]; then
    for ((i = 0; i < ${SWITCHYARD_WAIT_SECS:-30} * 10; i++)); do
        [ -e "$SWITCHYARD_WAIT_SHM" ] && break
        sleep 0.1
    done
    [ -e "$SWITCHYARD_WAIT_SHM" ] ||
        echo "no ring region at $SWITCHYARD_WAIT_SHM yet: the edge starts with its static tables" >&2
fi
exec /usr/local/bin/dataplane "$@"
