#!/usr/bin/env python3
"""HTTP/3 MASQUE client (aioquic, sans-IO, select() loop): CONNECT-UDP (RFC 9298) and CONNECT-IP
(RFC 9484) over one extended CONNECT stream, for the edge's relays and for masque_server.py.

QUIC v1 + TLS 1.3 with ALPN h3 to --connect HOST:PORT; SETTINGS H3_DATAGRAM=1 and the QUIC
max_datagram_frame_size transport parameter (not with --no-datagram). The client waits for the
server's SETTINGS and refuses (exit 1) unless they carry ENABLE_CONNECT_PROTOCOL=1. HTTP datagrams
(context id varint + data) go as QUIC DATAGRAM frames when both sides negotiated them, else as DATAGRAM
capsules (0x00) on the stream ("datagram_path": "quic" | "capsule"); both kinds are accepted back
("received_via"). The request stream is parsed as a capsule stream (RFC 9297).

  udp: :protocol connect-udp, :path /.well-known/masque/udp/H/P/ (+ ?NAME=T with --token-query, else
      `authorization: Bearer T` with --token), capsule-protocol: ?1. After a 2xx, for each context c in
      --contexts, N datagrams (interleaved; --rate per second in total, or with --rate 0 as fast as
      aioquic's congestion window drains them with at most --window not yet echoed; after 0.25 s
      without an echo the ones in flight are presumed lost and the window reopens): payload = varint(c) + 8-byte big-endian sequence number + filler
      up to --size bytes after the context id (context 0: --size = the UDP payload; the target is
      expected to echo it; other contexts are echoed by the proxy). Filler = random.Random(c)
      .randbytes(size - 8), so every echo is checked byte for byte (`corrupt` otherwise).
      --capsule-datagrams K: K DATAGRAM capsules, context 0, sequence numbers with the top bit set;
      --grease-capsule: one capsule of reserved type 0x29*N+0x17 with a random 5-byte value. Both are
      expected back as the very same bytes (`capsules_back[].identical`). Waiting for echoes ends when
      everything came back, after --settle s without any event, or --timeout s after the last send.
      --oversize-capsule (last): a DATAGRAM capsule with context 0 and 65528 payload bytes, then waits
      for the proxy's answer (`oversize`: reset / stop_sending / fin / none; RFC 9298 s5: abort).
      Then FIN, and the proxy's FIN is awaited.
  ip: :protocol connect-ip, --path P. Collects the server's capsules (ADDRESS_ASSIGN, ROUTE_ADVERTISEMENT,
      ...) with the sha256 of their exact bytes and decoded fields; --request-address sends
      ADDRESS_REQUEST (request id 7, 0.0.0.0/32) and expects an ADDRESS_ASSIGN with request id 7;
      --packets N sends N IPv4/UDP packets (20-byte header, valid checksums, source = the assigned
      address) as context-0 datagrams and expects each back with source and destination swapped.

stdout: one JSON object (keys in the README). Exit 0 = status 2xx and every expectation held (every
datagram accounted for as received or lost, none corrupt; loss itself is reported, not judged), 1
otherwise (reason in "error" and on stderr). Every wait is bounded: --timeout s without progress,
--deadline for the whole run.
"""
import ipaddress
import json
import logging
import random
import struct
import sys
import time

from aioquic.h3.events import DatagramReceived, DataReceived, HeadersReceived
import aioquic.quic.events as qe

from quicpeer import (CAP_ADDRESS_ASSIGN, CAP_ADDRESS_REQUEST, CAP_DATAGRAM, CAP_ROUTE_ADVERTISEMENT,
                      DGRAM_OVERHEAD, Capsules, DatagramH3, Fail, QuicClient, add_connect, add_quic, add_timeouts,
                      auth_headers, capsule, encode_headers, parser, poll_quic, read_varint, send_fin, sha,
                      take_response, varint, with_token_query)

CAP_NAMES = {0: "DATAGRAM", 1: "ADDRESS_ASSIGN", 2: "ADDRESS_REQUEST", 3: "ROUTE_ADVERTISEMENT"}
PROBE = 1 << 63            # sequence-number bit of --capsule-datagrams probes
PENDING_MAX = 32           # --rate 0: HTTP datagrams queued in aioquic before we wait
OVERSIZE = 65528


