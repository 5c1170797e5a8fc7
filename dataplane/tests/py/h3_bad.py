#!/usr/bin/env python3
"""Adversarial HTTP/3 client for Switchyard: a catalogue of bad inputs (RFC 9114, RFC 9204, RFC 9220,
RFC 9297), each on its own fresh QUIC connection, and what the server answered to each.

aioquic's sans-IO QuicConnection is driven directly (no H3Connection): every HTTP/3 byte is written here
(varints with quicpeer.py's encoder, frames, stream types, a minimal QPACK encoder with static-table
references and literals without Huffman), so malformed input goes out exactly as built. Responses are
decoded with pylsqpack (dynamic table capacity 0).

For each case the expected answer is what the RFCs require:
  connection  CONNECTION_CLOSE (application close) with the code
  stream      RESET_STREAM (else STOP_SENDING) with the code on the request stream
  status      an HTTP response with that status (e.g. 4xx where RFC 9114 §4.1.2 lets a server answer
              a malformed request before resetting or closing the stream)
  ok          the input is ignored: a good GET (--authority, --path) on the same connection gets a 2xx
  stream+ok   RESET_STREAM (else STOP_SENDING) with the code on the watched stream, and then a good GET on
              the same connection gets a 2xx (the stream is refused, the connection goes on)
Some cases accept more than one answer where the RFC leaves a choice; the case's note says so.
A stream error is not accepted as a connection error with the same code (RFC 9114 §8 would allow the
escalation; the catalogue holds a server to the narrower answer the RFC describes for the case).

What is observed: a CONNECTION_CLOSE from the peer wins over everything (the kind is "connection"; a
transport close is reported with "transport": true and never matches); else the request stream's
RESET_STREAM; else its response status (kind "ok" when it was the good request and 2xx); else its
STOP_SENDING; else "fin" (ended without a response) or "none" (nothing within --timeout). Cases whose
bad input is on a unidirectional stream wait --settle seconds for a close, then send the good GET as a
probe: the answer to the probe is the case's answer (a server that ignores the input shows "ok").
Cases on HTTP datagrams (RFC 9297) and WebTransport streams (draft-ietf-webtrans-http3-02) run on a
connection whose client sends the max_datagram_frame_size transport parameter and SETTINGS_H3_DATAGRAM = 1
(+ SETTINGS_ENABLE_WEBTRANSPORT = 1); they need the server to advertise the same (else the case is an
"error") and send their input once the server has acknowledged the client's SETTINGS (draft-02 §3.1: a
server processes WebTransport input only after the client's SETTINGS).
A "status" alternative cannot tell the server's own 4xx from an origin's: point --authority at an
origin that answers 2xx to any method (the integration test's lenient origin does).

stdout: one JSON line per case
  {"case", "expect": {"kind", "code", "name", "status", "or": [...], "rfc"}, "got": {"kind", "code",
   "name", "status", "reason", "detail"}, "ok", "note"}
then {"summary": {"cases", "passed", "failed": [names]}}. Exit 0 iff every case passed; 1 otherwise;
2 on a usage error (unknown --case). --list prints the catalogue (one JSON line per case) and exits 0.
Every wait is bounded (--timeout per answer, --settle before a probe); a case takes well under a second
when the server answers at once.
"""
import argparse
import json
import logging
import sys
import time

import pylsqpack
from aioquic.quic.connection import QuicConnection, QuicConnectionState
import aioquic.quic.events as qe

from quicpeer import (Fail, client_config, connected_udp, control_frames, poll_quic, pop_tlvs, read_varint, resolve,
                      varint)

# --- error codes (RFC 9114 §8.1, RFC 9204 §6, RFC 9297 §5.2) ---------------------------------------
NO_ERROR = 0x100
GENERAL_PROTOCOL_ERROR = 0x101
INTERNAL_ERROR = 0x102
STREAM_CREATION_ERROR = 0x103
CLOSED_CRITICAL_STREAM = 0x104
FRAME_UNEXPECTED = 0x105
FRAME_ERROR = 0x106
EXCESSIVE_LOAD = 0x107
ID_ERROR = 0x108
SETTINGS_ERROR = 0x109
MISSING_SETTINGS = 0x10A
REQUEST_REJECTED = 0x10B
REQUEST_CANCELLED = 0x10C
REQUEST_INCOMPLETE = 0x10D
MESSAGE_ERROR = 0x10E
CONNECT_ERROR = 0x10F
VERSION_FALLBACK = 0x110
QPACK_DECOMPRESSION_FAILED = 0x200
QPACK_ENCODER_STREAM_ERROR = 0x201
QPACK_DECODER_STREAM_ERROR = 0x202
DATAGRAM_ERROR = 0x33
# WebTransport over HTTP/3, draft-ietf-webtrans-http3-02 §4.5, §8.5 (there named H3_WEBTRANSPORT_BUFFERED_STREAM_REJECTED)
WT_BUFFERED_STREAM_REJECTED = 0x3994BD84

NAMES = {
    NO_ERROR: "H3_NO_ERROR", GENERAL_PROTOCOL_ERROR: "H3_GENERAL_PROTOCOL_ERROR",
    INTERNAL_ERROR: "H3_INTERNAL_ERROR", STREAM_CREATION_ERROR: "H3_STREAM_CREATION_ERROR",
    CLOSED_CRITICAL_STREAM: "H3_CLOSED_CRITICAL_STREAM", FRAME_UNEXPECTED: "H3_FRAME_UNEXPECTED",
    FRAME_ERROR: "H3_FRAME_ERROR", EXCESSIVE_LOAD: "H3_EXCESSIVE_LOAD", ID_ERROR: "H3_ID_ERROR",
    SETTINGS_ERROR: "H3_SETTINGS_ERROR", MISSING_SETTINGS: "H3_MISSING_SETTINGS",
    REQUEST_REJECTED: "H3_REQUEST_REJECTED", REQUEST_CANCELLED: "H3_REQUEST_CANCELLED",
    REQUEST_INCOMPLETE: "H3_REQUEST_INCOMPLETE", MESSAGE_ERROR: "H3_MESSAGE_ERROR",
    CONNECT_ERROR: "H3_CONNECT_ERROR", VERSION_FALLBACK: "H3_VERSION_FALLBACK",
    QPACK_DECOMPRESSION_FAILED: "QPACK_DECOMPRESSION_FAILED",
    QPACK_ENCODER_STREAM_ERROR: "QPACK_ENCODER_STREAM_ERROR",
    QPACK_DECODER_STREAM_ERROR: "QPACK_DECODER_STREAM_ERROR", DATAGRAM_ERROR: "H3_DATAGRAM_ERROR",
    WT_BUFFERED_STREAM_REJECTED: "WT_BUFFERED_STREAM_REJECTED"
}


def code_name(code, transport=False):
    if code is None:
        return None
    if transport:
        return f"transport 0x{code:x}"
    return f"{NAMES.get(code, 'unknown')} (0x{code:x})"


# --- wire: varints, frames, stream types ----------------------------------------------------------
T_DATA, T_HEADERS, T_CANCEL_PUSH, T_SETTINGS, T_PUSH_PROMISE, T_GOAWAY, T_MAX_PUSH_ID = 0, 1, 3, 4, 5, 7, 0xD
S_CONTROL, S_PUSH, S_QPACK_ENCODER, S_QPACK_DECODER = 0x00, 0x01, 0x02, 0x03
GREASE = 0x1F * 3 + 0x21          # a reserved frame type, stream type and setting id (RFC 9114 §7.2.8, §6.2.3, §7.2.4.1)
WT_BIDI_SIGNAL, S_WEBTRANSPORT = 0x41, 0x54   # WEBTRANSPORT_STREAM, WebTransport uni stream type (draft-02 §4.2, §4.1)
SETTINGS_H3_DATAGRAM = 0x33                   # RFC 9297 §2.1.1
SETTINGS_ENABLE_WEBTRANSPORT = 0x2B603742     # draft-02 §3.1
MAX_DATAGRAM_FRAME_SIZE = 65536               # our max_datagram_frame_size transport parameter (RFC 9221 §3)


def frame(ftype, payload=b""):
    return varint(ftype) + varint(len(payload)) + payload


