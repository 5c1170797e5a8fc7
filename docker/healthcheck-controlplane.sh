#!/bin/bash
# Container health check of the control plane: an authenticated gRPC call
# (Stats.GetStats) with the admin token from the config's admin_token_file.
exec /usr/local/bin/controlplane --config "${SWITCHYARD_CONFIG:-/etc/switchyard/switchyard.toml}" \
    stats --json >/dev/null