def decode_capsule(ctype, value):
    """Decoded fields of a CONNECT-IP capsule (RFC 9484 s4.7), or None for other types."""
    try:
        if ctype in (CAP_ADDRESS_ASSIGN, CAP_ADDRESS_REQUEST):
            out, i = [], 0
            while i < len(value):
                r = read_varint(value, i)
                ver = value[r[1]]
                n = {4: 4, 6: 16}[ver]
                ip = str(ipaddress.ip_address(value[r[1] + 1:r[1] + 1 + n]))
                out.append({"request_id": r[0], "ip_version": ver, "ip": ip, "prefix": value[r[1] + 1 + n]})
                i = r[1] + 2 + n
            return {"addresses": out}
        if ctype == CAP_ROUTE_ADVERTISEMENT:
            out, i = [], 0
            while i < len(value):
                ver = value[i]
                n = {4: 4, 6: 16}[ver]
                out.append({"ip_version": ver, "start": str(ipaddress.ip_address(value[i + 1:i + 1 + n])),
                            "end": str(ipaddress.ip_address(value[i + 1 + n:i + 1 + 2 * n])),
                            "ipproto": value[i + 1 + 2 * n]})
                i += 2 + 2 * n
            return {"ranges": out}
    except (KeyError, IndexError, TypeError, ValueError) as e:
        return {"malformed": repr(e)}
    return None


def addr_request(rid, ip, prefix):
    a = ipaddress.ip_address(ip)
    return capsule(CAP_ADDRESS_REQUEST, varint(rid) + bytes([a.version]) + a.packed + bytes([prefix]))


def grease_type(rng):
    return 0x29 * rng.randrange(1, 1 << 30) + 0x17


class Tunnel:
    def __init__(self, sid):
        self.sid, self.status, self.headers = sid, None, {}
        self.caps = Capsules()
        self.reset_stream = self.stop_sending = None
        self.end_stream = self.end_sent = False
        self.on_dgram = lambda data, via, raw: None      # (payload, "datagram"|"capsule", capsule bytes)
        self.on_capsule = lambda ctype, raw, value: None

    @property
    def gone(self):
        return self.reset_stream is not None or self.stop_sending is not None


class Conn(QuicClient):
    def __init__(self, a):
        super().__init__(a, max_datagram_frame_size=None if a.no_datagram else 65536)
        self.tunnels = {}

    def new_h3(self):
        return DatagramH3(self.quic, not self.a.no_datagram)

    # --- socket loop -------------------------------------------------------------------------
    def step(self, wait):
        self.flush()
        poll_quic(self.quic, self.sock, wait, self._read, self._events)
        self.flush()

    def loop(self, cond, what, idle=None, fail=True):
        """Run until cond(); idle = seconds without an event (--timeout). Returns cond()."""
        idle = self.a.timeout if idle is None else idle
        mark, last = self.events, time.monotonic()
        while not cond():
            if self.dead:
                raise Fail(f"{self.dead} (while waiting for {what})")
            now = time.monotonic()
            if now > self.deadline:
                raise Fail(f"deadline of {self.a.deadline}s passed while waiting for {what}")
            if self.events != mark:
                mark, last = self.events, now
            elif now - last > idle:
                if fail:
                    raise Fail(f"timeout: {idle}s without progress while waiting for {what}")
                return False
            self.step(0.05)
        return True

    def quic_event(self, e):
        t = self.tunnels.get(getattr(e, "stream_id", -1))
        if isinstance(e, qe.StreamReset) and t:
            t.reset_stream = e.error_code
        elif isinstance(e, qe.StopSendingReceived) and t:
            t.stop_sending = e.error_code

    def h3_event(self, he):
        t = self.tunnels.get(he.stream_id)
        if t is None:
            return
        if isinstance(he, HeadersReceived):
            take_response(t, he.headers)
        elif isinstance(he, DataReceived) and he.data:
            for ctype, raw, value in t.caps.feed(he.data):
                if ctype == CAP_DATAGRAM:
                    t.on_dgram(value, "capsule", raw)
                else:
                    t.on_capsule(ctype, raw, value)
        elif isinstance(he, DatagramReceived):
            t.on_dgram(he.data, "datagram", None)
        if getattr(he, "stream_ended", False):
            t.end_stream = True

    # --- HTTP/3 ------------------------------------------------------------------------------
    def quic_datagrams(self):
        """HTTP datagrams as QUIC DATAGRAM frames: both sides sent H3_DATAGRAM=1 + the TP."""
        return not self.a.no_datagram and self.peer_datagrams()

    def open(self, headers, on_dgram, on_capsule):
        t = Tunnel(self.quic.get_next_available_stream_id())
        t.on_dgram, t.on_capsule = on_dgram, on_capsule   # before any event: capsules may come with HEADERS
        self.tunnels[t.sid] = t
        self.h3.send_headers(t.sid, encode_headers(headers))
        self.flush()
        return t

    def writable(self, t):
        return bool(self.stream_room(t.sid))   # capsule path: SEND_HIGH unacknowledged bytes at most

    def send_capsule(self, t, raw):
        if t.gone or t.end_sent:
            return False
        try:
            self.h3.send_data(t.sid, raw, False)
        except Exception:   # stream reset / STOP_SENDING
            return False
        return True

    def send_dgram(self, t, payload):
        if self.quic_datagrams():
            self.h3.send_datagram(t.sid, payload)
            return True
        return self.send_capsule(t, capsule(CAP_DATAGRAM, payload))

    def room(self, t):
        """How many more HTTP datagrams to queue now (--rate 0)."""
        if self.quic_datagrams():
            return PENDING_MAX - len(self.quic._datagrams_pending)
        return 64 if self.writable(t) else 0

    def fin(self, t):
        """FIN without an empty DATA frame."""
        send_fin(self.h3, self.quic, t.sid)
        t.end_sent = True
        self.flush()