def settings_frame(pairs):
    return frame(T_SETTINGS, b"".join(varint(k) + varint(v) for k, v in pairs))


# Our own SETTINGS: dynamic table capacity 0, no blocked streams (the values are the defaults anyway).
OUR_SETTINGS = [(0x1, 0), (0x7, 0)]
# ... plus HTTP datagrams (the datagram cases), plus WebTransport draft-02 (the WebTransport cases).
DATAGRAM_SETTINGS = OUR_SETTINGS + [(SETTINGS_H3_DATAGRAM, 1)]
WT_SETTINGS = DATAGRAM_SETTINGS + [(SETTINGS_ENABLE_WEBTRANSPORT, 1)]


def control_preface(pairs=None):
    return varint(S_CONTROL) + settings_frame(OUR_SETTINGS if pairs is None else pairs)


# --- QPACK (RFC 9204): static table references and literals without Huffman ---------------------
# Appendix A, indexed from 0 (checked against ls-qpack's table).
STATIC = [
    (':authority', ''), (':path', '/'), ('age', '0'), ('content-disposition', ''), ('content-length', '0'),
    ('cookie', ''), ('date', ''), ('etag', ''), ('if-modified-since', ''), ('if-none-match', ''),
    ('last-modified', ''), ('link', ''), ('location', ''), ('referer', ''), ('set-cookie', ''),
    (':method', 'CONNECT'), (':method', 'DELETE'), (':method', 'GET'), (':method', 'HEAD'),
    (':method', 'OPTIONS'), (':method', 'POST'), (':method', 'PUT'), (':scheme', 'http'),
    (':scheme', 'https'), (':status', '103'), (':status', '200'), (':status', '304'), (':status', '404'),
    (':status', '503'), ('accept', '*/*'), ('accept', 'application/dns-message'),
    ('accept-encoding', 'gzip, deflate, br'), ('accept-ranges', 'bytes'),
    ('access-control-allow-headers', 'cache-control'), ('access-control-allow-headers', 'content-type'),
    ('access-control-allow-origin', '*'), ('cache-control', 'max-age=0'),
    ('cache-control', 'max-age=2592000'), ('cache-control', 'max-age=604800'), ('cache-control', 'no-cache'),
    ('cache-control', 'no-store'), ('cache-control', 'public, max-age=31536000'), ('content-encoding', 'br'),
    ('content-encoding', 'gzip'), ('content-type', 'application/dns-message'),
    ('content-type', 'application/javascript'), ('content-type', 'application/json'),
    ('content-type', 'application/x-www-form-urlencoded'), ('content-type', 'image/gif'),
    ('content-type', 'image/jpeg'), ('content-type', 'image/png'), ('content-type', 'text/css'),
    ('content-type', 'text/html; charset=utf-8'), ('content-type', 'text/plain'),
    ('content-type', 'text/plain;charset=utf-8'), ('range', 'bytes=0-'),
    ('strict-transport-security', 'max-age=31536000'),
    ('strict-transport-security', 'max-age=31536000; includesubdomains'),
    ('strict-transport-security', 'max-age=31536000; includesubdomains; preload'),
    ('vary', 'accept-encoding'), ('vary', 'origin'), ('x-content-type-options', 'nosniff'),
    ('x-xss-protection', '1; mode=block'), (':status', '100'), (':status', '204'), (':status', '206'),
    (':status', '302'), (':status', '400'), (':status', '403'), (':status', '421'), (':status', '425'),
    (':status', '500'), ('accept-language', ''), ('access-control-allow-credentials', 'FALSE'),
    ('access-control-allow-credentials', 'TRUE'), ('access-control-allow-headers', '*'),
    ('access-control-allow-methods', 'get'), ('access-control-allow-methods', 'get, post, options'),
    ('access-control-allow-methods', 'options'), ('access-control-expose-headers', 'content-length'),
    ('access-control-request-headers', 'content-type'), ('access-control-request-method', 'get'),
    ('access-control-request-method', 'post'), ('alt-svc', 'clear'), ('authorization', ''),
    ('content-security-policy', "script-src 'none'; object-src 'none'; base-uri 'none'"),
    ('early-data', '1'), ('expect-ct', ''), ('forwarded', ''), ('if-range', ''), ('origin', ''),
    ('purpose', 'prefetch'), ('server', ''), ('timing-allow-origin', '*'),
    ('upgrade-insecure-requests', '1'), ('user-agent', ''), ('x-forwarded-for', ''),
    ('x-frame-options', 'deny'), ('x-frame-options', 'sameorigin'),
]
STATIC_FULL = {}
STATIC_NAME = {}
for _i, (_n, _v) in enumerate(STATIC):
    STATIC_FULL.setdefault((_n.encode(), _v.encode()), _i)
    STATIC_NAME.setdefault(_n.encode(), _i)


def qint(value, bits, flags=0):
    """Prefixed integer (RFC 7541 §5.1): `bits`-bit prefix, `flags` in the bits above it."""
    top = (1 << bits) - 1
    if value < top:
        return bytes([flags | value])
    out, value = bytearray([flags | top]), value - top
    while value >= 0x80:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def qstr(text, bits, flags=0):
    """String literal, no Huffman: H bit (just above the prefix) clear."""
    return qint(len(text), bits, flags) + text


def _b(x):
    return x if isinstance(x, bytes) else x.encode("latin-1")


def field_line(name, value):
    """One field line: indexed if the static table has it whole, name reference if it has the name
    (RFC 9204 §4.5.2, §4.5.4), else literal name and value (§4.5.6). Names are sent as given."""
    name, value = _b(name), _b(value)
    if (name, value) in STATIC_FULL:
        return qint(STATIC_FULL[(name, value)], 6, 0xC0)              # 1 T=1 index
    if name in STATIC_NAME:
        return qint(STATIC_NAME[name], 4, 0x50) + qstr(value, 7)      # 01 N=0 T=1 index, value
    return qstr(name, 3, 0x20) + qstr(value, 7)                       # 001 N=0 H=0 len name, value


PREFIX = b"\x00\x00"   # Required Insert Count 0, Sign 0, Delta Base 0


def field_section(fields, tail=b""):
    return PREFIX + b"".join(field_line(n, v) for n, v in fields) + tail


def headers_frame(fields, tail=b""):
    return frame(T_HEADERS, field_section(fields, tail))


# --- one QUIC connection ------------------------------------------------------------------------
class Resp:
    """What came back on one of our request streams."""

    def __init__(self):
        self.buf = bytearray()
        self.status = self.headers = None
        self.body = bytearray()
        self.fin = False
        self.reset_stream = self.stop_sending = None
        self.error = None

    def feed(self, data, fin, decoder, sid):
        self.buf += data
        for ftype, _raw, payload in pop_tlvs(self.buf):
            if ftype == T_HEADERS:
                try:
                    _, fields = decoder.feed_header(sid, payload)
                except Exception as e:   # pylsqpack: DecompressionFailed, StreamBlocked
                    self.error = f"undecodable HEADERS: {e!r}"
                    continue
                h = {k.decode("latin-1"): v.decode("latin-1") for k, v in fields}
                st = h.get(":status", "")
                if self.status is None and st.isdigit() and not 100 <= int(st) < 200:
                    self.status, self.headers = int(st), h
            elif ftype == T_DATA and len(self.body) < 4096:
                self.body += payload[:4096 - len(self.body)]
        if fin:
            self.fin = True

    def resolved(self):
        return (self.reset_stream is not None or self.stop_sending is not None or self.status is not None
                or self.fin)


