#!/usr/bin/env python3
"""UDP echo target for the CONNECT-UDP tests (masque_server.py's context-0 traffic ends here).

Binds --listen (UDP), prints exactly `listening <port>` on stdout, then sends every datagram back to
its sender unchanged (empty datagrams too). --drop-every N drops every Nth datagram instead (to check
that clients report loss). Logs `udp-echo: new peer HOST:PORT` on stderr for each new sender and, on
SIGTERM / SIGINT or after --idle-exit seconds without traffic, `udp-echo: in=.. out=.. dropped=..
send_errors=.. peers=..`. Runs until stopped (or --idle-exit).
"""
import select
import signal
import sys
import time

from quicpeer import add_listen, bind_udp, log, parser


def main():
    p = parser(__doc__)
    add_listen(p)
    p.add_argument("--drop-every", type=int, default=0, metavar="N", help="drop every Nth datagram (0 = none)")
    p.add_argument("--idle-exit", type=float, default=0.0, metavar="S",
                   help="exit after S seconds without a datagram (0 = run until stopped)")
    a = p.parse_args()
    sock = bind_udp(a.listen)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))
    print(f"listening {sock.getsockname()[1]}", flush=True)
    n_in = n_out = dropped = errors = 0
    peers, last = set(), time.monotonic()
    while not stop:
        try:
            ready = select.select([sock], [], [], 0.5)[0]
        except InterruptedError:
            continue
        if not ready:
            if a.idle_exit and time.monotonic() - last > a.idle_exit:
                break
            continue
        last = time.monotonic()
        for _ in range(256):
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:   # e.g. ICMP unreachable for an earlier reply
                errors += 1
                continue
            n_in += 1
            if addr not in peers:
                peers.add(addr)
                log(f"udp-echo: new peer {addr[0]}:{addr[1]}")
            if a.drop_every and n_in % a.drop_every == 0:
                dropped += 1
                continue
            try:
                sock.sendto(data, addr)
                n_out += 1
            except OSError:
                errors += 1
    log(f"udp-echo: in={n_in} out={n_out} dropped={dropped} send_errors={errors} peers={len(peers)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