# --- shared steps -------------------------------------------------------------------------------
def tunnel_headers(a, proto, path):
    return [(":method", "CONNECT"), (":protocol", proto), (":scheme", "https"), (":authority", a.authority),
            (":path", with_token_query(a, path)), ("capsule-protocol", "?1")] + auth_headers(a)


def open_tunnel(conn, a, proto, path, r, on_dgram, on_capsule):
    conn.need_connect_protocol()
    r["datagram_path"] = "quic" if conn.quic_datagrams() else "capsule"
    t = conn.open(tunnel_headers(a, proto, path), on_dgram, on_capsule)
    r["stream"] = t.sid
    conn.loop(lambda: t.status is not None or t.gone or t.end_stream, "the response")
    r["status"], r["headers"] = t.status, t.headers
    return t


def send_paced(conn, t, total, make, echoed, what):
    """Send make(i) for i in range(total) as HTTP datagrams: --rate per second, or (rate 0) as fast as
    aioquic's queue drains with at most --window datagrams not yet echoed (echoed() = how many came
    back; after 0.25 s without an echo the ones in flight are presumed lost and the window reopens).
    Keeps receiving meanwhile. Returns how many were handed to aioquic."""
    rate, window = conn.a.rate, conn.a.window
    t0, i = time.monotonic(), 0
    stalled_since = t0
    presumed_lost, last_echoed, last_echo_t = 0, echoed(), t0
    while i < total and not t.gone and not t.end_stream:
        if conn.dead:
            raise Fail(f"{conn.dead} (while sending {what})")
        now = time.monotonic()
        if now > conn.deadline:
            raise Fail(f"deadline of {conn.a.deadline}s passed while sending {what}")
        if rate:
            allowed = min(total, int((now - t0) * rate) + 1) - i
        else:
            allowed = conn.room(t)
            e = echoed()
            if e != last_echoed:
                last_echoed, last_echo_t = e, now
            elif window and i - e - presumed_lost >= window and now - last_echo_t > 0.25:
                presumed_lost, last_echo_t = i - e, now
            if window:
                allowed = min(allowed, window - (i - e - presumed_lost))
            if allowed > 0:
                stalled_since = now
            elif now - stalled_since > conn.a.timeout:
                raise Fail(f"timeout: {conn.a.timeout}s without room to send {what}")
        for _ in range(max(0, min(allowed, 64, total - i))):
            if not conn.send_dgram(t, make(i)):
                break
            i += 1
        conn.flush()
        wait = 0.0 if allowed > 64 else (min(0.02, max(0.0, i / rate - (now - t0))) if rate else 0.002)
        conn.step(wait)
    return i


def wait_echoes(conn, t, done, a, what):
    """After the last send: until done(), --settle s without any event, or --timeout s in all."""
    end = time.monotonic() + a.timeout
    conn.loop(lambda: done() or t.gone or t.end_stream or time.monotonic() > end, what, idle=a.settle, fail=False)