class Peer:
    """One client connection: raw HTTP/3 bytes out, frames, resets and closes in."""

    def __init__(self, a, datagrams=False):
        self.a = a
        host, fam, self.addr = resolve(a.connect)
        cfg = client_config(a, host, idle_timeout=max(30.0, 4 * a.timeout))
        if datagrams:   # the max_datagram_frame_size transport parameter (RFC 9221 §3, RFC 9297 §2.1.1)
            cfg.max_datagram_frame_size = MAX_DATAGRAM_FRAME_SIZE
        self.quic = QuicConnection(configuration=cfg)
        self.sock = connected_udp(fam, self.addr, a.connect, buffers=False)
        self.decoder = pylsqpack.Decoder(0, 0)
        self.streams = {}                  # our bidirectional streams: sid -> Resp
        self.uni_in = {}                   # the server's unidirectional streams: sid -> [type, buffer]
        self.uni_stop, self.uni_reset = {}, {}   # codes the server sent for our uni streams
        self.settings = None               # the server's SETTINGS {id: value}
        self.goaway = None
        self.close = None                  # {"code", "transport", "reason", "by_peer"}
        self.handshake = False
        self.alpn = None
        self.dead = None                   # socket trouble
        self.quic.connect(self.addr, now=time.monotonic())
        self.flush()

    # socket loop
    def flush(self):
        for data, _ in self.quic.datagrams_to_send(now=time.monotonic()):
            try:
                self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                self.dead = self.dead or f"send: {e}"
        self._check_close()

    def _read(self):
        for _ in range(256):
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self.dead = self.dead or f"receive: {e}"
                break
            self.quic.receive_datagram(data, self.addr, now=time.monotonic())
        self._events()

    def _events(self):
        while (e := self.quic.next_event()) is not None:
            sid = getattr(e, "stream_id", None)
            s = self.streams.get(sid)
            if isinstance(e, qe.HandshakeCompleted):
                self.handshake, self.alpn = True, e.alpn_protocol
            elif isinstance(e, qe.StreamDataReceived):
                if s is not None:
                    s.feed(e.data, e.end_stream, self.decoder, sid)
                elif sid % 4 == 3:
                    self._uni(sid, e.data)
            elif isinstance(e, qe.StreamReset):
                if s is not None:
                    s.reset_stream = e.error_code
                else:
                    self.uni_reset[sid] = e.error_code
            elif isinstance(e, qe.StopSendingReceived):
                if s is not None:
                    s.stop_sending = e.error_code
                else:
                    self.uni_stop[sid] = e.error_code
        self._check_close()

    def _uni(self, sid, data):
        """The server's control stream: its SETTINGS and GOAWAY."""
        for ftype, _raw, payload in control_frames(self.uni_in, sid, data):
            if ftype == T_SETTINGS and self.settings is None:
                pairs, i = {}, 0
                while (k := read_varint(payload, i)) and (v := read_varint(payload, k[1])):
                    pairs[k[0]] = v[0]
                    i = v[1]
                self.settings = pairs
            elif ftype == T_GOAWAY:
                g = read_varint(payload, 0)
                self.goaway = g[0] if g else None

    def _check_close(self):
        ev = self.quic._close_event
        if ev is None or self.close is not None:
            return
        self.close = {"code": ev.error_code, "transport": ev.frame_type is not None,
                      "reason": ev.reason_phrase,
                      "by_peer": self.quic._state == QuicConnectionState.DRAINING}

    def run_until(self, cond, seconds):
        """Drives the connection until cond() or `seconds` pass; returns cond()."""
        end = time.monotonic() + seconds
        while not cond():
            now = time.monotonic()
            if now >= end or self.dead:
                return cond()
            poll_quic(self.quic, self.sock, min(end - now, 0.05), self._read, self._events)
            self.flush()
        return True

    # sending
    def open_bidi(self, data, fin=True):
        sid = self.quic.get_next_available_stream_id()
        self.streams[sid] = Resp()
        self.quic.send_stream_data(sid, data, end_stream=fin)
        self.flush()
        return sid

    def open_uni(self, data, fin=False):
        sid = self.quic.get_next_available_stream_id(is_unidirectional=True)
        self.quic.send_stream_data(sid, data, end_stream=fin)
        self.flush()
        return sid

    def send(self, sid, data, fin=False):
        self.quic.send_stream_data(sid, data, end_stream=fin)
        self.flush()

    def reset(self, sid, code):
        self.quic.reset_stream(sid, code)
        self.flush()

    def acked(self, sid, n):
        qs = self.quic._streams.get(sid)
        return qs is not None and qs.sender._buffer_start >= n

    def control(self, pairs=None, extra=b"", fin=False):
        """Opens our control stream: type, SETTINGS (ours unless `pairs`), then `extra`."""
        return self.open_uni(control_preface(pairs) + extra, fin)

    def control_acked(self, pairs):
        """Opens our control stream with SETTINGS `pairs` and waits (bounded) until the server acknowledged
        them, so that input sent next arrives after our SETTINGS."""
        sid = self.control(pairs=pairs)
        if not self.run_until(lambda: self.acked(sid, len(control_preface(pairs))) or self.close, self.a.timeout):
            raise Fail(f"our SETTINGS not acknowledged within {self.a.timeout}s")
        return sid

    def need(self, webtransport=False):
        """The server must offer HTTP datagrams (and WebTransport) before a case may use them: the transport
        parameter max_datagram_frame_size and SETTINGS_H3_DATAGRAM = 1 (RFC 9297 §2.1.1), and
        SETTINGS_ENABLE_WEBTRANSPORT = 1 (draft-02 §3.1)."""
        st = self.settings or {}
        missing = []
        if not self.quic._remote_max_datagram_frame_size:
            missing.append("transport parameter max_datagram_frame_size")
        if st.get(SETTINGS_H3_DATAGRAM) != 1:
            missing.append("SETTINGS_H3_DATAGRAM = 1")
        if webtransport and st.get(SETTINGS_ENABLE_WEBTRANSPORT) != 1:
            missing.append("SETTINGS_ENABLE_WEBTRANSPORT (0x2b603742) = 1")
        if missing:
            raise Fail("the server does not offer " + ", ".join(missing))

    def datagram(self, payload):
        """One QUIC DATAGRAM frame carrying `payload` as given (an HTTP datagram's quarter stream id included)."""
        self.quic.send_datagram_frame(payload)
        self.flush()

    def get(self):
        """The good request: GET --authority --path, FIN after HEADERS."""
        return self.open_bidi(headers_frame(req_fields(self.a)))

    def max_field_section(self):
        return (self.settings or {}).get(0x6, 16 * 1024)

    def shutdown(self):
        try:
            if self.close is None and not self.dead:
                self.quic.close(error_code=NO_ERROR)
                self.flush()
        finally:
            self.sock.close()


# --- request heads ----------------------------------------------------------------------------------
def req_fields(a, method="GET"):
    return [(":method", method), (":scheme", "https"), (":authority", a.authority), (":path", a.path)]


def with_fields(a, *extra, method="GET"):
    return req_fields(a, method) + list(extra)


def post_fields(a, *extra):
    return with_fields(a, *extra, method="POST")


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"


# --- expectations -------------------------------------------------------------------------------
class Exp:
    def __init__(self, kind, code=None, status=None):
        self.kind, self.code, self.status = kind, code, status

    def matches(self, got):
        if got["kind"] != self.kind:
            return False
        if self.kind in ("connection", "stream", "stream+ok"):
            return got["code"] == self.code and not got.get("transport")
        if self.kind == "status":
            lo, hi = self.status
            return got["status"] is not None and lo <= got["status"] <= hi
        return True

    def json(self):
        d = {"kind": self.kind}
        if self.code is not None:
            d["code"], d["name"] = self.code, code_name(self.code)
        if self.status is not None:
            lo, hi = self.status
            d["status"] = lo if lo == hi else f"{lo // 100}xx" if (lo % 100, hi % 100) == (0, 99) else f"{lo}-{hi}"
        return d


def conn(code):
    return Exp("connection", code)


def stream(code):
    return Exp("stream", code)


def stream_then_ok(code):
    return Exp("stream+ok", code)


def status(lo, hi=None):
    return Exp("status", status=(lo, lo if hi is None else hi))


OK = Exp("ok")
ANY_4XX = status(400, 499)
MALFORMED = [stream(MESSAGE_ERROR), ANY_4XX]
MALFORMED_NOTE = ("malformed request: RFC 9114 §4.1.2 requires a stream error H3_MESSAGE_ERROR and lets a "
                  "server answer with a 4xx first; either is accepted")


class Case:
    def __init__(self, name, expect, rfc, note, fn, datagrams=False):
        self.name, self.expect, self.rfc, self.note, self.fn = name, expect, rfc, note, fn
        self.datagrams = datagrams     # the connection offers QUIC datagrams (max_datagram_frame_size)

    def expect_json(self):
        first, rest = self.expect[0], self.expect[1:]
        d = first.json()
        d.setdefault("code", None)
        d.setdefault("name", None)
        d.setdefault("status", None)
        d["or"] = [e.json() for e in rest]
        d["rfc"] = self.rfc
        return d


