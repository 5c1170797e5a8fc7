#!/usr/bin/env python3
"""Side-by-side comparison: direct vs Switchyard vs HAProxy vs nginx.

One command: builds release binaries, installs HAProxy and nginx (apt) when
missing, starts the origins, configures each proxy equivalently, pins the
proxy under test to CPU 1 and loadgen + origins to CPU 0 (taskset), runs every
scenario against every target in the same run, and prints one table of
absolute figures and ratios. Writes bench/results/<date>.md and .json.

Scenarios (DESIGN §7):
  bulk       1 upgraded stream, full duplex through an echo: GB/s received,
             proxy CPU seconds per GB relayed
  setup      connect + WebSocket handshake + 64 B echo + close: conn/s
  ws64/ws1k  WebSocket echo, 256 connections, 64 B / 1 KiB: msgs/s, p50, p99
  idle       N upgraded connections held: proxy RSS per connection
  bulk-h2    bulk over one RFC 8441 extended-CONNECT stream (h2c prior
             knowledge) to the same h1 origin: Switchyard's h2 path vs its
             h1 path in the same run, and vs HAProxy's h2 frontend
  ws64-h2    WebSocket echo over h2, 256 streams on 16 connections, 64 B
             (nginx has no RFC 8441: not compared there)
  bulk-h3    bulk over one RFC 9220 WebSocket stream over HTTP/3 (QUIC on the
             TLS listener) to the same h1 origin: against the h1 path, same run
  ws64-h3    WebSocket echo over h3, 256 streams on 16 QUIC connections, 64 B
             (the Debian builds of HAProxy and nginx have no HTTP/3: Switchyard
             only). Target `switchyard-nogso` runs the h3 rows with GSO off on
             both ends (SWITCHYARD_QUIC_NO_GSO), for the GSO on/off ratio;
             `switchyard-jumbo` with path MTU discovery up to 16,000-byte
             datagrams on both ends (edge.quic_max_udp_payload; loopback's
             MTU is 65,536, the default 1,452 fits Ethernet).

Every scenario opens its stream with a real WebSocket handshake (key and
accept): HAProxy 2.6 in mode http answers 400 to an Xray-style HTTPUpgrade
request, which has no Sec-WebSocket-Key, so that client cannot be compared
through it. Bulk then pushes unframed bytes (no proxy parses frames).

Equivalence: every proxy forwards the client's upgrade request to an origin
that answers 101 and then relays bytes (Switchyard tunnel mode "http",
HAProxy "mode http" with splice options, nginx proxy_pass with Upgrade
headers). HAProxy "mode tcp" is added as the L4 floor for bulk.

usage: python3 bench/compare.py [--quick] [--targets ...] [--scenarios ...] [--edge PATH]
                               [--rate MSGS_PER_S] [--syscalls]
"""
import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
LOADGEN = os.path.join(REL, "loadgen")
EDGE = os.path.join(REL, "dataplane")

