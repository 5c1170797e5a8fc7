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
import argparse
import hashlib
import ipaddress
import json
import logging
import random
import select
import socket
import ssl
import struct
import sys
import time

from aioquic.h3.connection import H3Connection, Setting
from aioquic.h3.events import DatagramReceived, DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
import aioquic.quic.events as qe

CAP_DATAGRAM, CAP_ADDRESS_ASSIGN, CAP_ADDRESS_REQUEST, CAP_ROUTE_ADVERTISEMENT = 0x00, 0x01, 0x02, 0x03
CAP_NAMES = {0: "DATAGRAM", 1: "ADDRESS_ASSIGN", 2: "ADDRESS_REQUEST", 3: "ROUTE_ADVERTISEMENT"}
PROBE = 1 << 63            # sequence-number bit of --capsule-datagrams probes
DGRAM_OVERHEAD = 44        # short header (1 + CID <= 20 + PN 4) + AEAD tag 16 + frame type/length 3
PENDING_MAX = 32           # --rate 0: HTTP datagrams queued in aioquic before we wait
SEND_HIGH = 1 << 20        # capsule path: unacknowledged stream bytes before we wait
OVERSIZE = 65528


class Fail(Exception):
    """The run did not meet expectations (exit 1)."""


def enc(v):
    """QUIC variable-length integer."""
    if v < 0x40:
        return bytes([v])
    if v < 0x4000:
        return (v | 0x4000).to_bytes(2, "big")
    if v < 0x40000000:
        return (v | 0x80000000).to_bytes(4, "big")
    return (v | 0xC000000000000000).to_bytes(8, "big")


def varint(buf, i):
    """QUIC variable-length integer at buf[i:] -> (value, next index) or None if incomplete."""
    if i >= len(buf):
        return None
    n = 1 << (buf[i] >> 6)
    if i + n > len(buf):
        return None
    return int.from_bytes(bytes([buf[i] & 0x3F]) + bytes(buf[i + 1:i + n]), "big"), i + n


def capsule(ctype, value):
    return enc(ctype) + enc(len(value)) + value


def sha(b):
    return hashlib.sha256(b).hexdigest()