CASES = []


def case(name, expect, rfc, note="", datagrams=False):
    expect = expect if isinstance(expect, list) else [expect]

    def deco(fn):
        CASES.append(Case(name, expect, rfc, note, fn, datagrams))
        return fn
    return deco


class Target:
    """What a case watches: a request stream (`good`: it is a good request that must get a 2xx), or
    nothing (the input was on unidirectional streams: settle, then probe with a good request).
    `probe_after`: once the watched stream is answered, probe with a good request too (kind "stream+ok");
    `also`: more of our streams whose RESET_STREAM / STOP_SENDING codes the detail reports."""

    def __init__(self, sid=None, good=False, probe_after=False, also=()):
        self.sid, self.good, self.probe_after, self.also = sid, good, probe_after, list(also)


# --- the catalogue ---------------------------------------------------------------------------------
@case("baseline", OK, "-", "a good GET on a fresh connection: checks the setup (origin answers 2xx)")
def _(p, a):
    p.control()
    return Target(p.get(), good=True)


# Frames on a request stream, in an order RFC 9114 §4.1 forbids.
@case("data-before-headers", conn(FRAME_UNEXPECTED), "RFC 9114 §4.1",
      "DATA as the first frame of a request stream")
def _(p, a):
    p.control()
    return Target(p.open_bidi(frame(T_DATA, b"hello") + headers_frame(req_fields(a))))


@case("data-after-trailers", conn(FRAME_UNEXPECTED), "RFC 9114 §4.1",
      "POST: HEADERS, DATA, trailing HEADERS, then DATA (a POST, so the server reads the body)")
def _(p, a):
    p.control()
    wire = (headers_frame(post_fields(a)) + frame(T_DATA, b"abc") + headers_frame([("x-trailer", "1")])
            + frame(T_DATA, b"late"))
    return Target(p.open_bidi(wire))


@case("headers-after-trailers", conn(FRAME_UNEXPECTED), "RFC 9114 §4.1",
      "POST: HEADERS, DATA, trailing HEADERS, then another HEADERS")
def _(p, a):
    p.control()
    wire = (headers_frame(post_fields(a)) + frame(T_DATA, b"abc") + headers_frame([("x-trailer", "1")])
            + headers_frame([("x-more", "2")]))
    return Target(p.open_bidi(wire))


@case("http2-frame-on-request-stream", conn(FRAME_UNEXPECTED), "RFC 9114 §7.2.8",
      "reserved HTTP/2 frame type 0x2 (PRIORITY) before HEADERS")
def _(p, a):
    p.control()
    return Target(p.open_bidi(frame(0x2, b"\x00" * 5) + headers_frame(req_fields(a))))


@case("push-promise-from-client", conn(FRAME_UNEXPECTED), "RFC 9114 §7.2.5",
      "a server MUST treat a PUSH_PROMISE as H3_FRAME_UNEXPECTED (a client may not send one)")
def _(p, a):
    p.control()
    wire = frame(T_PUSH_PROMISE, varint(0) + field_section(req_fields(a))) + headers_frame(req_fields(a))
    return Target(p.open_bidi(wire))


@case("settings-on-request-stream", conn(FRAME_UNEXPECTED), "RFC 9114 §7.2.4",
      "SETTINGS before HEADERS on a request stream")
def _(p, a):
    p.control()
    return Target(p.open_bidi(settings_frame([]) + headers_frame(req_fields(a))))


@case("goaway-on-request-stream", conn(FRAME_UNEXPECTED), "RFC 9114 §7.2.6 (erratum 7780)",
      "GOAWAY before HEADERS on a request stream")
def _(p, a):
    p.control()
    return Target(p.open_bidi(frame(T_GOAWAY, varint(0)) + headers_frame(req_fields(a))))


@case("max-push-id-on-request-stream", conn(FRAME_UNEXPECTED), "RFC 9114 §7.2.7",
      "MAX_PUSH_ID before HEADERS on a request stream")
def _(p, a):
    p.control()
    return Target(p.open_bidi(frame(T_MAX_PUSH_ID, varint(0)) + headers_frame(req_fields(a))))


@case("cancel-push-on-request-stream", conn(FRAME_UNEXPECTED), "RFC 9114 §7.2.3",
      "CANCEL_PUSH before HEADERS on a request stream")
def _(p, a):
    p.control()
    return Target(p.open_bidi(frame(T_CANCEL_PUSH, varint(0)) + headers_frame(req_fields(a))))


@case("grease-frame-before-headers", OK, "RFC 9114 §9, §7.2.8",
      "a reserved (GREASE) frame type before HEADERS is ignored: the request on that stream works")
def _(p, a):
    p.control()
    return Target(p.open_bidi(frame(GREASE, b"grease payload") + headers_frame(req_fields(a))), good=True)


@case("fin-inside-headers-frame", conn(FRAME_ERROR), "RFC 9114 §7.1",
      "the stream ends cleanly inside a HEADERS frame (40 bytes more announced than sent)")
def _(p, a):
    p.control()
    section = field_section(req_fields(a))
    return Target(p.open_bidi(varint(T_HEADERS) + varint(len(section) + 40) + section))


@case("fin-inside-data-frame", conn(FRAME_ERROR), "RFC 9114 §7.1",
      "POST: the stream ends cleanly inside a DATA frame (100 bytes announced, 10 sent)")
def _(p, a):
    p.control()
    return Target(p.open_bidi(headers_frame(post_fields(a)) + varint(T_DATA) + varint(100) + b"x" * 10))


@case("fin-before-headers", stream(REQUEST_INCOMPLETE), "RFC 9114 §4.1",
      "a request stream that ends (FIN) before any frame: SHOULD abort with H3_REQUEST_INCOMPLETE")
def _(p, a):
    p.control()
    return Target(p.open_bidi(b""))


@case("fin-after-grease-only", stream(REQUEST_INCOMPLETE), "RFC 9114 §4.1",
      "a request stream that carries only a GREASE frame, then FIN: no request, H3_REQUEST_INCOMPLETE")
def _(p, a):
    p.control()
    return Target(p.open_bidi(frame(GREASE, b"x")))


# QPACK field sections (RFC 9204).
@case("qpack-static-index-out-of-range", conn(QPACK_DECOMPRESSION_FAILED), "RFC 9204 §3.1",
      "indexed field line naming static entry 99 (the table has 0..98)")
def _(p, a):
    p.control()
    return Target(p.open_bidi(headers_frame(req_fields(a), tail=qint(99, 6, 0xC0))))


@case("qpack-truncated-field-section", [conn(QPACK_DECOMPRESSION_FAILED), stream(QPACK_DECOMPRESSION_FAILED)],
      "RFC 9204 §6",
      "the section ends inside a string literal (length 20, 3 bytes); RFC 9204 §6 defines the code for failures "
      "that stop the stream or the connection and no sentence fixes the scope here: either is accepted")
def _(p, a):
    p.control()
    return Target(p.open_bidi(headers_frame(req_fields(a), tail=qint(STATIC_NAME[b"user-agent"], 4, 0x50)
                                            + qint(20, 7) + b"abc")))


@case("qpack-required-insert-count", conn(QPACK_DECOMPRESSION_FAILED), "RFC 9204 §4.5.1.1",
      "Required Insert Count 1 while our dynamic table capacity is 0")
def _(p, a):
    p.control()
    block = b"\x01\x00" + b"".join(field_line(n, v) for n, v in req_fields(a))
    return Target(p.open_bidi(frame(T_HEADERS, block)))


@case("qpack-dynamic-reference", conn(QPACK_DECOMPRESSION_FAILED), "RFC 9204 §2.2.3",
      "indexed field line into the dynamic table (T=0) with Required Insert Count 0")
def _(p, a):
    p.control()
    return Target(p.open_bidi(headers_frame(req_fields(a), tail=b"\x80")))


@case("qpack-bad-huffman-padding", [conn(QPACK_DECOMPRESSION_FAILED), stream(QPACK_DECOMPRESSION_FAILED)],
      "RFC 9204 §4.1.2, RFC 7541 §5.2",
      "a Huffman literal padded with zeros instead of EOS bits is a decoding error; scope as for a truncated "
      "section (connection or stream, both accepted)")