PORTS = {  # origins on CPU 0
    "tcp-echo": 19102,
    "httpupgrade-echo": 19103,
    "ws-echo": 19101,
}
PROXY_PORTS = {  # per target: (upgrade listener, ws listener, tcp listener)
    "switchyard": (18081, 18081, None),
    "haproxy": (18091, 18092, 18093),
    "nginx": (18111, 18112, None),
}
H2_PORTS = {  # per target: h2c (prior knowledge) listener with RFC 8441
    "switchyard": 18081,
    "haproxy": 18094,
}
H3_PORTS = {  # per target: TLS listener with quic = true (UDP, same port)
    "switchyard": 18443,
    "switchyard-nogso": 18443,
    "switchyard-jumbo": 18443,
}
NO_GSO = {"SWITCHYARD_QUIC_NO_GSO": "1"}
H3_ORIGIN = 19443  # loadgen origin h3-echo (UDP), behind the tunnel h3up.bench
# Path MTU discovery up to 16,000-byte datagrams on both ends (loopback's MTU
# is 65,536; the default 1,452 fits Ethernet): edge.quic_max_udp_payload.
JUMBO = 16000
JUMBO_ENV = {"SWITCHYARD_QUIC_MAX_UDP": str(JUMBO)}
H3_ONLY = ("switchyard-nogso", "switchyard-jumbo")
CLIENT_CPU = "0"
PROXY_CPU = "1"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ensure_tools():
    sh(["cargo", "build", "--release", "-q", "-p", "dataplane", "-p", "loadgen"], cwd=ROOT)
    missing = [p for p in ("haproxy", "nginx") if shutil.which(p) is None and not os.path.exists(f"/usr/sbin/{p}")]
    if missing:
        print(f"installing {' '.join(missing)} (apt)", file=sys.stderr)
        sh(["apt-get", "update", "-qq"], stdout=subprocess.DEVNULL)
        sh(["apt-get", "install", "-y", "-qq", *missing], stdout=subprocess.DEVNULL, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def binary(name):
    return shutil.which(name) or f"/usr/sbin/{name}"


def wait_port(port, timeout=20):
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


TMP = None


def start(cmd, cpu, **kw):
    return subprocess.Popen(["taskset", "-c", cpu, *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, **kw)


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=10)
    except Exception:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except Exception:
            pass


def pids_of(p):
    """The proxy's process and its children (nginx master + worker)."""
    out = subprocess.run(["pgrep", "-s", str(os.getpgid(p.pid))], capture_output=True, text=True).stdout.split()
    return [int(x) for x in out] or [p.pid]


def cpu_seconds(p):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids_of(p):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / tick


def rss_kib(p):
    total = 0
    for pid in pids_of(p):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def certificates(d):
    """A test CA and a certificate for localhost signed by it (openssl)."""
    ca, ca_key, crt, key = (os.path.join(d, n) for n in ("ca.pem", "ca.key", "edge.pem", "edge.key"))
    if not os.path.exists(crt):
        q = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        sh(["openssl", "req", "-x509", *ec, "-subj", "/CN=bench CA", "-keyout", ca_key, "-out", ca, "-days", "2"], **q)
        csr = os.path.join(d, "edge.csr")
        sh(["openssl", "req", *ec, "-subj", "/CN=localhost", "-keyout", key, "-out", csr], **q)
        ext = os.path.join(d, "ext.cnf")
        with open(ext, "w") as f:
            f.write("subjectAltName=DNS:localhost\n")
        sh(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", crt,
            "-days", "2", "-extfile", ext], **q)
    return ca, crt, key


NO_QUIC = False  # --no-quic: A/B against a build without HTTP/3
PERF_DIR = ""  # --perf-record: where each scenario's profile of the proxy goes


def switchyard_config(d, extra_edge=""):
    _, crt, key = certificates(d)
    quic = "" if NO_QUIC else f"""
[[listener]]
addr = "127.0.0.1:{H3_PORTS['switchyard']}"
tls = {{ cert = "{crt}", key = "{key}" }}
quic = true
"""
    cfg = f"""
[edge]
cores = 1
{extra_edge}
[[listener]]
addr = "127.0.0.1:{PROXY_PORTS['switchyard'][0]}"
h2c = true
{quic}[[tunnel]]
name = "hu"
hostnames = ["hu.bench"]
upstream = "127.0.0.1:{PORTS['httpupgrade-echo']}"
[[tunnel]]
name = "ws"
hostnames = ["ws.bench"]
upstream = "127.0.0.1:{PORTS['ws-echo']}"
[[tunnel]]
name = "h3up"
hostnames = ["h3up.bench", "masque.bench", "wt.bench"]
upstream = "127.0.0.1:{H3_ORIGIN}"
http_version = "h3"
upstream_tls = {{ insecure = true }}
"""
    path = os.path.join(d, "switchyard.toml")
    with open(path, "w") as f:
        f.write(cfg)
    return [EDGE, "--config", path]


