#!/usr/bin/env bash
# A local fleet (docs/fleet.md): three etcd members on loopback as one
# cluster, two edge nodes (`controlplane up`, each with its data plane) that
# share their tables through it, a TCP echo origin and one example tunnel.
#
#   scripts/fleet.sh up         etcd, origin, both nodes, tunnel `raw`
#   scripts/fleet.sh status     `controlplane stats --fleet` + etcd endpoint status
#   scripts/fleet.sh down       stops everything it started (by its pid files)
#   scripts/fleet.sh clean      down, then removes var/fleet/
#   scripts/fleet.sh etcd-up    only the etcd cluster (used by up)
#   scripts/fleet.sh etcd-down  only the etcd cluster (used by down)
#
# Nodes: examples/fleet/edge-{a,b}.toml. Everything lives under var/fleet/
# (etcd-N/ data, logs/, pids/, admin.token, edge-*/cache.db). Needs etcd and
# etcdctl (Debian: etcd-server, etcd-client) and python3; builds
# target/release/{controlplane,dataplane} with cargo when they are missing.
# Every wait is bounded (FLEET_ETCD_WAIT, FLEET_NODE_WAIT, seconds).
set -euo pipefail
cd "$(dirname "$0")/.."

fleet=var/fleet
logs=$fleet/logs
pids=$fleet/pids
nodes=(edge-a edge-b)
configs=(examples/fleet/edge-a.toml examples/fleet/edge-b.toml)   # examples/fleet/NODE.toml
cp_bin=${SWITCHYARD_CONTROLPLANE:-target/release/controlplane}
dp_bin=${SWITCHYARD_DATAPLANE:-target/release/dataplane}
etcd_bin=${ETCD:-etcd}
etcdctl_bin=${ETCDCTL:-etcdctl}
etcd_wait=${FLEET_ETCD_WAIT:-30}
node_wait=${FLEET_NODE_WAIT:-60}
endpoints=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793
origin=127.0.0.1:9012
tunnel=raw
tunnel_host=raw.fleet.localhost
tunnel_path=/tunnel
export ETCDCTL_API=3
# The config files decide where the CLI goes and which token it shows.
unset SWITCHYARD_GRPC SWITCHYARD_ADMIN_TOKEN

# The origin: raw TCP echo (the tunnel is HTTPUpgrade, relayed as bytes).
# The last argument marks the process for `down`.
echo_py='
import socketserver, sys
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)
class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
host, port = sys.argv[1].rsplit(":", 1)
Server((host, int(port)), Echo).serve_forever()
'

# Upgrade on the tunnel through one edge, then one echo round trip; prints
# the status line. Exit 0 on 101 and the echo back.
probe_py='
import socket, sys
addr, host, path = sys.argv[1:4]
h, p = addr.rsplit(":", 1)
s = socket.create_connection((h, int(p)), timeout=2)
s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\n"
           "Upgrade: websocket\r\n\r\n" % (path, host)).encode())
f = s.makefile("rb")
status = f.readline().decode("latin-1").strip()
while f.readline() not in (b"\r\n", b"\n", b""):
    pass
if " 101 " not in status + " ":
    print(status or "no answer")
    sys.exit(1)
s.sendall(b"fleet-ping")
got = f.read(len(b"fleet-ping"))
print(status + (", echo ok" if got == b"fleet-ping" else ", echo failed"))
sys.exit(0 if got == b"fleet-ping" else 1)
'

say() { printf 'fleet.sh: %s\n' "$*" >&2; }
in_up=0
die() {
    say "$*"
    if [ "$in_up" = 1 ]; then
        say "logs: $logs/; 'scripts/fleet.sh down' stops what this script started"
    fi
    exit 1
}

# `key = "value"` of a config file (first match; the fleet files are flat).
cfg_get() {
    sed -n "s/^$2[[:space:]]*=[[:space:]]*\"\\([^\"]*\\)\".*/\\1/p" "$1" | head -n 1
}

# pid alive and its command line matches the extended regex (pid reuse guard).
alive() {
    local pid=$1 pattern=$2 cmd
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    cmd=$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null) || return 1
    [ -n "$cmd" ] && grep -Eq -- "$pattern" <<<"$cmd"
}

pid_of() {
    local f=$pids/$1.pid
    [ -f "$f" ] && cat "$f"
}