def _(p, a):
    p.control()
    tail = qint(STATIC_NAME[b"user-agent"], 4, 0x50) + bytes([0x81, 0x00])   # H=1, length 1, "0" + bad pad
    return Target(p.open_bidi(headers_frame(req_fields(a), tail=tail)))


@case("qpack-huge-string-length", [conn(QPACK_DECOMPRESSION_FAILED), stream(QPACK_DECOMPRESSION_FAILED)],
      "RFC 9204 §6",
      "a string literal announcing 2^40 bytes inside a small section (robustness: no allocation, no panic); "
      "connection or stream scope accepted as for a truncated section")
def _(p, a):
    p.control()
    tail = qint(STATIC_NAME[b"user-agent"], 4, 0x50) + qint(1 << 40, 7) + b"abc"
    return Target(p.open_bidi(headers_frame(req_fields(a), tail=tail)))


@case("qpack-integer-overflow", [conn(QPACK_DECOMPRESSION_FAILED), stream(QPACK_DECOMPRESSION_FAILED)],
      "RFC 9204 §4.1.1, §6",
      "an indexed field line whose prefixed integer runs past 62 bits (implementations may bound integers; "
      "robustness); connection or stream scope accepted")
def _(p, a):
    p.control()
    return Target(p.open_bidi(headers_frame(req_fields(a), tail=b"\xff" + b"\xff" * 12 + b"\x01")))


# Request heads that RFC 9114 §4.1.2 calls malformed.
def malformed(name, fields_fn, rfc, what):
    @case(name, MALFORMED, rfc, f"{what}; {MALFORMED_NOTE}")
    def _(p, a):
        p.control()
        return Target(p.open_bidi(headers_frame(fields_fn(a))))


malformed("missing-method", lambda a: req_fields(a)[1:], "RFC 9114 §4.3.1", "no :method")
malformed("missing-scheme", lambda a: [f for f in req_fields(a) if f[0] != ":scheme"], "RFC 9114 §4.3.1",
          "no :scheme on a GET")
malformed("duplicate-path", lambda a: with_fields(a)[:4] + [(":path", "/again")], "RFC 9114 §4.3.1",
          "two :path pseudo-headers")
malformed("empty-path", lambda a: [f if f[0] != ":path" else (":path", "") for f in req_fields(a)],
          "RFC 9114 §4.3.1", "empty :path for an https URI")
malformed("protocol-on-get", lambda a: req_fields(a)[:1] + [(":protocol", "websocket")] + req_fields(a)[1:],
          "RFC 9220 §3, RFC 9114 §4.3", ":protocol on a GET")
malformed("connect-with-path",
          lambda a: [(":method", "CONNECT"), (":authority", "127.0.0.1:9"), (":path", "/")],
          "RFC 9114 §4.4", "plain CONNECT with :path")
malformed("connect-with-scheme",
          lambda a: [(":method", "CONNECT"), (":scheme", "https"), (":authority", "127.0.0.1:9")],
          "RFC 9114 §4.4", "plain CONNECT with :scheme")
malformed("connect-without-authority", lambda a: [(":method", "CONNECT")], "RFC 9114 §4.4",
          "plain CONNECT without :authority")
malformed("extended-connect-without-path",
          lambda a: [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"),
                     (":authority", a.authority), ("sec-websocket-version", "13")],
          "RFC 9220 §3 (RFC 8441 §4)", "CONNECT with :protocol but no :path")
malformed("uppercase-field-name", lambda a: with_fields(a, ("X-Upper", "1")), "RFC 9114 §4.2",
          "field name with uppercase characters")
malformed("field-name-with-space", lambda a: with_fields(a, ("x bad", "1")), "RFC 9114 §4.2, §10.3",
          "field name that is not a token")
malformed("connection-header", lambda a: with_fields(a, ("connection", "keep-alive")), "RFC 9114 §4.2",
          "connection-specific field `connection: keep-alive`")
malformed("keep-alive-header", lambda a: with_fields(a, ("keep-alive", "timeout=5")), "RFC 9114 §4.2",
          "connection-specific field `keep-alive`")
malformed("transfer-encoding-header", lambda a: with_fields(a, ("transfer-encoding", "chunked")),
          "RFC 9114 §4.2", "connection-specific field `transfer-encoding: chunked`")
malformed("upgrade-header", lambda a: with_fields(a, ("upgrade", "websocket")), "RFC 9114 §4.2",
          "connection-specific field `upgrade`")
malformed("te-not-trailers", lambda a: with_fields(a, ("te", "gzip")), "RFC 9114 §4.2",
          "TE with a value other than `trailers`")
malformed("pseudo-after-regular", lambda a: req_fields(a)[:3] + [("x-a", "1"), req_fields(a)[3]],
          "RFC 9114 §4.3", ":path after a regular field")
malformed("unknown-pseudo-header", lambda a: with_fields(a)[:4] + [(":foo", "bar")], "RFC 9114 §4.3",
          "undefined pseudo-header :foo")
malformed("response-pseudo-in-request", lambda a: [(":status", "200")] + req_fields(a), "RFC 9114 §4.3",
          ":status in a request")
malformed("crlf-in-field-value", lambda a: with_fields(a, ("x-a", "1\r\nx-injected: 2")),
          "RFC 9114 §10.3", "CR LF inside a field value")
malformed("nul-in-field-value", lambda a: with_fields(a, ("x-a", "1\x002")), "RFC 9114 §10.3",
          "NUL inside a field value")
malformed("authority-host-mismatch", lambda a: with_fields(a, ("host", "other.invalid")), "RFC 9114 §4.3.1",
          ":authority and Host name different hosts")
malformed("no-authority-no-host", lambda a: [f for f in req_fields(a) if f[0] != ":authority"],
          "RFC 9114 §4.3.1", "https request with neither :authority nor Host")


malformed("authority-with-userinfo",
          lambda a: [f if f[0] != ":authority" else (":authority", "user@" + a.authority) for f in req_fields(a)],
          "RFC 9114 §4.3.1", ":authority with the deprecated userinfo")


@case("pseudo-header-in-trailers", MALFORMED, "RFC 9114 §4.3",
      "POST whose trailer section carries :path (pseudo-header fields MUST NOT appear in trailers, and a "
      "message with an invalid pseudo-header is malformed); " + MALFORMED_NOTE)
def _(p, a):
    p.control()
    wire = headers_frame(post_fields(a)) + frame(T_DATA, b"abc") + headers_frame([(":path", "/trailer")])
    return Target(p.open_bidi(wire))


@case("uppercase-name-in-trailers", MALFORMED, "RFC 9114 §4.2",
      "POST whose trailer section carries `X-Trailer` (uppercase field names make any message malformed); "
      + MALFORMED_NOTE)
def _(p, a):
    p.control()
    wire = headers_frame(post_fields(a)) + frame(T_DATA, b"abc") + headers_frame([("X-Trailer", "1")])
    return Target(p.open_bidi(wire))


@case("content-length-longer-than-body", MALFORMED, "RFC 9114 §4.1.2",
      "POST content-length 5 with 5 + 43 bytes of DATA (the extra bytes are an HTTP/1.1 request: forwarded raw "
      "they are smuggled to the origin); " + MALFORMED_NOTE)
def _(p, a):
    p.control()
    wire = (headers_frame(post_fields(a, ("content-length", "5"))) + frame(T_DATA, b"hello")
            + frame(T_DATA, SMUGGLED))
    return Target(p.open_bidi(wire))


@case("content-length-shorter-than-body", MALFORMED, "RFC 9114 §4.1.2",
      "POST content-length 100 with 5 bytes of DATA, then FIN; " + MALFORMED_NOTE)
def _(p, a):
    p.control()
    wire = headers_frame(post_fields(a, ("content-length", "100"))) + frame(T_DATA, b"hello")
    return Target(p.open_bidi(wire))


@case("content-length-without-body", MALFORMED, "RFC 9114 §4.1.2",
      "POST content-length 10 and FIN right after HEADERS (no DATA); " + MALFORMED_NOTE)
def _(p, a):
    p.control()
    return Target(p.open_bidi(headers_frame(post_fields(a, ("content-length", "10")))))