def haproxy_config(d):
    up, ws, tcp = PROXY_PORTS["haproxy"]
    cfg = f"""
global
    nbthread 1
    maxconn 7800
    log stdout format raw local0 emerg
defaults
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout tunnel 1h
    option splice-auto
    option splice-request
    option splice-response
frontend upgrade
    mode http
    bind 127.0.0.1:{up}
    default_backend httpupgrade_echo
frontend websocket
    mode http
    bind 127.0.0.1:{ws}
    default_backend ws_echo
frontend websocket_h2
    mode http
    bind 127.0.0.1:{H2_PORTS['haproxy']} proto h2
    use_backend httpupgrade_echo if {{ req.hdr(host) -m beg hu.bench }}
    default_backend ws_echo
frontend l4
    mode tcp
    bind 127.0.0.1:{tcp}
    default_backend tcp_echo
backend httpupgrade_echo
    mode http
    server o 127.0.0.1:{PORTS['httpupgrade-echo']}
backend ws_echo
    mode http
    server o 127.0.0.1:{PORTS['ws-echo']}
backend tcp_echo
    mode tcp
    server o 127.0.0.1:{PORTS['tcp-echo']}
"""
    path = os.path.join(d, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(cfg)
    return [binary("haproxy"), "-db", "-f", path]


def nginx_config(d):
    up, ws, _ = PROXY_PORTS["nginx"]
    loc = """
        location / {{
            proxy_pass http://127.0.0.1:{port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 3600s;
            proxy_buffering off;
        }}"""
    cfg = f"""
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log crit;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    client_body_temp_path {d};
    proxy_temp_path {d};
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{ listen 127.0.0.1:{up} backlog=4096; {loc.format(port=PORTS['httpupgrade-echo'])} }}
    server {{ listen 127.0.0.1:{ws} backlog=4096; {loc.format(port=PORTS['ws-echo'])} }}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(cfg)
    return [binary("nginx"), "-p", d, "-c", path]


def loadgen(args, timeout, env=None):
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = ["taskset", "-c", CLIENT_CPU, LOADGEN, *args, "--cores", "1", "-q", "--json", out.name]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
        try:
            with open(out.name) as f:
                return json.load(f)
        except (OSError, json.JSONDecodeError):
            raise RuntimeError(f"loadgen failed: {' '.join(args)}\n{r.stdout}\n{r.stderr}")


def scenarios(quick, rate=0, syscalls=False):
    d = 3 if quick else 10
    idle_n = 1000 if quick else 4500
    extra = {}
    if rate:
        # Efficiency: every target at the same open-loop rate, so CPU per
        # message compares like with like (DESIGN §7).
        extra["ws64-rate"] = dict(mode="ws", host="ws.bench", c=256, d=d, size=64, rate=rate)
        extra["ws1k-rate"] = dict(mode="ws", host="ws.bench", c=256, d=d, size=1024, rate=rate)
    if syscalls:
        # Under strace: slower, so separate from the timed rows.
        extra["ws64-syscalls"] = dict(mode="ws", host="ws.bench", c=256, d=d, size=64, strace=True)
        # The same count from the kernel's syscall tracepoint (perf stat), which
        # barely perturbs: at the fixed rate when one is given, so every target
        # relays the same messages.
        extra["ws64-syscalls-perf"] = dict(mode="ws", host="ws.bench", c=256, d=d, size=64, perf=True,
                                           **({"rate": rate} if rate else {}))
    return extra | {
        "bulk": dict(mode="bulk", via="ws", host="hu.bench", c=1, d=d, size=64),
        "setup": dict(mode="setup", via="ws", host="ws.bench", c=32, d=d, size=64),
        "ws64": dict(mode="ws", host="ws.bench", c=256, d=d, size=64),
        # Switchyard only: the same echo with the edge's h3 upstream pool
        # (one QUIC connection, 256 streams) to an h3 origin.
        "ws64-h3up": dict(mode="ws", host="h3up.bench", c=256, d=d, size=64, sy_only=True),
        "ws1k": dict(mode="ws", host="ws.bench", c=256, d=d, size=1024),
        "idle": dict(mode="idle", via="ws", host="hu.bench", c=idle_n, d=(4 if quick else 8), size=64),
        "bulk-h2": dict(mode="bulk", via="ws-h2", host="hu.bench", c=1, d=d, size=64, h2=True),
        "ws64-h2": dict(mode="ws-h2", host="ws.bench", c=256, spc=16, d=d, size=64, h2=True),
        "bulk-h3": dict(mode="bulk", via="ws-h3", host="hu.bench", c=1, d=d, size=64, h3=True),
        "ws64-h3": dict(mode="ws-h3", host="ws.bench", c=256, spc=16, d=d, size=64, h3=True),
        # Sessions (Switchyard vs `direct` to the same h3 origin, which echoes
        # every HTTP datagram and WebTransport stream): CONNECT-UDP with 32
        # datagrams of 1,200 B in flight per session; WebTransport 64 B echo
        # on one bidirectional stream per session.
        "udp-h3": dict(mode="connect-udp", host="masque.bench", path="/.well-known/masque/udp/127.0.0.1/9/",
                       c=8, window=32, d=d, size=1200, h3=True, h3_origin=True),
        "wt64": dict(mode="wt", host="wt.bench", path="/echo", c=256, spc=16, d=d, size=64, h3=True, h3_origin=True),
    }


def target_port(target, sc):
    if sc.get("sy_only") and target != "switchyard":
        return None
    if sc.get("h3_origin") and target == "direct":
        return H3_ORIGIN
    if sc.get("h3_origin") and target in H3_ONLY:
        return None
    if sc.get("h3"):
        return H3_PORTS.get(target)
    if target in H3_ONLY:
        return None
    if sc.get("h2"):
        return H2_PORTS.get(target)
    framed = sc["mode"] == "ws" or sc["mode"] == "setup"
    if target == "direct":
        return PORTS["ws-echo"] if framed else PORTS["httpupgrade-echo"]
    if target == "haproxy-tcp":
        return PROXY_PORTS["haproxy"][2]
    up, ws, _ = PROXY_PORTS[target]
    return ws if framed else up


def run_scenario(target, name, sc, proxy):
    port = target_port(target, sc)
    if port is None:
        return {"skipped": "no HTTP/3 frontend" if sc.get("h3") else "Switchyard only" if sc.get("sy_only") else "no RFC 8441 h2 frontend"}
    args = [sc["mode"], "--target", f"127.0.0.1:{port}", "--host", sc["host"], "-c", str(sc["c"]), "-d", str(sc["d"]), "--size", str(sc["size"])]
    if "via" in sc:
        via = "raw" if target == "haproxy-tcp" else sc["via"]
        args += ["--via", via]
    if sc["mode"] == "idle":
        args += ["--sources", "8", "--timeout", "30"]
    if "spc" in sc:
        args += ["--streams-per-conn", str(sc["spc"])]
    if "rate" in sc:
        args += ["--rate", str(sc["rate"])]
    if "path" in sc:
        args += ["--path", sc["path"]]
    if "window" in sc:
        args += ["--window", str(sc["window"])]
    if sc.get("h3"):
        args += ["--tls", "--ca", os.path.join(TMP, "ca.pem"), "--sni", "localhost"]
    env = {"switchyard-nogso": NO_GSO, "switchyard-jumbo": JUMBO_ENV}.get(target)
    tracer, perf_out = None, None
    if sc.get("strace"):
        if not proxy:
            return {"skipped": "no proxy process"}
        attach = [a for pid in pids_of(proxy) for a in ("-p", str(pid))]  # nginx: master + worker
        tracer = subprocess.Popen(["strace", "-c", "-f", "-q", *attach, "-o", "/dev/stderr"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
    if sc.get("perf"):
        if not proxy:
            return {"skipped": "no proxy process"}
        perf_out = tempfile.NamedTemporaryFile(prefix="perf-stat-", suffix=".csv", delete=False).name
        tracer = subprocess.Popen(["perf", "stat", "-x,", "-o", perf_out, "-e",
                                   "raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter",
                                   "-p", ",".join(str(p) for p in pids_of(proxy))],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    recorder = None
    if PERF_DIR and proxy and not tracer:
        out = os.path.join(PERF_DIR, f"{target}-{name}.data")
        recorder = subprocess.Popen(["perf", "record", *os.environ.get("PERF_RECORD_ARGS", "-g").split(), "-q", "-o", out,
                                     "-p", ",".join(str(p) for p in pids_of(proxy))],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    try:
        return measure(target, sc, proxy, args, env, (tracer, perf_out))
    finally:
        if recorder:
            recorder.send_signal(signal.SIGINT)
            recorder.wait(timeout=60)


def measure(target, sc, proxy, args, env, tracing):
    tracer, perf_out = tracing
    before_cpu = cpu_seconds(proxy) if proxy else 0
    before_rss = rss_kib(proxy) if proxy else 0
    if sc["mode"] == "idle" and proxy:
        # Sample RSS while every connection is held (loadgen runs in the background).
        p = subprocess.Popen(["taskset", "-c", CLIENT_CPU, LOADGEN, *args, "--cores", "1", "-q"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(sc["d"] - 1.5)
        held_rss = rss_kib(proxy)
        out, _ = p.communicate(timeout=60)
        est = next((int(l.split()[3]) for l in out.splitlines() if l.startswith("connections")), 0)
        return {"established": est, "rss_kib_before": before_rss, "rss_kib_held": held_rss,
                "rss_per_conn_bytes": (held_rss - before_rss) * 1024 / max(est, 1)}
    rep = loadgen(args, timeout=sc["d"] + 60, env=env)
    relayed_msgs = rep["ops_per_s"] * sc["d"] * 2  # each echo round trip crosses the proxy twice
    if tracer and sc.get("perf"):
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
        counts = {}
        with open(perf_out) as f:
            for line in f:
                cols = line.strip().split(",")
                if len(cols) > 2 and cols[0].isdigit():
                    counts[cols[2]] = int(cols[0])
        os.unlink(perf_out)
        total = counts.get("raw_syscalls:sys_enter", 0)
        uring = counts.get("syscalls:sys_enter_io_uring_enter", 0)
        return {"syscalls_per_msg": total / relayed_msgs if relayed_msgs else None,
                "io_uring_enter_per_msg": uring / relayed_msgs if relayed_msgs else None,
                "ops_per_s": rep["ops_per_s"], "counts": counts}
    if tracer:
        tracer.send_signal(signal.SIGINT)
        _, table = tracer.communicate(timeout=30)
        # "100.00  seconds  usecs/call  calls  [errors]  total"
        total = next((int(l.split()[3]) for l in table.splitlines() if l.strip().endswith("total")), 0)
        return {"syscalls_per_msg": total / relayed_msgs if relayed_msgs else None, "strace": table[-2000:]}
    errors = dict(rep["errors"])
    lost = errors.pop("datagram lost", 0)  # reported, not an error: datagrams are unreliable
    res = {"ops_per_s": rep["ops_per_s"], "gbytes_per_s": rep["gbytes_per_s"], "p50_us": rep["latency_us"]["p50"],
           "p99_us": rep["latency_us"]["p99"], "errors": sum(errors.values()), "established": rep["established"]}
    if sc["mode"] == "connect-udp":
        res["lost"] = lost
        res["lost_pct"] = 100 * lost / max(lost + rep["ops"], 1)
    if proxy:
        cpu = cpu_seconds(proxy) - before_cpu
        res["proxy_cpu_s"] = cpu
        relayed_gb = rep["bytes"] * 2 / 1e9  # echo: every byte crosses the proxy twice
        res["proxy_cpu_s_per_gb"] = cpu / relayed_gb if relayed_gb > 0 else None
        res["proxy_cpu_us_per_msg"] = cpu * 1e6 / relayed_msgs if relayed_msgs else None
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="reduced run, under 3 minutes")
    ap.add_argument("--targets", default="direct,switchyard,switchyard-nogso,switchyard-jumbo,haproxy,haproxy-tcp,nginx")
    ap.add_argument("--scenarios", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--edge", default="", help="dataplane binary to measure as `switchyard` "
                    "(default: this tree's release build), for A/B runs of two builds")
    ap.add_argument("--loadgen", default="", help="loadgen binary to drive the run with (default: "
                    "this tree's release build), for A/B runs of client-side changes")
    ap.add_argument("--rate", type=int, default=0, help="also run ws 64 B / 1 KiB at this fixed "
                    "open-loop rate (msgs/s, 256 conns): proxy CPU µs per relayed message, p99")
    ap.add_argument("--syscalls", action="store_true", help="also count the proxy's system calls "
                    "per relayed 64 B message: under strace -c (a separate, slower run) and with perf stat "
                    "on the syscall tracepoints (at --rate when given)")
    ap.add_argument("--perf-record", default="", metavar="DIR", help="also record the proxy with "
                    "`perf record -g` during each scenario, into DIR/TARGET-SCENARIO.data (perturbs timing: "
                    "for profiles, not for figures)")
    ap.add_argument("--no-quic", action="store_true", help="no QUIC listener in the edge's config "
                    "(A/B runs against a build without HTTP/3)")
    a = ap.parse_args()
    global EDGE, LOADGEN, NO_QUIC, PERF_DIR
    NO_QUIC = a.no_quic
    PERF_DIR = os.path.abspath(a.perf_record) if a.perf_record else ""
    if PERF_DIR:
        os.makedirs(PERF_DIR, exist_ok=True)
    if a.edge:
        EDGE = os.path.abspath(a.edge)
    if a.loadgen:
        LOADGEN = os.path.abspath(a.loadgen)
    ensure_tools()
    global TMP
    tmp = TMP = tempfile.mkdtemp(prefix="switchyard-bench-")
    origins = [start([LOADGEN, "origin", kind, "--listen", f"127.0.0.1:{port}", "--cores", "1"], CLIENT_CPU) for kind, port in PORTS.items()]
    # The h3 origin (UDP): Switchyard's h3-upstream row.
    # Its certificate is the bench CA's (loadgen's `direct` rows check it).
    _, crt, key = certificates(tmp)
    origins.append(start([LOADGEN, "origin", "h3-echo", "--listen", f"127.0.0.1:{H3_ORIGIN}", "--cores", "1",
                          "--cert", crt, "--key", key], CLIENT_CPU))
    for port in PORTS.values():
        wait_port(port)
    results = {}
    started = time.time()
    try:
        for target in a.targets.split(","):
            proxy = None
            if target == "switchyard":
                proxy = start(switchyard_config(tmp), PROXY_CPU)
            elif target == "switchyard-nogso":
                proxy = start(switchyard_config(tmp), PROXY_CPU, env={**os.environ, **NO_GSO})
            elif target == "switchyard-jumbo":
                proxy = start(switchyard_config(tmp, f"quic_max_udp_payload = {JUMBO}"), PROXY_CPU)
            elif target in ("haproxy", "haproxy-tcp"):
                proxy = start(haproxy_config(tmp), PROXY_CPU)
            elif target == "nginx":
                proxy = start(nginx_config(tmp), PROXY_CPU)
            if proxy:
                ports = PROXY_PORTS["switchyard" if target in H3_ONLY else "haproxy" if target == "haproxy-tcp" else target]
                for port in filter(None, ports):
                    wait_port(port)
            results[target] = {}
            try:
                for name, sc in scenarios(a.quick, a.rate, a.syscalls).items():
                    if a.scenarios and name not in a.scenarios.split(","):
                        continue
                    if target == "haproxy-tcp" and name != "bulk":
                        continue
                    if target in H3_ONLY and not sc.get("h3"):
                        continue
                    print(f"{target:12} {name:6} ...", file=sys.stderr, flush=True)
                    try:
                        results[target][name] = run_scenario(target, name, sc, proxy)
                    except Exception as e:  # a failed scenario is reported, not hidden
                        results[target][name] = {"error": str(e)[:300]}
                    time.sleep(0.5)
            finally:
                if proxy:
                    stop(proxy)
                    time.sleep(0.5)
    finally:
        for o in origins:
            stop(o)
    table = render(results, a.quick, time.time() - started, a.rate)
    print(table)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%MZ") + ("-quick" if a.quick else "")
    with open(os.path.join(ROOT, "bench", "results", f"{stamp}.md"), "w") as f:
        f.write(table if not a.edge else f"edge binary: {EDGE}\n\n{table}")
    with open(os.path.join(ROOT, "bench", "results", f"{stamp}.json"), "w") as f:
        json.dump({"date": stamp, "quick": a.quick, "edge": EDGE, "results": results}, f, indent=2)


def fmt(v, spec):
    return "—" if v is None else format(v, spec)


def render(r, quick, secs, rate=0):
    rows = [
        ("bulk GB/s (1 stream, received)", "bulk", "gbytes_per_s", ".3f", True),
        ("bulk proxy CPU s per GB relayed", "bulk", "proxy_cpu_s_per_gb", ".3f", False),
        ("setup conn/s (WebSocket handshake + 64 B echo)", "setup", "ops_per_s", ".0f", True),
        ("setup p99 µs", "setup", "p99_us", ".0f", False),
        ("ws 64 B msgs/s (256 conns)", "ws64", "ops_per_s", ".0f", True),
        ("ws 64 B p50 µs", "ws64", "p50_us", ".0f", False),
        ("ws 64 B p99 µs", "ws64", "p99_us", ".0f", False),
        ("ws 64 B msgs/s through an h3 upstream (256 conns → 1 QUIC connection)", "ws64-h3up", "ops_per_s", ".0f", True),
        ("ws 64 B p99 µs through an h3 upstream", "ws64-h3up", "p99_us", ".0f", False),
        ("ws 1 KiB msgs/s (256 conns)", "ws1k", "ops_per_s", ".0f", True),
        ("ws 1 KiB p50 µs", "ws1k", "p50_us", ".0f", False),
        ("ws 1 KiB p99 µs", "ws1k", "p99_us", ".0f", False),
        ("idle: proxy RSS per connection (bytes)", "idle", "rss_per_conn_bytes", ".0f", False),
        ("h2 bulk GB/s (1 extended-CONNECT stream)", "bulk-h2", "gbytes_per_s", ".3f", True),
        ("h2 bulk proxy CPU s per GB relayed", "bulk-h2", "proxy_cpu_s_per_gb", ".3f", False),
        ("h2 ws 64 B msgs/s (256 streams / 16 conns)", "ws64-h2", "ops_per_s", ".0f", True),
        ("h2 ws 64 B p99 µs", "ws64-h2", "p99_us", ".0f", False),
        ("h3 bulk GB/s (1 RFC 9220 stream)", "bulk-h3", "gbytes_per_s", ".3f", True),
        ("h3 bulk proxy CPU s per GB relayed", "bulk-h3", "proxy_cpu_s_per_gb", ".3f", False),
        ("h3 ws 64 B msgs/s (256 streams / 16 conns)", "ws64-h3", "ops_per_s", ".0f", True),
        ("h3 ws 64 B p99 µs", "ws64-h3", "p99_us", ".0f", False),
        ("CONNECT-UDP 1200 B datagrams/s (8 sessions × 32 in flight, echoed)", "udp-h3", "ops_per_s", ".0f", True),
        ("CONNECT-UDP datagrams lost (%)", "udp-h3", "lost_pct", ".3f", False),
        ("CONNECT-UDP p99 µs", "udp-h3", "p99_us", ".0f", False),
        ("CONNECT-UDP proxy CPU µs per relayed datagram", "udp-h3", "proxy_cpu_us_per_msg", ".2f", False),
        ("WebTransport 64 B stream echo msgs/s (256 sessions / 16 conns)", "wt64", "ops_per_s", ".0f", True),
        ("WebTransport 64 B p99 µs", "wt64", "p99_us", ".0f", False),
        ("WebTransport proxy CPU µs per relayed message", "wt64", "proxy_cpu_us_per_msg", ".2f", False),
        (f"ws 64 B at {rate}/s: proxy CPU µs per relayed message", "ws64-rate", "proxy_cpu_us_per_msg", ".2f", False),
        (f"ws 64 B at {rate}/s: p99 µs", "ws64-rate", "p99_us", ".0f", False),
        (f"ws 1 KiB at {rate}/s: proxy CPU µs per relayed message", "ws1k-rate", "proxy_cpu_us_per_msg", ".2f", False),
        (f"ws 1 KiB at {rate}/s: p99 µs", "ws1k-rate", "p99_us", ".0f", False),
        ("ws 64 B: proxy syscalls per relayed message (strace -c)", "ws64-syscalls", "syscalls_per_msg", ".2f", False),
        ((f"ws 64 B at {rate}/s" if rate else "ws 64 B") + ": proxy syscalls per relayed message (perf stat)",
         "ws64-syscalls-perf", "syscalls_per_msg", ".2f", False),
        ((f"ws 64 B at {rate}/s" if rate else "ws 64 B") + ": of which io_uring_enter",
         "ws64-syscalls-perf", "io_uring_enter_per_msg", ".2f", False),
    ]
    present = {sc for t in r.values() for sc in t}
    rows = [row for row in rows if row[1] in present]
    targets = [t for t in ("direct", "switchyard", "switchyard-nogso", "switchyard-jumbo", "haproxy", "haproxy-tcp", "nginx") if t in r]
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"Switchyard comparison, {date}{' (--quick)' if quick else ''}, {secs:.0f} s. "
           f"Proxy pinned to CPU {PROXY_CPU}; loadgen + origins on CPU {CLIENT_CPU}.", ""]
    hdr = "| scenario | " + " | ".join(targets) + " | sy/direct | sy/haproxy | sy/nginx |"
    out += [hdr, "|" + "---|" * (len(targets) + 4)]
    for label, sc, key, spec, _higher in rows:
        vals = {t: r.get(t, {}).get(sc, {}).get(key) for t in targets}
        for t in targets:
            if "error" in r.get(t, {}).get(sc, {}):
                vals[t] = None
        sy = vals.get("switchyard")
        ratio = lambda o: fmt(sy / o, ".2f") if sy is not None and o not in (None, 0) else "—"
        cells = [fmt(vals[t], spec) for t in targets]
        out.append(f"| {label} | " + " | ".join(cells) + f" | {ratio(vals.get('direct'))} | {ratio(vals.get('haproxy'))} | {ratio(vals.get('nginx'))} |")
    sy = r.get("switchyard", {})
    h1, h2 = sy.get("bulk", {}).get("gbytes_per_s"), sy.get("bulk-h2", {}).get("gbytes_per_s")
    if h1 and h2:
        out += ["", f"Switchyard h2 extended-CONNECT bulk vs its h1 bulk, same run: {h2 / h1:.2f}x"]
    h3 = sy.get("bulk-h3", {}).get("gbytes_per_s")
    if h1 and h3:
        out += [f"Switchyard h3 (RFC 9220) bulk vs its h1 bulk, same run: {h3 / h1:.2f}x"]
    w2, w3 = sy.get("ws64-h2", {}).get("ops_per_s"), sy.get("ws64-h3", {}).get("ops_per_s")
    if w2 and w3:
        out += [f"Switchyard ws 64 B over h3 vs over h2, same run: {w3 / w2:.2f}x"]
    nogso = r.get("switchyard-nogso", {}).get("bulk-h3", {}).get("gbytes_per_s")
    if h3 and nogso:
        out += [f"Switchyard h3 bulk with GSO vs without, same run: {h3 / nogso:.2f}x"]
    u1, u3 = sy.get("ws64", {}).get("ops_per_s"), sy.get("ws64-h3up", {}).get("ops_per_s")
    if u1 and u3:
        out += [f"Switchyard ws 64 B to an h3 upstream vs to an h1 upstream, same run: {u3 / u1:.2f}x"]
    udp_sy, udp_direct = sy.get("udp-h3", {}).get("ops_per_s"), r.get("direct", {}).get("udp-h3", {}).get("ops_per_s")
    if udp_sy and udp_direct:
        out += [f"CONNECT-UDP datagrams/s through Switchyard vs direct to the same h3 upstream, same run: {udp_sy / udp_direct:.2f}x"]
    wt = sy.get("wt64", {}).get("ops_per_s")
    if wt and w3:
        out += [f"Switchyard WebTransport 64 B stream echo vs WebSocket over h3, same run: {wt / w3:.2f}x ({wt:.0f} vs {w3:.0f} msgs/s)"]
    jumbo = r.get("switchyard-jumbo", {}).get("bulk-h3", {}).get("gbytes_per_s")
    if h1 and jumbo:
        out += [f"Switchyard h3 bulk with path MTU discovery up to {JUMBO} B (loopback) vs its h1 bulk, same run: {jumbo / h1:.2f}x"]
    # A fixed-rate row means "CPU per message at a rate every target
    # sustains" only if each target kept up; one that fell behind measured
    # its saturation (queueing delay in the p99) instead.
    behind = [(t, sc, v["ops_per_s"]) for t in targets for sc in ("ws64-rate", "ws1k-rate")
              for v in [r.get(t, {}).get(sc, {})] if rate and v.get("ops_per_s") and v["ops_per_s"] < 0.97 * rate]
    if behind:
        out += ["", f"Not sustained at {rate}/s (those rows measure saturation; rerun with a lower --rate):"]
        out += [f"- {t} {sc}: {ops:.0f}/s" for t, sc, ops in behind]
    errs = [(t, s, v.get("error") or v.get("errors")) for t in targets for s, v in r.get(t, {}).items() if v.get("error") or v.get("errors")]
    if errs:
        out += ["", "Errors:"] + [f"- {t} {s}: {e}" for t, s, e in errs]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