# What the command line of each process this script starts contains (the
# data plane child of a node has its node's --config too).
pattern_of() {
    case $1 in
    etcd-*) printf '%s' "--name $1 --data-dir $fleet/$1( |$)" ;;
    origin) printf '%s' 'fleet-origin' ;;
    *) printf '%s' "--config examples/fleet/$1\.toml( |$)" ;;
    esac
}

# running NAME: the pid file's process is alive.
running() {
    local pid
    pid=$(pid_of "$1") || return 1
    alive "$pid" "$(pattern_of "$1")"
}

tcp_open() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/${0%:*}/${0##*:}"' "$1" 2>/dev/null
}

# Background process in its own session (pid = process group id), stdin
# closed, output appended to its log.
start_bg() {
    local name=$1
    shift
    printf '=== %s: starting %s (%s)\n' "$(date -Iseconds)" "$name" "$1" >>"$logs/$name.log"
    setsid "$@" </dev/null >>"$logs/$name.log" 2>&1 &
    echo "$!" >"$pids/$name.pid"
}

log_tail() {
    if [ -f "$logs/$1.log" ]; then
        say "last lines of $logs/$1.log:"
        tail -n 15 "$logs/$1.log" >&2
    fi
}

# stop NAME SECONDS: SIGTERM, wait, then SIGKILL to its process
# group; what is left of the group (a data plane whose control plane was
# killed) gets the same.
stop() {
    local name=$1 secs=$2 pattern pid p i
    local -a left=()
    pid=$(pid_of "$name") || return 0
    pattern=$(pattern_of "$name")
    if alive "$pid" "$pattern"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < secs * 10; i++)); do
            alive "$pid" "$pattern" || break
            sleep 0.1
        done
        if alive "$pid" "$pattern"; then
            say "$name (pid $pid) still running after ${secs}s: SIGKILL"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    for ((i = 0; i < 50; i++)); do
        left=()
        for p in $(pgrep -g "$pid" 2>/dev/null || true); do
            if alive "$p" "$pattern"; then left+=("$p"); fi
        done
        [ "${#left[@]}" = 0 ] && break
        if [ "$i" = 0 ]; then
            kill -TERM "${left[@]}" 2>/dev/null || true
        elif [ "$i" = 30 ]; then
            kill -KILL "${left[@]}" 2>/dev/null || true
        fi
        sleep 0.1
    done
    [ "${#left[@]}" = 0 ] || say "$name: processes ${left[*]} did not stop"
    rm -f "$pids/$name.pid"
    say "stopped $name"
}

etcd_member_args() {
    local i=$1 cluster="" j
    for j in 1 2 3; do
        cluster+="${cluster:+,}etcd-$j=http://127.0.0.1:$((23800 + j))"
    done
    printf '%s\n' \
        --name "etcd-$i" \
        --data-dir "$fleet/etcd-$i" \
        --listen-client-urls "http://127.0.0.1:$((23790 + i))" \
        --advertise-client-urls "http://127.0.0.1:$((23790 + i))" \
        --listen-peer-urls "http://127.0.0.1:$((23800 + i))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((23800 + i))" \
        --initial-cluster "$cluster" \
        --initial-cluster-token switchyard-fleet \
        --initial-cluster-state new \
        --logger zap \
        --log-outputs stderr
}

etcdctl_() {
    timeout 10 "$etcdctl_bin" --endpoints="$endpoints" --dial-timeout=2s --command-timeout=3s "$@"
}