@case("content-length-not-a-number", MALFORMED, "RFC 9114 §4.1.2, RFC 9110 §8.6",
      "POST content-length `3x` with 3 bytes of DATA (the value cannot equal the DATA length); "
      + MALFORMED_NOTE)
def _(p, a):
    p.control()
    return Target(p.open_bidi(headers_frame(post_fields(a, ("content-length", "3x"))) + frame(T_DATA, b"abc")))


@case("oversize-field-section", [stream(EXCESSIVE_LOAD), status(431)], "RFC 9114 §4.2.2",
      "a HEADERS frame longer than the server's SETTINGS_MAX_FIELD_SECTION_SIZE (default 16 KiB): RFC 9114 "
      "§4.2.2 lets a server answer 431; the stream error H3_EXCESSIVE_LOAD is accepted too")
def _(p, a):
    p.control()
    big = "a" * (p.max_field_section() + 1)
    return Target(p.open_bidi(headers_frame(with_fields(a, ("x-big", big)))))


@case("oversize-decoded-field-section", [stream(EXCESSIVE_LOAD), status(431)], "RFC 9114 §4.2.2",
      "a small HEADERS frame whose decoded size (name + value + 32 per line) exceeds the advertised limit: "
      "`accept: */*` by static index, repeated; 431 or H3_EXCESSIVE_LOAD")
def _(p, a):
    p.control()
    n = p.max_field_section() // (len("accept") + len("*/*") + 32) + 1
    return Target(p.open_bidi(headers_frame(req_fields(a), tail=qint(STATIC_FULL[(b"accept", b"*/*")], 6, 0xC0) * n)))


# The control stream (RFC 9114 §6.2.1, §7.2).
@case("headers-on-control-stream", conn(FRAME_UNEXPECTED), "RFC 9114 §7.2.2", "HEADERS after SETTINGS")
def _(p, a):
    p.control(extra=headers_frame(req_fields(a)))
    return Target()


@case("data-on-control-stream", conn(FRAME_UNEXPECTED), "RFC 9114 §7.2.1", "DATA after SETTINGS")
def _(p, a):
    p.control(extra=frame(T_DATA, b"x"))
    return Target()


@case("second-settings", conn(FRAME_UNEXPECTED), "RFC 9114 §7.2.4", "a second SETTINGS frame")
def _(p, a):
    p.control(extra=settings_frame(OUR_SETTINGS))
    return Target()


@case("control-first-frame-not-settings", conn(MISSING_SETTINGS), "RFC 9114 §6.2.1",
      "the control stream starts with GOAWAY")
def _(p, a):
    p.open_uni(varint(S_CONTROL) + frame(T_GOAWAY, varint(0)))
    return Target()


@case("control-first-frame-grease", conn(MISSING_SETTINGS), "RFC 9114 §6.2.1",
      "the control stream starts with a reserved (GREASE) frame: any first frame but SETTINGS is "
      "H3_MISSING_SETTINGS")
def _(p, a):
    p.open_uni(varint(S_CONTROL) + frame(GREASE, b"x") + settings_frame(OUR_SETTINGS))
    return Target()


@case("http2-setting-in-settings", conn(SETTINGS_ERROR), "RFC 9114 §7.2.4.1",
      "SETTINGS with the HTTP/2-only identifier 0x2 (ENABLE_PUSH)")
def _(p, a):
    p.control(pairs=[(0x2, 0)])
    return Target()


@case("duplicate-setting", [conn(SETTINGS_ERROR), OK], "RFC 9114 §7.2.4",
      "the same setting identifier twice: the receiver MAY treat it as H3_SETTINGS_ERROR; ignoring it is "
      "accepted too")
def _(p, a):
    p.control(pairs=[(0x6, 1000), (0x6, 2000)])
    return Target()


@case("h3-datagram-setting-not-boolean", conn(SETTINGS_ERROR), "RFC 9297 §2.1.1",
      "SETTINGS_H3_DATAGRAM (0x33) = 2")
def _(p, a):
    p.control(pairs=[(0x33, 2)])
    return Target()


@case("h3-datagram-without-transport-parameter", conn(SETTINGS_ERROR), "RFC 9297 §2.1.1",
      "SETTINGS_H3_DATAGRAM = 1 on a connection whose client sent no max_datagram_frame_size transport "
      "parameter (the edge knows the setting: it checks its value)")
def _(p, a):
    p.control(pairs=[(0x33, 1)] + OUR_SETTINGS)
    return Target()


@case("grease-setting", OK, "RFC 9114 §7.2.4.1", "a reserved setting identifier is ignored")
def _(p, a):
    p.control(pairs=[(GREASE, 7)] + OUR_SETTINGS)
    return Target()


@case("grease-frame-on-control-stream", OK, "RFC 9114 §9, §7.2.8",
      "a reserved frame type after SETTINGS is ignored")
def _(p, a):
    p.control(extra=frame(GREASE, b"grease payload"))
    return Target()


@case("http2-frame-on-control-stream", conn(FRAME_UNEXPECTED), "RFC 9114 §7.2.8",
      "reserved HTTP/2 frame type 0x6 (PING) after SETTINGS")
def _(p, a):
    p.control(extra=frame(0x6, b"\x00" * 8))
    return Target()


@case("second-control-stream", conn(STREAM_CREATION_ERROR), "RFC 9114 §6.2.1", "two control streams")
def _(p, a):
    p.control()
    p.control()
    return Target()


@case("control-stream-fin", conn(CLOSED_CRITICAL_STREAM), "RFC 9114 §6.2.1",
      "the client ends (FIN) its control stream right after SETTINGS")
def _(p, a):
    p.control(fin=True)
    return Target()


@case("control-stream-reset", conn(CLOSED_CRITICAL_STREAM), "RFC 9114 §6.2.1",
      "the client resets its control stream (after the server acknowledged its SETTINGS)")
def _(p, a):
    sid = p.control()
    p.run_until(lambda: p.acked(sid, len(control_preface())) or p.close, a.timeout)
    p.run_until(lambda: p.close, a.settle)   # let the server read the stream type before the reset
    p.reset(sid, REQUEST_CANCELLED)
    return Target()


@case("control-truncated-frame-fin", [conn(FRAME_ERROR), conn(CLOSED_CRITICAL_STREAM)], "RFC 9114 §7.1, §6.2.1",
      "after SETTINGS, a GOAWAY announcing 8 payload bytes carries 1, then FIN: §7.1 makes a clean end inside a "
      "frame H3_FRAME_ERROR, §6.2.1 makes any end of the control stream H3_CLOSED_CRITICAL_STREAM; both "
      "MUSTs apply and neither takes precedence, so either code is accepted")
def _(p, a):
    p.control(extra=varint(T_GOAWAY) + varint(8) + b"\x00", fin=True)
    return Target()


@case("control-frame-trailing-bytes", conn(FRAME_ERROR), "RFC 9114 §7.1",
      "a GOAWAY whose payload has 2 bytes after its stream id")
def _(p, a):
    p.control(extra=frame(T_GOAWAY, varint(0) + b"\x00\x00"))
    return Target()


@case("settings-truncated-pair", conn(FRAME_ERROR), "RFC 9114 §7.1",
      "a SETTINGS payload that ends after an identifier, without its value")
def _(p, a):
    p.open_uni(varint(S_CONTROL) + frame(T_SETTINGS, b"\x06"))
    return Target()


@case("client-goaway", OK, "RFC 9114 §5.2",
      "a client GOAWAY (push id 0) only concerns pushes: requests on the connection still work")
def _(p, a):
    p.control(extra=frame(T_GOAWAY, varint(0)))
    return Target()


@case("goaway-id-increase", conn(ID_ERROR), "RFC 9114 §5.2",
      "a client GOAWAY with 4, then one with 8")
def _(p, a):
    p.control(extra=frame(T_GOAWAY, varint(4)) + frame(T_GOAWAY, varint(8)))
    return Target()


@case("max-push-id-decrease", conn(ID_ERROR), "RFC 9114 §7.2.7",
      "MAX_PUSH_ID 10, then MAX_PUSH_ID 5")
def _(p, a):
    p.control(extra=frame(T_MAX_PUSH_ID, varint(10)) + frame(T_MAX_PUSH_ID, varint(5)))
    return Target()