def finish_tunnel(conn, t, r):
    """Our FIN, then the peer's FIN (or reset), bounded by --timeout. Returns [what went wrong]."""
    if not t.gone and not t.end_sent:
        conn.fin(t)
    if not conn.loop(lambda: t.end_stream or t.gone, "the proxy's FIN", fail=False):
        r.setdefault("notes", []).append("no FIN from the proxy within --timeout")
    if t.gone:
        return [f"stream reset by the proxy ({t.reset_stream}/{t.stop_sending})"]
    return [] if t.end_stream else ["no FIN from the proxy"]


def grease_step(conn, t, rng, r):
    """One capsule of a reserved type (RFC 9297 s5.4: 0x29 * N + 0x17), random 5-byte value."""
    gt = grease_type(rng)
    raw = capsule(gt, rng.randbytes(5))
    conn.send_capsule(t, raw)
    conn.flush()
    r["grease"] = {"type": hex(gt), "len": len(raw), "sha": sha(raw), "back": False}
    return raw


# --- udp ------------------------------------------------------------------------------------------
def mode_udp(conn, a, r):
    contexts = [int(x) for x in a.contexts.split(",") if x.strip()]
    if a.size < 8:
        raise Fail("--size must be >= 8 (sequence number)")
    filler = {c: random.Random(c).randbytes(a.size - 8) for c in contexts}
    filler.setdefault(0, random.Random(0).randbytes(a.size - 8))
    sent = {c: 0 for c in contexts}
    seen = {c: bytearray(a.count) for c in contexts}
    recv = {c: 0 for c in contexts}
    stats = {"duplicates": 0, "corrupt": 0, "via": {"datagram": 0, "capsule": 0}}
    probes_sent, probes = {}, {"sent": 0, "back": 0, "identical": 0, "via_datagram": 0}
    sent_raw = {}   # exact capsule bytes we sent -> label (grease / probe)
    back_list = []
    rng = random.Random(a.seed)
    r.update(sent=sent, received=recv, lost={}, duplicates=0, corrupt=0, capsules_back=back_list)

    def payload(c, seq):
        return varint(c) + seq.to_bytes(8, "big") + filler[c]

    def on_dgram(data, via, raw):
        stats["via"][via] += 1
        v = read_varint(data, 0)
        if v is None or len(data) < v[1] + 8:
            stats["corrupt"] += 1
            return
        c, seq = v[0], int.from_bytes(data[v[1]:v[1] + 8], "big")
        if seq & PROBE and c == 0:
            k = seq & ~PROBE
            if via == "datagram":
                probes["via_datagram"] += 1
            want = probes_sent.get(k)
            ident = raw is not None and raw == want
            probes["back"] += 1
            probes["identical"] += ident
            if len(back_list) < 100:
                back_list.append({"type": "0x0", "label": f"datagram-probe-{k}", "len": len(raw or data),
                                  "sha": sha(raw or data), "identical": ident})
            return
        if c not in seen or seq >= a.count or data != payload(c, seq):
            stats["corrupt"] += 1
            return
        if seen[c][seq]:
            stats["duplicates"] += 1
            return
        seen[c][seq] = 1
        recv[c] += 1

    def on_capsule(ctype, raw, value):
        label = sent_raw.get(raw)
        if label == "grease":
            r["grease"]["back"] = True
        if len(back_list) < 100:
            back_list.append({"type": hex(ctype), "label": label, "len": len(raw), "sha": sha(raw),
                              "identical": label is not None})

    path = f"/.well-known/masque/udp/{a.target_host}/{a.target_port}/"
    t = open_tunnel(conn, a, "connect-udp", path, r, on_dgram, on_capsule)
    if not (t.status and 200 <= t.status < 300):
        return f"status {t.status}" if not t.gone else f"stream reset {t.reset_stream}/{t.stop_sending}"
    limit = a.max_datagram_size - DGRAM_OVERHEAD - len(varint(t.sid // 4))
    if conn.quic_datagrams() and a.count and len(varint(max(contexts))) + a.size > limit:
        raise Fail(f"--size {a.size} does not fit a QUIC datagram of --max-datagram-size "
                   f"{a.max_datagram_size} (at most {limit - len(varint(max(contexts)))})")
    if a.grease_capsule:
        sent_raw[grease_step(conn, t, rng, r)] = "grease"
    for k in range(a.capsule_datagrams):
        raw = capsule(CAP_DATAGRAM, payload(0, PROBE | k))
        probes_sent[k] = raw
        sent_raw[raw] = f"datagram-probe-{k}"
        probes["sent"] += conn.send_capsule(t, raw)
    conn.flush()
    plan = [(c, seq) for seq in range(a.count) for c in contexts]

    def make(i):
        c, seq = plan[i]
        sent[c] += 1
        return payload(c, seq)

    t_send = time.monotonic()
    send_paced(conn, t, len(plan), make, lambda: sum(recv.values()), "datagrams")
    r["send_s"] = round(time.monotonic() - t_send, 3)

    def all_back():
        return (sum(recv.values()) == sum(sent.values()) and probes["back"] >= probes["sent"]
                and (not a.grease_capsule or r["grease"]["back"]))
    wait_echoes(conn, t, all_back, a, "echoes")
    r["duplicates"], r["corrupt"], r["received_via"] = stats["duplicates"], stats["corrupt"], stats["via"]
    if a.capsule_datagrams:
        r["capsule_datagrams"] = probes
    errors = []
    if stats["corrupt"]:
        errors.append(f"{stats['corrupt']} corrupt datagram(s)")
    if a.grease_capsule and not r["grease"]["back"]:
        errors.append("GREASE capsule did not come back unchanged")
    if probes["back"] != probes["identical"]:
        errors.append("a DATAGRAM capsule came back changed")
    if a.oversize_capsule and not t.gone and not t.end_stream:
        raw = capsule(CAP_DATAGRAM, varint(0) + bytes(OVERSIZE))
        conn.send_capsule(t, raw)
        conn.flush()
        conn.loop(lambda: t.gone or t.end_stream, "the answer to the oversize capsule", fail=False)
        if t.gone and t.reset_stream is None:   # STOP_SENDING alone: give RESET_STREAM 1 s
            end = time.monotonic() + 1.0
            conn.loop(lambda: t.reset_stream is not None or time.monotonic() > end, "RESET_STREAM", fail=False)
        outcome = ("reset" if t.reset_stream is not None else "stop_sending" if t.stop_sending is not None
                   else "fin" if t.end_stream else "none")
        r["oversize"] = {"payload": OVERSIZE, "reset": t.reset_stream, "stop_sending": t.stop_sending,
                         "fin": t.end_stream, "outcome": outcome}
        if outcome not in ("reset", "stop_sending"):
            errors.append(f"oversize capsule: the proxy did not abort the stream ({outcome})")
    else:
        errors += finish_tunnel(conn, t, r)
    return "; ".join(errors) or None


# --- ip -------------------------------------------------------------------------------------------
def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_udp(src, dst, seq, size):
    """Minimal valid IPv4 (no options, DF) + UDP packet, valid checksums, seq in the payload."""
    body = b"masque-ip" + seq.to_bytes(8, "big")
    body += random.Random(seq).randbytes(max(0, size - 28 - len(body)))
    ulen = 8 + len(body)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, seq & 0xFFFF, 0x4000, 64, 17, 0, src, dst)
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    udp = struct.pack("!HHHH", 40000 + seq % 1000, 9, ulen, 0) + body
    uc = checksum(src + dst + b"\0\x11" + struct.pack("!H", ulen) + udp) or 0xFFFF
    return hdr + udp[:6] + struct.pack("!H", uc) + udp[8:]


def checksums_ok(pkt):
    if len(pkt) < 28 or checksum(pkt[:20]) != 0:
        return False
    ulen = struct.unpack("!H", pkt[24:26])[0]
    return checksum(pkt[12:20] + b"\0\x11" + struct.pack("!H", ulen) + pkt[20:20 + ulen]) == 0


def mode_ip(conn, a, r):
    caps_in, caps_out = [], []
    got = {"assign": [], "routes": []}
    pk = {"sent": 0, "received": 0, "identical": 0, "checksums_ok": 0, "duplicates": 0, "corrupt": 0,
          "via": {"datagram": 0, "capsule": 0}}
    expected, seen = {}, set()
    rng = random.Random(a.seed)
    sent_raw = {}
    r.update(capsules=caps_in, capsules_sent=caps_out)

    def on_capsule(ctype, raw, value):
        fields = decode_capsule(ctype, value)
        label = sent_raw.get(raw)
        if label == "grease":
            r["grease"]["back"] = True
        caps_in.append({"type": hex(ctype), "name": CAP_NAMES.get(ctype, "GREASE" if label else "unknown"),
                        "len": len(raw), "sha": sha(raw), "fields": fields, **({"echo_of": label} if label else {})})
        if ctype == CAP_ADDRESS_ASSIGN and fields and "addresses" in fields:
            got["assign"].extend(fields["addresses"])
        elif ctype == CAP_ROUTE_ADVERTISEMENT and fields and "ranges" in fields:
            got["routes"].extend(fields["ranges"])

    def on_dgram(data, via, raw):
        pk["via"][via] += 1
        v = read_varint(data, 0)
        if v is None or v[0] != 0 or len(data) < v[1] + 45:
            pk["corrupt"] += 1
            return
        pkt = data[v[1]:]
        seq = int.from_bytes(pkt[37:45], "big")
        if pkt[28:37] != b"masque-ip" or seq not in expected:
            pk["corrupt"] += 1
            return
        if seq in seen:
            pk["duplicates"] += 1
            return
        seen.add(seq)
        pk["received"] += 1
        pk["identical"] += pkt == expected[seq]
        pk["checksums_ok"] += checksums_ok(pkt)

    def send_cap(raw, label=None):
        if conn.send_capsule(t, raw):
            fields = decode_capsule(read_varint(raw, 0)[0], raw[read_varint(raw, read_varint(raw, 0)[1])[1]:])
            caps_out.append({"type": hex(read_varint(raw, 0)[0]), "label": label, "len": len(raw),
                             "sha": sha(raw), "fields": fields})
            conn.flush()

    t = open_tunnel(conn, a, "connect-ip", a.path, r, on_dgram, on_capsule)
    if not (t.status and 200 <= t.status < 300):
        return f"status {t.status}" if not t.gone else f"stream reset {t.reset_stream}/{t.stop_sending}"
    errors = []
    if not conn.loop(lambda: (got["assign"] and got["routes"]) or t.gone or t.end_stream,
                     "ADDRESS_ASSIGN and ROUTE_ADVERTISEMENT", fail=False):
        errors.append("no ADDRESS_ASSIGN + ROUTE_ADVERTISEMENT within --timeout")
    if a.grease_capsule:
        raw = grease_step(conn, t, rng, r)
        sent_raw[raw] = "grease"
        caps_out.append({"type": r["grease"]["type"], "label": "grease", "len": len(raw), "sha": sha(raw),
                         "fields": None})
    if a.request_address:
        send_cap(addr_request(7, "0.0.0.0", 32), "address-request")

        def assigned7():
            return any(x["request_id"] == 7 for x in got["assign"])
        ok7 = conn.loop(lambda: assigned7() or t.gone or t.end_stream, "ADDRESS_ASSIGN for request 7",
                        fail=False) and assigned7()
        r["request_address"] = {"request_id": 7, "assigned": [x for x in got["assign"] if x["request_id"] == 7]}
        if not ok7:
            errors.append("no ADDRESS_ASSIGN with request id 7")
    v4 = [x for x in got["assign"] if x["ip_version"] == 4 and x["request_id"] == 0] or \
         [x for x in got["assign"] if x["ip_version"] == 4]
    src = ipaddress.ip_address(v4[0]["ip"] if v4 else "192.0.2.1").packed
    dst = ipaddress.ip_address(a.dst).packed
    r["assigned"], r["routes"] = got["assign"], got["routes"]

    def make(i):
        pkt = ipv4_udp(src, dst, i, a.size)
        expected[i] = pkt[:12] + pkt[16:20] + pkt[12:16] + pkt[20:]
        pk["sent"] += 1
        return varint(0) + pkt

    if a.packets:
        send_paced(conn, t, a.packets, make, lambda: pk["received"], "packets")
        wait_echoes(conn, t, lambda: pk["received"] == pk["sent"] and
                    (not a.grease_capsule or r["grease"]["back"]), a, "packets back")
    r.update(packets_sent=pk["sent"], packets_received=pk["received"], packets_identical=pk["identical"],
             packets_lost=pk["sent"] - pk["received"], packets_checksums_ok=pk["checksums_ok"],
             duplicates=pk["duplicates"], corrupt=pk["corrupt"], received_via=pk["via"])
    if pk["corrupt"] or pk["identical"] != pk["received"]:
        errors.append(f"{pk['corrupt']} corrupt packet(s), {pk['received'] - pk['identical']} not swapped exactly")
    if a.grease_capsule and not r["grease"]["back"]:
        errors.append("GREASE capsule did not come back unchanged")
    errors += finish_tunnel(conn, t, r)
    return "; ".join(errors) or None


def build_parser():
    p = parser(__doc__)
    add_connect(p, "proxy")
    add_timeouts(p, 120.0)
    p.add_argument("--settle", type=float, default=2.0,
                   help="stop waiting for echoes after this many seconds without any event")
    add_quic(p)
    p.add_argument("--no-datagram", action="store_true",
                   help="no SETTINGS_H3_DATAGRAM / max_datagram_frame_size: HTTP datagrams go as capsules")
    sub = p.add_subparsers(dest="mode", required=True)

    def common(sp):
        sp.add_argument("--authority", default="localhost", help=":authority")
        sp.add_argument("--token", help="send authorization: Bearer TOKEN (or the --token-query parameter)")
        sp.add_argument("--token-query", metavar="NAME", help="put the token in the :path query as NAME=T")
        sp.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="extra request header (repeatable)")
        sp.add_argument("--rate", type=float, default=0.0,
                        help="datagrams per second in total (0 = as fast as --window and aioquic allow)")
        sp.add_argument("--window", type=int, default=256,
                        help="--rate 0: at most this many datagrams not yet echoed (0 = no limit)")
        sp.add_argument("--grease-capsule", action="store_true",
                        help="send a reserved-type capsule (0x29*N+0x17) and expect it back unchanged")
        sp.add_argument("--seed", type=int, default=1, help="seed for GREASE capsule type and value")
        return sp

    sp = common(sub.add_parser("udp", help="CONNECT-UDP: datagrams per context id, echo accounting"))
    sp.add_argument("--target-host", required=True, help="{target_host} of the URI template")
    sp.add_argument("--target-port", required=True, help="{target_port} of the URI template")
    sp.add_argument("--count", type=int, default=10, help="datagrams per context id")
    sp.add_argument("--size", type=int, default=1200, help="bytes after the context id (>= 8)")
    sp.add_argument("--contexts", default="0", help="comma-separated context ids, e.g. 0,2")
    sp.add_argument("--capsule-datagrams", type=int, default=0, metavar="K",
                    help="also send K DATAGRAM capsules (context 0) on the stream")
    sp.add_argument("--oversize-capsule", action="store_true",
                    help="finally send a DATAGRAM capsule with a 65528-byte context-0 payload")
    sp = common(sub.add_parser("ip", help="CONNECT-IP: capsules, address request, IPv4 packets"))
    sp.add_argument("--path", default="/.well-known/masque/ip/*/*/", help=":path")
    sp.add_argument("--request-address", action="store_true",
                    help="send ADDRESS_REQUEST (id 7, 0.0.0.0/32), expect ADDRESS_ASSIGN id 7")
    sp.add_argument("--packets", type=int, default=0, help="IPv4/UDP packets to send as context-0 datagrams")
    sp.add_argument("--size", type=int, default=100, help="IP packet size (>= 45)")
    sp.add_argument("--dst", default="198.51.100.7", help="destination address of the packets")
    return p