etcd_up() {
    command -v "$etcd_bin" >/dev/null || die "no $etcd_bin (Debian: apt-get install etcd-server)"
    command -v "$etcdctl_bin" >/dev/null || die "no $etcdctl_bin (Debian: apt-get install etcd-client)"
    mkdir -p "$logs" "$pids"
    local i name port args out="" deadline
    for i in 1 2 3; do
        running "etcd-$i" && continue
        for port in $((23790 + i)) $((23800 + i)); do
            if tcp_open "127.0.0.1:$port"; then
                die "127.0.0.1:$port is in use, not by an etcd this script started"
            fi
        done
    done
    in_up=1
    for i in 1 2 3; do
        name=etcd-$i
        if running "$name"; then
            say "$name already running (pid $(pid_of "$name"))"
            continue
        fi
        mapfile -t args < <(etcd_member_args "$i")
        start_bg "$name" "$etcd_bin" "${args[@]}"
        say "started $name (pid $(pid_of "$name"), client 127.0.0.1:$((23790 + i)), log $logs/$name.log)"
    done
    deadline=$((SECONDS + etcd_wait))
    while :; do
        if out=$(etcdctl_ endpoint health 2>&1); then
            break
        fi
        for i in 1 2 3; do
            if ! running "etcd-$i"; then
                log_tail "etcd-$i"
                die "etcd-$i exited while the cluster was forming"
            fi
        done
        if [ "$SECONDS" -ge "$deadline" ]; then
            printf '%s\n' "$out" >&2
            for i in 1 2 3; do log_tail "etcd-$i"; done
            die "etcd cluster not healthy after ${etcd_wait}s ($endpoints)"
        fi
        sleep 0.5
    done
    say "etcd healthy: $endpoints"
    etcdctl_ endpoint status -w table || true
}

etcd_down() {
    local i
    for i in 3 2 1; do
        stop "etcd-$i" 15
    done
}

# The fleet's one admin token, before any node starts (a node would make its
# own): 32 random bytes, base64url without padding, mode 0600.
ensure_token() {
    local file other tok c
    file=$(cfg_get "${configs[0]}" admin_token_file)
    for c in "${configs[@]}"; do
        other=$(cfg_get "$c" admin_token_file)
        [ "$other" = "$file" ] || die "$c: admin_token_file must be $file (one token per fleet)"
    done
    [ -s "$file" ] && return 0
    mkdir -p "$(dirname "$file")"
    tok=$(head -c 32 /dev/urandom | base64 -w 0 | tr '+/' '-_' | tr -d '=')
    [ "${#tok}" = 43 ] || die "could not generate the admin token"
    (umask 077 && printf '%s\n' "$tok" >"$file.tmp")
    chmod 600 "$file.tmp"
    mv -f "$file.tmp" "$file"
    say "admin token written to $file"
}

ensure_binaries() {
    [ -x "$cp_bin" ] && [ -x "$dp_bin" ] && return 0
    command -v cargo >/dev/null || die "no $cp_bin or $dp_bin, and no cargo to build them"
    say "building the release binaries: cargo build --release -p controlplane -p dataplane"
    cargo build --release -p controlplane -p dataplane
}

origin_up() {
    if running origin; then
        return 0
    fi
    tcp_open "$origin" && die "$origin is in use, not by the origin this script started"
    start_bg origin python3 -c "$echo_py" "$origin" fleet-origin
    local i
    for ((i = 0; i < 50; i++)); do
        tcp_open "$origin" && break
        sleep 0.1
    done
    tcp_open "$origin" || { log_tail origin; die "echo origin did not listen on $origin"; }
    say "started origin (TCP echo on $origin, pid $(pid_of origin))"
}

# wait_port NAME ADDR: until ADDR accepts, NAME alive, bounded.
wait_port() {
    local name=$1 addr=$2 deadline=$((SECONDS + node_wait))
    until tcp_open "$addr"; do
        if ! running "$name"; then
            log_tail "$name"
            die "$name exited before $addr accepted connections"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log_tail "$name"
            die "$name: nothing listens on $addr after ${node_wait}s"
        fi
        sleep 0.2
    done
}

node_up() {
    local name=$1 cfg=$2 grpc edge admin cache a
    grpc=$(cfg_get "$cfg" grpc)
    edge=$(cfg_get "$cfg" addr)
    admin=$(cfg_get "$cfg" admin)
    cache=$(cfg_get "$cfg" cache)
    if running "$name"; then
        say "$name already running (pid $(pid_of "$name"))"
    else
        for a in "$grpc" "$edge" "$admin"; do
            tcp_open "$a" && die "$a ($name, $cfg) is in use, not by a node this script started"
        done
        [ -n "$cache" ] && mkdir -p "$(dirname "$cache")"
        start_bg "$name" "$cp_bin" --config "$cfg" up --dataplane "$dp_bin"
        say "started $name (pid $(pid_of "$name"), log $logs/$name.log)"
    fi
    wait_port "$name" "$grpc"
    wait_port "$name" "$edge"
    say "$name: API $grpc, edge $edge, admin http://$admin/stats"
}