@case("cancel-push-beyond-max-push-id", conn(ID_ERROR), "RFC 9114 §7.2.3",
      "MAX_PUSH_ID 2, then CANCEL_PUSH 5 (a push id greater than currently allowed)")
def _(p, a):
    p.control(extra=frame(T_MAX_PUSH_ID, varint(2)) + frame(T_CANCEL_PUSH, varint(5)))
    return Target()


# Other unidirectional streams (RFC 9114 §6.2, RFC 9204 §4.2).
@case("client-push-stream", conn(STREAM_CREATION_ERROR), "RFC 9114 §6.2.2",
      "a client-initiated push stream (type 0x01, push id 0)")
def _(p, a):
    p.control()
    p.open_uni(varint(S_PUSH) + varint(0) + headers_frame([(":status", "200")]))
    return Target()


@case("grease-uni-stream", OK, "RFC 9114 §6.2, §6.2.3",
      "a reserved (GREASE) stream type is ignored (the server may STOP_SENDING it, SHOULD with "
      "H3_STREAM_CREATION_ERROR): the connection keeps working")
def _(p, a):
    p.control()
    p.open_uni(varint(GREASE) + b"grease stream payload")
    return Target()


@case("second-qpack-encoder-stream", conn(STREAM_CREATION_ERROR), "RFC 9204 §4.2", "two QPACK encoder streams")
def _(p, a):
    p.control()
    p.open_uni(varint(S_QPACK_ENCODER))
    p.open_uni(varint(S_QPACK_ENCODER))
    return Target()


@case("second-qpack-decoder-stream", conn(STREAM_CREATION_ERROR), "RFC 9204 §4.2", "two QPACK decoder streams")
def _(p, a):
    p.control()
    p.open_uni(varint(S_QPACK_DECODER))
    p.open_uni(varint(S_QPACK_DECODER))
    return Target()


@case("qpack-encoder-stream-fin", conn(CLOSED_CRITICAL_STREAM), "RFC 9204 §4.2",
      "the client ends (FIN) its QPACK encoder stream")
def _(p, a):
    p.control()
    p.open_uni(varint(S_QPACK_ENCODER), fin=True)
    return Target()


@case("qpack-encoder-insert", conn(QPACK_ENCODER_STREAM_ERROR), "RFC 9204 §3.2.2",
      "Insert with Literal Name `foo: bar` into a dynamic table of capacity 0")
def _(p, a):
    p.control()
    p.open_uni(varint(S_QPACK_ENCODER) + qstr(b"foo", 5, 0x40) + qstr(b"bar", 7))
    return Target()


@case("qpack-encoder-capacity-above-max", conn(QPACK_ENCODER_STREAM_ERROR), "RFC 9204 §4.3.1",
      "Set Dynamic Table Capacity 4096 above the advertised maximum 0")
def _(p, a):
    p.control()
    p.open_uni(varint(S_QPACK_ENCODER) + qint(4096, 5, 0x20))
    return Target()


@case("qpack-encoder-capacity-zero", OK, "RFC 9204 §4.3.1",
      "Set Dynamic Table Capacity 0 (the only capacity allowed) is fine")
def _(p, a):
    p.control()
    p.open_uni(varint(S_QPACK_ENCODER) + qint(0, 5, 0x20))
    return Target()


@case("qpack-decoder-section-ack", conn(QPACK_DECODER_STREAM_ERROR), "RFC 9204 §4.4.1",
      "Section Acknowledgment for stream 0: the server never sent a section that needs one")
def _(p, a):
    p.control()
    p.open_uni(varint(S_QPACK_DECODER) + qint(0, 7, 0x80))
    return Target()


@case("qpack-decoder-insert-count-increment", conn(QPACK_DECODER_STREAM_ERROR), "RFC 9204 §4.4.3",
      "Insert Count Increment 1: beyond what the server's encoder inserted (nothing)")
def _(p, a):
    p.control()
    p.open_uni(varint(S_QPACK_DECODER) + qint(1, 6, 0x00))
    return Target()


@case("qpack-decoder-stream-cancellation", OK, "RFC 9204 §4.4.2",
      "Stream Cancellation for stream 0 is a valid decoder instruction")
def _(p, a):
    p.control()
    p.open_uni(varint(S_QPACK_DECODER) + qint(0, 6, 0x40))
    return Target()


# HTTP datagrams (RFC 9297 §2.1) and WebTransport streams (draft-ietf-webtrans-http3-02 §4): the client
# offers both (transport parameter max_datagram_frame_size, SETTINGS_H3_DATAGRAM = 1, and for WebTransport
# SETTINGS_ENABLE_WEBTRANSPORT = 1) and sends its input after the server acknowledged those SETTINGS.
@case("datagram-quarter-id-too-large", conn(DATAGRAM_ERROR), "RFC 9297 §2.1",
      "a QUIC DATAGRAM whose quarter stream id is 2^62-1 (8-byte varint 0xff..ff), above the largest possible "
      "2^60-1: the receiver MUST treat it as a connection error H3_DATAGRAM_ERROR", datagrams=True)
def _(p, a):
    p.need()
    p.control_acked(DATAGRAM_SETTINGS)
    p.datagram(b"\xff" * 8 + b"payload")
    return Target()


@case("datagram-empty", conn(DATAGRAM_ERROR), "RFC 9297 §2.1",
      "a QUIC DATAGRAM with an empty payload: a payload too short to parse the quarter stream id MUST be a "
      "connection error H3_DATAGRAM_ERROR", datagrams=True)
def _(p, a):
    p.need()
    p.control_acked(DATAGRAM_SETTINGS)
    p.datagram(b"")
    return Target()


@case("datagram-truncated-quarter-id", conn(DATAGRAM_ERROR), "RFC 9297 §2.1",
      "a QUIC DATAGRAM of one byte 0x40: a 2-byte varint quarter stream id cut after its first byte "
      "(too short to parse the quarter stream id: H3_DATAGRAM_ERROR)", datagrams=True)
def _(p, a):
    p.need()
    p.control_acked(DATAGRAM_SETTINGS)
    p.datagram(b"\x40")
    return Target()


@case("datagram-unknown-session", OK, "RFC 9297 §2.1",
      "a well-formed HTTP datagram for quarter stream id 7 (stream 28, not opened): a datagram for a stream not "
      "yet created SHALL be dropped silently or buffered briefly; the connection keeps working", datagrams=True)
def _(p, a):
    p.need()
    p.control_acked(DATAGRAM_SETTINGS)
    p.datagram(varint(7) + b"orphan datagram")
    return Target()


@case("wt-bidi-bad-session-id", conn(ID_ERROR), "draft-ietf-webtrans-http3-02 §4, §4.2",
      "a client bidi stream WEBTRANSPORT_STREAM (0x41, as 0x40 0x41) naming session id 1: a session id that "
      "cannot be a client-initiated bidirectional stream id MUST close the connection with H3_ID_ERROR",
      datagrams=True)
def _(p, a):
    p.need(webtransport=True)
    p.control_acked(WT_SETTINGS)
    return Target(p.open_bidi(varint(WT_BIDI_SIGNAL) + varint(1) + b"wt payload", fin=False))


@case("wt-uni-bad-session-id", conn(ID_ERROR), "draft-ietf-webtrans-http3-02 §4, §4.1",
      "a client uni stream of type 0x54 (as 0x40 0x54) naming session id 2, not a client-initiated "
      "bidirectional stream id: H3_ID_ERROR on the connection", datagrams=True)
def _(p, a):
    p.need(webtransport=True)
    p.control_acked(WT_SETTINGS)
    p.open_uni(varint(S_WEBTRANSPORT) + varint(2) + b"wt payload")
    return Target()


WT_EARLY_STREAMS = 33


@case("wt-streams-no-session", stream_then_ok(WT_BUFFERED_STREAM_REJECTED), "draft-ietf-webtrans-http3-02 §4.5",
      f"{WT_EARLY_STREAMS} client bidi streams 0x41 for session id 400 (no such CONNECT stream): streams without "
      "a session SHOULD be buffered, the number MUST be limited, and past the limit a stream SHALL get "
      "RESET_STREAM and/or STOP_SENDING H3_WEBTRANSPORT_BUFFERED_STREAM_REJECTED (0x3994bd84); which one is the "
      "implementation's choice: the edge holds 32 per connection and refuses the oldest, so the case watches the "
      "first stream (RESET_STREAM else STOP_SENDING 0x3994bd84), then a good GET on the connection must get a 2xx",
      datagrams=True)