def main():
    a = build_parser().parse_args()
    logging.getLogger("quic").setLevel(logging.CRITICAL)
    t0 = time.monotonic()
    r = {"mode": a.mode, "status": None, "headers": {}}
    conn, reason = None, None
    try:
        conn = Conn(a)
        reason = (mode_udp if a.mode == "udp" else mode_ip)(conn, a, r)
    except Fail as e:
        reason = str(e)
    except Exception as e:   # aioquic / socket errors: still report what happened
        reason = f"local error: {e!r}"
    if conn is not None:
        t = next(iter(conn.tunnels.values()), None)
        if t is not None:
            r["reset"], r["stop_sending"], r["end_stream"] = t.reset_stream, t.stop_sending, t.end_stream
        conn.close()
        r["connection_close"] = conn.close_info
    if a.mode == "udp" and "sent" in r:
        r["sent"] = {str(k): v for k, v in r["sent"].items()}
        r["received"] = {str(k): v for k, v in r["received"].items()}
        r["lost"] = {k: v - r["received"].get(k, 0) for k, v in r["sent"].items()}
    r["elapsed_s"] = round(time.monotonic() - t0, 3)
    r["error"] = reason
    r["ok"] = reason is None and r["status"] is not None and 200 <= r["status"] < 300
    if reason:
        print(f"masque_client: {reason}", file=sys.stderr)
    print(json.dumps(r))
    sys.stdout.flush()
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