class Capsules:
    """RFC 9297 capsule stream parser: feed(bytes) -> [(type, exact capsule bytes, value)]."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data
        out, i = [], 0
        while (t := varint(self.buf, i)) and (n := varint(self.buf, t[1])):
            end = n[1] + n[0]
            if end > len(self.buf):
                break
            out.append((t[0], bytes(self.buf[i:end]), bytes(self.buf[n[1]:end])))
            i = end
        del self.buf[:i]
        return out


def decode_capsule(ctype, value):
    """Decoded fields of a CONNECT-IP capsule (RFC 9484 s4.7), or None for other types."""
    try:
        if ctype in (CAP_ADDRESS_ASSIGN, CAP_ADDRESS_REQUEST):
            out, i = [], 0
            while i < len(value):
                r = varint(value, i)
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
    return capsule(CAP_ADDRESS_REQUEST, enc(rid) + bytes([a.version]) + a.packed + bytes([prefix]))


def grease_type(rng):
    return 0x29 * rng.randrange(1, 1 << 30) + 0x17


class ClientH3(H3Connection):
    def __init__(self, quic, datagrams):
        self.want_datagrams = datagrams
        super().__init__(quic, enable_webtransport=False)

    def _get_local_settings(self):
        s = super()._get_local_settings()
        if self.want_datagrams:
            s[Setting.H3_DATAGRAM] = 1   # aioquic adds it only with enable_webtransport
        return s


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


class Conn:
    def __init__(self, a):
        self.a, self.deadline = a, time.monotonic() + a.deadline
        host, _, port = a.connect.rpartition(":")
        host = host.strip("[]")
        try:
            fam, _, _, _, self.peer = socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM)[0]
        except (OSError, ValueError) as e:
            raise Fail(f"resolve {a.connect}: {e}")
        cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name=a.sni or host,
                                max_datagram_size=a.max_datagram_size, idle_timeout=a.idle_timeout,
                                max_datagram_frame_size=None if a.no_datagram else 65536)
        if a.insecure:
            cfg.verify_mode = ssl.CERT_NONE
        if a.cafile:
            cfg.load_verify_locations(cafile=a.cafile)
        self.quic = QuicConnection(configuration=cfg)
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            self.sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
        try:
            self.sock.connect(self.peer)
        except OSError as e:
            raise Fail(f"UDP socket to {a.connect}: {e}")
        self.sock.setblocking(False)
        self.h3 = ClientH3(self.quic, not a.no_datagram)
        self.quic.connect(self.peer, now=time.monotonic())
        self.tunnels = {}
        self.dead = self.close_info = self.alpn = None
        self.handshake_done = self.closing = False
        self.events = 0
        self.flush()

    # --- socket loop -------------------------------------------------------------------------
    def step(self, wait):
        self.flush()
        timer = self.quic.get_timer()
        if timer is not None:
            wait = min(wait, max(0.0, timer - time.monotonic()))
        if select.select([self.sock], [], [], wait)[0]:
            self._read()
        timer = self.quic.get_timer()
        if timer is not None and time.monotonic() >= timer:
            self.quic.handle_timer(now=time.monotonic())
            self._events()
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

    def flush(self):
        for data, _addr in self.quic.datagrams_to_send(now=time.monotonic()):
            try:
                self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                pass   # dropped: QUIC recovers (an HTTP datagram in it is lost)
            except ConnectionRefusedError:
                self.dead = self.dead or f"connection refused (ICMP port unreachable from {self.a.connect})"
            except OSError as e:
                self.dead = self.dead or f"send failed: {e}"
        self._check_close()

    def _read(self):
        for i in range(256):
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:
                self.dead = self.dead or f"connection refused (ICMP port unreachable from {self.a.connect})"
                break
            except OSError as e:
                self.dead = self.dead or f"receive failed: {e}"
                break
            self.quic.receive_datagram(data, self.peer, now=time.monotonic())
            if i % 32 == 31:
                self._events()
        self._events()

    def _events(self):
        while (e := self.quic.next_event()) is not None:
            if isinstance(e, (qe.StreamDataReceived, qe.StreamReset, qe.StopSendingReceived,
                              qe.HandshakeCompleted, qe.DatagramFrameReceived)):
                self.events += 1
            t = self.tunnels.get(getattr(e, "stream_id", -1))
            if isinstance(e, qe.HandshakeCompleted):
                self.handshake_done, self.alpn = True, e.alpn_protocol
            elif isinstance(e, qe.StreamReset) and t:
                t.reset_stream = e.error_code
            elif isinstance(e, qe.StopSendingReceived) and t:
                t.stop_sending = e.error_code
            for he in self.h3.handle_event(e):
                self._h3_event(he)
        self._check_close()

    def _h3_event(self, he):
        t = self.tunnels.get(he.stream_id)
        if t is None:
            return
        if isinstance(he, HeadersReceived):
            h = {}
            for k, v in he.headers:
                k, v = k.decode("latin-1").lower(), v.decode("latin-1")
                h[k] = f"{h[k]}, {v}" if k in h else v
            status = int(h.pop(":status", "0"))
            if t.status is None and not 100 <= status < 200:
                t.status, t.headers = status, h
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

    def _check_close(self):
        ev = self.quic._close_event
        if ev is None or self.close_info is not None or self.closing:
            return
        by_peer = self.quic._state == QuicConnectionState.DRAINING
        self.close_info = {"error_code": ev.error_code, "frame_type": ev.frame_type,
                           "reason": ev.reason_phrase, "by_peer": by_peer}
        who = "peer closed the connection" if by_peer else "connection closed by aioquic"
        self.dead = self.dead or f"{who}: CONNECTION_CLOSE 0x{ev.error_code:x} {ev.reason_phrase!r}"

    # --- HTTP/3 ------------------------------------------------------------------------------
    def wait_settings(self):
        self.loop(lambda: self.handshake_done, "the QUIC handshake")
        if self.alpn != "h3":
            raise Fail(f"ALPN did not negotiate h3 (server selected {self.alpn!r})")
        self.loop(lambda: self.h3.received_settings is not None, "the server's SETTINGS")
        if self.h3.received_settings.get(Setting.ENABLE_CONNECT_PROTOCOL) != 1:
            raise Fail("peer did not enable extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL != 1)")

    def quic_datagrams(self):
        """HTTP datagrams as QUIC DATAGRAM frames: both sides sent H3_DATAGRAM=1 + the TP."""
        return (not self.a.no_datagram and self.h3.received_settings.get(Setting.H3_DATAGRAM) == 1
                and self.quic._remote_max_datagram_frame_size is not None)

    def open(self, headers, on_dgram, on_capsule):
        t = Tunnel(self.quic.get_next_available_stream_id())
        t.on_dgram, t.on_capsule = on_dgram, on_capsule   # before any event: capsules may come with HEADERS
        self.tunnels[t.sid] = t
        self.h3.send_headers(t.sid, [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers])
        self.flush()
        return t

    def writable(self, t):
        qs = self.quic._streams.get(t.sid)
        return qs is not None and qs.sender._reset_error_code is None and len(qs.sender._buffer) < SEND_HIGH

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
        st = self.h3._stream.get(t.sid)
        if st is not None:
            st.sending_ended = True
        try:
            self.quic.send_stream_data(t.sid, b"", end_stream=True)
        except (ValueError, RuntimeError):
            pass
        t.end_sent = True
        self.flush()

    def close(self):
        if not self.dead:
            if self.handshake_done and not self.quic._handshake_confirmed:
                end = time.monotonic() + 1.0   # else aioquic sends the close as APPLICATION_ERROR
                try:
                    self.loop(lambda: self.quic._handshake_confirmed or time.monotonic() > end, "HANDSHAKE_DONE")
                except Fail:
                    pass
            self.quic.close(error_code=0x100)   # H3_NO_ERROR
            self.closing = True
            self.flush()
        self.sock.close()


# --- shared steps -------------------------------------------------------------------------------
def tunnel_headers(a, proto, path):
    if a.token and a.token_query:
        path += ("&" if "?" in path else "?") + f"{a.token_query}={a.token}"
    h = [(":method", "CONNECT"), (":protocol", proto), (":scheme", "https"), (":authority", a.authority),
         (":path", path), ("capsule-protocol", "?1")]
    if a.token and not a.token_query:
        h.append(("authorization", f"Bearer {a.token}"))
    for x in a.header:
        k, _, v = x.partition(":")
        h.append((k.strip().lower(), v.strip()))
    return h


def open_tunnel(conn, a, proto, path, r, on_dgram, on_capsule):
    conn.wait_settings()
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
    """Our FIN, then the peer's FIN (or reset), bounded by --timeout."""
    if not t.gone and not t.end_sent:
        conn.fin(t)
    if not conn.loop(lambda: t.end_stream or t.gone, "the proxy's FIN", fail=False):
        r.setdefault("notes", []).append("no FIN from the proxy within --timeout")


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
        return enc(c) + seq.to_bytes(8, "big") + filler[c]

    def on_dgram(data, via, raw):
        stats["via"][via] += 1
        v = varint(data, 0)
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
    limit = a.max_datagram_size - DGRAM_OVERHEAD - len(enc(t.sid // 4))
    if conn.quic_datagrams() and a.count and len(enc(max(contexts))) + a.size > limit:
        raise Fail(f"--size {a.size} does not fit a QUIC datagram of --max-datagram-size "
                   f"{a.max_datagram_size} (at most {limit - len(enc(max(contexts)))})")
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
        raw = capsule(CAP_DATAGRAM, enc(0) + bytes(OVERSIZE))
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
        finish_tunnel(conn, t, r)
        if t.gone:
            errors.append(f"stream reset by the proxy ({t.reset_stream}/{t.stop_sending})")
        elif not t.end_stream:
            errors.append("no FIN from the proxy")
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
        v = varint(data, 0)
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
            fields = decode_capsule(varint(raw, 0)[0], raw[varint(raw, varint(raw, 0)[1])[1]:])
            caps_out.append({"type": hex(varint(raw, 0)[0]), "label": label, "len": len(raw), "sha": sha(raw),
                             "fields": fields})
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
        return enc(0) + pkt

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
    finish_tunnel(conn, t, r)
    if t.gone:
        errors.append(f"stream reset by the proxy ({t.reset_stream}/{t.stop_sending})")
    elif not t.end_stream:
        errors.append("no FIN from the proxy")
    return "; ".join(errors) or None


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connect", required=True, metavar="HOST:PORT", help="proxy UDP address ([::1]:443 ok)")
    p.add_argument("--cafile", help="PEM CA bundle to verify the server certificate")
    p.add_argument("--sni", help="TLS server name (default: the --connect host; IPs send no SNI)")
    p.add_argument("--insecure", action="store_true", help="skip TLS certificate verification")
    p.add_argument("--timeout", type=float, default=20.0, help="max seconds without progress")
    p.add_argument("--deadline", type=float, default=120.0, help="max seconds for the whole run")
    p.add_argument("--settle", type=float, default=2.0,
                   help="stop waiting for echoes after this many seconds without any event")
    p.add_argument("--idle-timeout", type=float, default=60.0, help="QUIC max_idle_timeout (s)")
    p.add_argument("--max-datagram-size", type=int, default=1452,
                   help="largest UDP payload we send (aioquic does no PMTU discovery; >= 1200)")
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
