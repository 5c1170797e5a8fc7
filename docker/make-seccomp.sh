#!/usr/bin/env bash
# Writes docker/seccomp-io_uring.json: the container engine's default seccomp
# profile plus one rule that allows io_uring_setup, io_uring_enter and
# io_uring_register (current Docker and containers-common defaults refuse
# them with ENOSYS, and every data-plane core is a glommio io_uring executor).
# Source: containers-common's /usr/share/containers/seccomp.json (podman's
# default on Debian 12; same format and rules as Docker's default, which it
# derives from). Usage: docker/make-seccomp.sh [DEFAULT_PROFILE]
set -euo pipefail
src=${1:-/usr/share/containers/seccomp.json}
dst="$(cd "$(dirname "$0")" && pwd)/seccomp-io_uring.json"
python3 - "$src" "$dst" <<'PY'
import json, sys
src, dst = sys.argv[1:]
profile = json.load(open(src))
uring = ["io_uring_enter", "io_uring_register", "io_uring_setup"]
for rule in profile["syscalls"]:
    if rule["action"] == "SCMP_ACT_ALLOW":
        rule["names"] = [n for n in rule["names"] if n not in uring]
profile["syscalls"] = [r for r in profile["syscalls"] if r["names"]]
profile["syscalls"].insert(1, {
    "names": uring,
    "action": "SCMP_ACT_ALLOW",
    "args": [],
    "comment": "switchyard: the data plane's glommio executors run on io_uring",
    "includes": {},
    "excludes": {},
})
with open(dst, "w") as f:
    json.dump(profile, f, indent=1)
    f.write("\n")
print(f"{dst}: {sum(len(r['names']) for r in profile['syscalls'])} syscall names in {len(profile['syscalls'])} rules")
PY