def _(p, a):
    p.need(webtransport=True)
    p.control_acked(WT_SETTINGS)
    sids = [p.open_bidi(varint(WT_BIDI_SIGNAL) + varint(400) + f"early {i}".encode(), fin=False)
            for i in range(WT_EARLY_STREAMS)]
    return Target(sids[0], probe_after=True, also=sids[1:])


# --- running a case -------------------------------------------------------------------------------
LINGER = 0.3     # after a stream answer: a CONNECTION_CLOSE may follow


def observe(p, t, a):
    """Waits for the answer to the case's input (bounded) and classifies it."""
    probe = None
    if t.sid is None:
        p.run_until(lambda: p.close, min(a.settle, a.timeout))
        if p.close is None and not p.dead:
            probe = t.sid = p.get()
            t.good = True
    if t.sid is not None:
        s = p.streams[t.sid]
        p.run_until(lambda: p.close or s.resolved(), a.timeout)
        if p.close is None:
            # A probe's answer may overtake a slow close: after a probe, wait as long as before it.
            linger = LINGER if probe is None else max(LINGER, min(a.settle, a.timeout))
            p.run_until(lambda: p.close or s.reset_stream is not None, linger)
    if t.probe_after and p.close is None and not p.dead:
        probe = p.get()
        ps = p.streams[probe]
        p.run_until(lambda: p.close or ps.resolved(), a.timeout)
        if p.close is None:
            p.run_until(lambda: p.close, max(LINGER, min(a.settle, a.timeout)))
    return classify(p, t, probe, a)


def classify(p, t, probe, a):
    got = {"kind": None, "code": None, "name": None, "status": None, "reason": None, "detail": {}}
    d = got["detail"]
    s = p.streams.get(t.sid) if t.sid is not None else None
    if s is not None:
        d.update(reset_stream=s.reset_stream, stop_sending=s.stop_sending, status=s.status, fin=s.fin)
        if s.error:
            d["response_error"] = s.error
    if probe is not None:
        d["probe_stream"] = probe
    if t.also:
        # The other streams: [RESET_STREAM, STOP_SENDING] codes of those the server answered, count of the rest.
        answered = {str(sid): [p.streams[sid].reset_stream, p.streams[sid].stop_sending] for sid in t.also
                    if p.streams[sid].reset_stream is not None or p.streams[sid].stop_sending is not None}
        d["other_streams"] = {"answered": answered, "unanswered": len(t.also) - len(answered)}
    if p.uni_stop:
        d["uni_stop_sending"] = {str(k): v for k, v in p.uni_stop.items()}
    if p.uni_reset:
        d["uni_reset_stream"] = {str(k): v for k, v in p.uni_reset.items()}
    if p.settings is None:
        d["server_settings"] = None
    body = bytes(s.body).decode("utf-8", "replace").strip().splitlines()[:1] if s is not None else []
    c = p.close
    if c is not None:
        got.update(kind="connection" if c["by_peer"] else "local-close", code=c["code"],
                   name=code_name(c["code"], c["transport"]), reason=c["reason"])
        if c["transport"]:
            got["transport"] = True
    elif s is not None and s.reset_stream is not None:
        got.update(kind="stream", code=s.reset_stream, name=code_name(s.reset_stream), status=s.status,
                   reason=f"RESET_STREAM {code_name(s.reset_stream)}, STOP_SENDING {code_name(s.stop_sending)}")
    elif s is not None and s.status is not None:
        ok = t.good and 200 <= s.status < 300
        got.update(kind="ok" if ok else "status", status=s.status, reason=body[0] if body else None)
    elif s is not None and s.stop_sending is not None:
        got.update(kind="stream", code=s.stop_sending, name=code_name(s.stop_sending),
                   reason=f"STOP_SENDING {code_name(s.stop_sending)} only")
    elif s is not None and s.fin:
        got.update(kind="fin", reason="the stream ended without a response")
    elif p.dead:
        got.update(kind="error", reason=p.dead)
    else:
        what = "the good request" if t.good else "the request stream"
        got.update(kind="none", reason=f"no answer on {what} within {a.timeout}s")
    if t.probe_after and got["kind"] == "stream":
        # The watched stream was refused: the answer is "stream+ok" if the probe then got a 2xx.
        ps = p.streams.get(probe) if probe is not None else None
        if ps is not None:
            d["probe"] = {"reset_stream": ps.reset_stream, "stop_sending": ps.stop_sending, "status": ps.status,
                          "fin": ps.fin}
        if ps is not None and ps.reset_stream is None and ps.status is not None and 200 <= ps.status < 300:
            got["kind"] = "stream+ok"
            got["reason"] += f"; then the good request: {ps.status}"
        else:
            why = ("no probe" if ps is None else f"status {ps.status}" if ps.status is not None
                   else "reset" if ps.reset_stream is not None else "no answer")
            got["reason"] += f"; then the good request: {why}"
    return got


def run_case(c, a):
    p = None
    try:
        p = Peer(a, datagrams=c.datagrams)
        p.run_until(lambda: p.handshake or p.close or p.dead, a.timeout)
        if not p.handshake:
            why = p.dead or (p.close and f"closed during the handshake: 0x{p.close['code']:x} {p.close['reason']}")
            raise Fail(why or f"no QUIC handshake within {a.timeout}s")
        if p.alpn != "h3":
            raise Fail(f"ALPN {p.alpn!r}, not h3")
        # The server's SETTINGS first (its MAX_FIELD_SECTION_SIZE sizes the oversize cases).
        p.run_until(lambda: p.settings is not None or p.close, a.timeout)
        target = c.fn(p, a)
        got = observe(p, target, a)
    except Fail as e:
        got = {"kind": "error", "code": None, "name": None, "status": None, "reason": str(e), "detail": {}}
    except Exception as e:   # aioquic / socket trouble: report, go on with the next case
        got = {"kind": "error", "code": None, "name": None, "status": None, "reason": f"local error: {e!r}",
               "detail": {}}
    finally:
        if p is not None:
            p.shutdown()
    ok = any(e.matches(got) for e in c.expect)
    return {"case": c.name, "expect": c.expect_json(), "got": got, "ok": ok, "note": c.note}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connect", metavar="HOST:PORT", help="the server's UDP address ([::1]:443 ok)")
    ap.add_argument("--cafile", help="PEM CA bundle to verify the server certificate")
    ap.add_argument("--sni", help="TLS server name (default: the --connect host)")
    ap.add_argument("--insecure", action="store_true", help="skip certificate verification")
    ap.add_argument("--authority", default="localhost", help=":authority of the good requests")
    ap.add_argument("--path", default="/", help=":path of the good requests")
    ap.add_argument("--case", action="append", default=[], metavar="NAME", help="run only these (repeatable)")
    ap.add_argument("--list", action="store_true", help="print the catalogue and exit")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each answer")
    ap.add_argument("--settle", type=float, default=0.5,
                    help="seconds to wait for a CONNECTION_CLOSE after input on unidirectional streams, before "
                         "the probe request (raise it on a loaded machine)")
    a = ap.parse_args()
    logging.getLogger("quic").setLevel(logging.CRITICAL)
    by_name = {c.name: c for c in CASES}
    unknown = [n for n in a.case if n not in by_name]
    if unknown:
        ap.error(f"unknown case(s): {', '.join(unknown)} (see --list)")
    chosen = [by_name[n] for n in a.case] if a.case else CASES
    if a.list:
        for c in chosen:
            print(json.dumps({"case": c.name, "expect": c.expect_json(), "note": c.note}))
        return 0
    if not a.connect:
        ap.error("--connect is required")
    failed = []
    for c in chosen:
        r = run_case(c, a)
        if not r["ok"]:
            failed.append(c.name)
        print(json.dumps(r), flush=True)
    print(json.dumps({"summary": {"cases": len(chosen), "passed": len(chosen) - len(failed), "failed": failed}}))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