cli() {
    timeout 15 "$cp_bin" --config "$@"
}

tunnel_up() {
    local a=${configs[0]}
    if cli "$a" tunnel get "$tunnel" >/dev/null 2>&1; then
        say "tunnel $tunnel exists (etcd keeps it across down/up)"
    else
        cli "$a" tunnel create "$tunnel" --hostname "$tunnel_host" \
            --upstream "$origin" --mode httpupgrade --path "$tunnel_path" ||
            die "could not create the tunnel $tunnel through ${nodes[0]}"
    fi
}

# Until the tunnel answers 101 and echoes through this node, bounded.
wait_tunnel() {
    local name=$1 edge=$2 out="" deadline=$((SECONDS + 15))
    while :; do
        if out=$(python3 -c "$probe_py" "$edge" "$tunnel_host" "$tunnel_path" 2>&1); then
            say "$name $edge: $out"
            return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            say "$name $edge: $out"
            return 1
        fi
        sleep 0.5
    done
}

up() {
    in_up=1
    command -v python3 >/dev/null || die "python3 is needed (echo origin)"
    etcd_up
    ensure_binaries
    ensure_token
    origin_up
    local i
    for i in "${!nodes[@]}"; do
        node_up "${nodes[$i]}" "${configs[$i]}"
    done
    tunnel_up
    local ok=1 edge
    for i in "${!nodes[@]}"; do
        edge=$(cfg_get "${configs[$i]}" addr)
        wait_tunnel "${nodes[$i]}" "$edge" || ok=0
    done
    [ "$ok" = 1 ] || die "the tunnel does not answer through every node yet (scripts/fleet.sh status)"
    local ea eb
    ea=$(cfg_get "${configs[0]}" addr)
    eb=$(cfg_get "${configs[1]}" addr)
    cat <<EOF

Fleet up: etcd $endpoints; ${nodes[0]} (edge $ea), ${nodes[1]} (edge $eb).
Tunnel '$tunnel' ($tunnel_host, httpupgrade $tunnel_path -> echo $origin) was
created through ${nodes[0]}; ${nodes[1]} serves it from etcd. A 101 through ${nodes[1]}
(curl then waits on the open tunnel until --max-time):
  curl -si --max-time 2 -H 'Host: $tunnel_host' -H 'Connection: Upgrade' -H 'Upgrade: websocket' http://$eb$tunnel_path
and through ${nodes[0]}:
  curl -si --max-time 2 -H 'Host: $tunnel_host' -H 'Connection: Upgrade' -H 'Upgrade: websocket' http://$ea$tunnel_path
CLI (either node): $cp_bin --config ${configs[1]} tunnel list
Fleet view: scripts/fleet.sh status    Logs: $logs/    Stop: scripts/fleet.sh down
EOF
}

status() {
    local name pid i asked=0
    for name in etcd-1 etcd-2 etcd-3 origin "${nodes[@]}"; do
        pid=$(pid_of "$name" || true)
        if running "$name"; then
            printf '%-8s running (pid %s)\n' "$name" "$pid"
        else
            printf '%-8s stopped\n' "$name"
        fi
    done
    for i in "${!nodes[@]}"; do
        running "${nodes[$i]}" || continue
        echo
        echo "== controlplane --config ${configs[$i]} stats --fleet"
        cli "${configs[$i]}" stats --fleet || true
        asked=1
        break
    done
    [ "$asked" = 1 ] || say "no node running: no fleet view"
    echo
    echo "== etcdctl endpoint status -w table"
    etcdctl_ endpoint status -w table || true
}

down() {
    local i
    for ((i = ${#nodes[@]} - 1; i >= 0; i--)); do
        stop "${nodes[$i]}" 30
    done
    stop origin 5
    etcd_down
}

clean() {
    down
    rm -rf "$fleet"
    local c shm
    for c in "${configs[@]}"; do
        shm=$(cfg_get "$c" shm)
        case $shm in
        /dev/shm/switchyard-fleet-*) rm -f "$shm" ;;
        esac
    done
    say "removed $fleet/"
}

usage() {
    sed -n '2,17s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

[ $# = 1 ] || usage
case $1 in
up) up ;;
status) status ;;
down) down ;;
clean) clean ;;
etcd-up) etcd_up ;;
etcd-down) etcd_down ;;
*) usage ;;
esac
