#!/usr/bin/env python3
"""HTTP/3 test client (aioquic + wsproto frame layer) for Switchyard integration tests: the h3
counterpart of h2_client.py, with the same modes, stdout lines and exit codes where HTTP/3 allows.

QUIC v1 + TLS 1.3 with ALPN h3 to --connect HOST:PORT from one connected UDP socket; aioquic's
sans-IO QuicConnection and H3Connection driven by a select() loop. Prints one JSON object per
request stream on stdout, then a summary line {"summary", "goaway", "ok"}. Exit 0 when the mode's
expectations hold, 1 otherwise (reason on stderr and in summary.error), 2 when the server did not
select ALPN h3 (its TLS alert no_application_protocol, CONNECTION_CLOSE 0x178, or another ALPN).
Every wait is bounded: --timeout seconds without progress (a QUIC stream / H3 event, or more of our
stream bytes acknowledged), --deadline for the whole run.

HTTP/3 specifics:
  * aioquic does not validate the headers it sends, so the extended CONNECT (RFC 9220) is built here:
    :method CONNECT, :protocol websocket, :scheme, :authority, :path, sec-websocket-version: 13, ...
    `ws`, `slow-reader` and ws steps wait for the server's SETTINGS and refuse (exit 1) unless they
    carried SETTINGS_ENABLE_CONNECT_PROTOCOL=1.
  * `reset` is the error code of the peer's RESET_STREAM, else of its STOP_SENDING (both also listed
    as `reset_stream` / `stop_sending`). We end streams with a bare FIN; we abort with RESET_STREAM +
    STOP_SENDING H3_REQUEST_CANCELLED (0x10c), reported as `local_reset`.
  * A CONNECTION_CLOSE (peer's, or aioquic's own on a protocol error) is in summary.connection_close
    ({error_code, frame_type, reason, by_peer}); `goaway` is the stream ID of the peer's last GOAWAY.
  * --rebind-after N: once stream 0 received N payload bytes, traffic moves to a new UDP socket (new
    local port, same connection ID; --rebind-new-cid also switches to a fresh peer connection ID).

Payloads as in h2_client.py: stream i (0-based) of `ws`/`connect` sends random.Random(seed + i)
.randbytes(n) in 64 KiB chunks; `h3_origin.py` uses random.Random(seed).randbytes(N) for /source/N.
"""
import hashlib
import json
import logging
import random
import sys
import time

from aioquic.h3.events import DatagramReceived, DataReceived, HeadersReceived
import aioquic.quic.events as qe
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from quicpeer import (AlpnFail, DatagramH3, Fail, QuicClient, abort_stream, add_connect, add_quic, add_timeouts,
                      auth_headers, control_frames, encode_headers, parser, read_varint, send_fin, take_response)

CHUNK = 65536              # websocket frame payload / generator chunk / DATA frame
OUTQ_LOW = 256 * 1024      # refill a stream's send queue below this
H3_REQUEST_CANCELLED = 0x10C


class ClientH3(DatagramH3):
    """aioquic's H3Connection, plus H3_DATAGRAM=1 in our SETTINGS when asked, and no content-length
    check on responses to HEAD (aioquic would close the connection with H3_MESSAGE_ERROR)."""

    def __init__(self, quic, datagrams):
        self.head_streams = set()
        super().__init__(quic, datagrams)

    def _check_content_length(self, stream):
        if stream.stream_id not in self.head_streams:
            super()._check_content_length(stream)


class Stream:
    kind = "stream"

    def __init__(self, conn, label=None):
        self.conn, self.label, self.sid = conn, label, None
        self.status, self.headers = None, {}
        self.sent = self.received = self.dgram_sent = self.dgram_recv = 0
        self.sha_sent, self.sha_recv = hashlib.sha256(), hashlib.sha256()
        self.reset_stream = self.stop_sending = self.stop_at = None   # codes from the peer
        self.local_reset = self.error = None   # local_reset: code we sent (RESET_STREAM + STOP_SENDING)
        self.end_stream = self.end_after = self.end_sent = False   # peer's FIN; FIN once outq drained; ours
        self.outq, self.inq = bytearray(), []   # to send; DATA received in this batch of events

    @property
    def reset(self):
        return self.reset_stream if self.reset_stream is not None else self.stop_sending

    def on_response(self):
        pass

    def refill(self):
        pass

    def on_end(self):
        pass

    def on_data(self, data):
        self.count(data)

    def count(self, data):
        self.received += len(data)
        self.sha_recv.update(data)

    def finished(self):
        # STOP_SENDING alone ends our sending half: give the peer 1 s for its RESET_STREAM / FIN
        stopped = self.stop_sending is not None and time.monotonic() - self.stop_at > 1.0
        return (self.reset_stream is not None or stopped or self.local_reset is not None
                or self.error is not None or (self.end_stream and self.end_sent) or self.conn.dead)

    def ok(self):
        return self.status is not None and self.reset is None and self.error is None

    def result(self):
        r = {"stream": self.sid, "status": self.status, "headers": self.headers, "sent": self.sent,
             "received": self.received, "sha_sent": self.sha_sent.hexdigest(),
             "sha_received": self.sha_recv.hexdigest(), "reset": self.reset,
             "reset_stream": self.reset_stream, "stop_sending": self.stop_sending,
             "end_stream": self.end_stream, "kind": self.kind}
        if self.label is not None:
            r["step"] = self.label
        if self.local_reset is not None:
            r["local_reset"] = self.local_reset
        if self.conn.want_datagrams:
            r["datagrams_sent"], r["datagrams_received"] = self.dgram_sent, self.dgram_recv
        clean = self.reset is not None or self.local_reset is not None or (self.end_stream and self.end_sent)
        if self.error is None and not clean and self.conn.dead:
            self.error = self.conn.dead
        r["error"] = self.error
        return r


class TunnelStream(Stream):
    """CONNECT / extended CONNECT stream: echo check (nbytes > 0) or sink (slow-reader)."""
    kind = "tunnel"

    def __init__(self, conn, nbytes, seed, framed, accept, sink_expect=None, label=None):
        super().__init__(conn, label)
        self.remaining, self.rng, self.framed, self.accept = nbytes, random.Random(seed), framed, accept
        self.sink_expect = sink_expect       # slow-reader: expected byte count, no echo check
        self.framer = FrameProtocol(client=True, extensions=[]) if framed else None
        self.open = False
        self.tail_queued = False
        self.close_sent = self.close_seen = None
        # --close-after-echo: half-close (FIN / WebSocket Close) only once every byte came back
        self.wait_echo = getattr(conn, "close_after_echo", False)

    def on_response(self):
        if self.accept(self.status):
            self.open = True
            for i in range(self.conn.want_datagrams):   # HTTP datagrams (RFC 9297) on this stream
                self.conn.h3.send_datagram(self.sid, b"dgram %d" % i)
                self.dgram_sent += 1
        else:
            self.remaining = 0
            self.tail_queued = True
            self.end_after = True

    def refill(self):
        if not self.open:
            return
        while self.remaining > 0 and len(self.outq) < OUTQ_LOW:
            chunk = self.rng.randbytes(min(CHUNK, self.remaining))
            self.remaining -= len(chunk)
            self.sent += len(chunk)
            self.sha_sent.update(chunk)
            self.outq += self.framer.send_data(chunk, fin=True) if self.framed else chunk
        echo_pending = self.wait_echo and self.received < self.sent
        if self.remaining == 0 and not self.tail_queued and self.sink_expect is None and not echo_pending:
            self.tail_queued = True
            if self.framed:   # FIN follows once the echoed Close arrives
                self.outq += self.framer.close(1000, "done")
                self.close_sent = True
            else:
                self.end_after = True

    def on_data(self, data):
        self.frames_in(data)
        if self.conn.pause_after_first_data is not None:
            self.conn.start_pause()

    def frames_in(self, data):
        if not self.framed:
            self.count(data)
            return
        self.framer.receive_bytes(data)
        try:
            for f in self.framer.received_frames():
                if f.opcode in (Opcode.BINARY, Opcode.TEXT, Opcode.CONTINUATION):
                    self.count(f.payload.encode() if isinstance(f.payload, str) else f.payload)
                elif f.opcode is Opcode.PING:
                    self.outq += self.framer.pong(f.payload)
                elif f.opcode is Opcode.CLOSE:
                    self.close_seen = [int(f.payload[0]), f.payload[1]]
                    if not self.close_sent:
                        self.outq += self.framer.close(f.payload[0], f.payload[1])
                        self.close_sent = True
                    self.remaining, self.tail_queued, self.end_after = 0, True, True
        except ParseFailed as e:
            self.error = f"bad websocket frame from peer: {e}"
            self.conn.reset_stream(self, H3_REQUEST_CANCELLED)

    def on_end(self):
        self.remaining, self.tail_queued, self.end_after = 0, True, True

    def ok(self):
        if not (super().ok() and self.accept(self.status) and self.end_stream):
            return False
        if self.framed and self.sink_expect is None and self.close_seen is None:
            return False
        if self.sink_expect is not None:
            return self.received == self.sink_expect
        return self.received == self.sent and self.sha_recv.digest() == self.sha_sent.digest()

    def result(self):
        r = super().result()
        if self.framed:
            r["ws_close"] = self.close_seen
        return r


class RequestStream(Stream):
    kind = "request"

    def __init__(self, conn, body, seed, label=None):
        super().__init__(conn, label)
        self.remaining, self.rng = body, random.Random(seed)
        if body == 0:
            self.end_sent = True   # HEADERS carried the FIN

    def refill(self):
        while self.remaining > 0 and len(self.outq) < OUTQ_LOW:
            chunk = self.rng.randbytes(min(CHUNK, self.remaining))
            self.remaining -= len(chunk)
            self.sent += len(chunk)
            self.sha_sent.update(chunk)
            self.outq += chunk
        if self.remaining == 0 and not self.end_sent:
            self.end_after = True

    def on_end(self):
        self.remaining = 0
        if not self.end_sent:
            self.end_after = True

    def finished(self):   # a response that ended is enough, even if our body was cut short
        return super().finished() or (self.end_stream and self.status is not None)

    def ok(self):
        return super().ok() and self.end_stream


class Conn(QuicClient):
    POLL = 0.2

    def __init__(self, a):
        self.want_datagrams = getattr(a, "datagrams", 0)
        super().__init__(a, a.bind, max_data=a.window, max_stream_data=a.window,
                         max_datagram_frame_size=65536 if self.want_datagrams else None)
        self.data_streams = set()   # streams with DATA not yet given to on_data()
        self.uni = {}   # server-initiated uni streams: [type, buffer] (GOAWAY parsing)
        self.goaway = None
        self.pause_after_first_data = self.pause_info = self.rebind_info = None

    def new_h3(self):
        return ClientH3(self.quic, bool(self.want_datagrams))

    # --- events ------------------------------------------------------------------------------
    def pause_ended(self, now):
        self.pause_info["paused_s"] = round(now - self.pause_info["t0"], 3)

    def quic_event(self, e):
        s = self.streams.get(getattr(e, "stream_id", -1))
        if isinstance(e, qe.StreamDataReceived) and e.stream_id % 4 == 3:
            self._uni(e.stream_id, e.data)
        elif isinstance(e, qe.StreamReset) and s:
            s.reset_stream = e.error_code
        elif isinstance(e, qe.StopSendingReceived) and s:
            s.stop_sending, s.stop_at = e.error_code, time.monotonic()

    def events_done(self):
        for s in self.data_streams:
            self.flush_data(s)
        self.data_streams.clear()

    def h3_event(self, he):
        s = self.streams.get(he.stream_id)
        if s is None:
            return
        if isinstance(he, HeadersReceived):
            if take_response(s, he.headers):
                s.on_response()
        elif isinstance(he, DataReceived) and he.data:
            s.inq.append(he.data)   # handed over joined, in flush_data(): fewer websocket parses
            self.data_streams.add(s)
        elif isinstance(he, DatagramReceived):
            s.dgram_recv += 1
        if getattr(he, "stream_ended", False):
            self.flush_data(s)
            s.end_stream = True
            s.on_end()

    def flush_data(self, s):
        if s.inq:
            data = b"".join(s.inq)
            s.inq.clear()
            s.on_data(data)

    def _uni(self, sid, data):
        """Follow the peer's control stream for GOAWAY (aioquic parses it but drops its payload)."""
        for ftype, _raw, payload in control_frames(self.uni, sid, data):
            if ftype == 0x7:
                g = read_varint(payload, 0)
                self.goaway = g[0] if g else None

    def pump(self):
        if self.dead:
            return
        if self.a.rebind_after is not None and self.rebind_info is None:
            s0 = self.streams.get(0)
            if s0 is not None and s0.received >= self.a.rebind_after:
                self.rebind(s0.received)
        for s in list(self.streams.values()):
            if s.sid is None or s.finished() or s.end_sent:
                continue
            s.refill()
            while s.outq:
                room = self.stream_room(s.sid)
                if room is None:   # STOP_SENDING: no more
                    s.outq.clear()
                    s.end_sent = True
                    break
                if not room:
                    break
                n = min(CHUNK, len(s.outq))
                self.h3.send_data(s.sid, bytes(s.outq[:n]), False)
                del s.outq[:n]
                s.refill()
            if not s.outq and s.end_after and not s.end_sent:
                self.fin(s)

    # --- helpers -----------------------------------------------------------------------------
    def open(self, s, headers, end_stream=False):
        s.sid = self.quic.get_next_available_stream_id()
        self.streams[s.sid] = s
        hdrs = encode_headers(headers)
        if (b":method", b"HEAD") in hdrs:
            self.h3.head_streams.add(s.sid)
        self.h3.send_headers(s.sid, hdrs, end_stream=end_stream)
        self.flush()
        return s

    def fin(self, s):
        """FIN without an empty DATA frame (a stream reset by STOP_SENDING or gone: nothing)."""
        send_fin(self.h3, self.quic, s.sid)
        s.end_sent = True

    def reset_stream(self, s, code):
        abort_stream(self.quic, s.sid, code)
        s.local_reset = code

    def rebind(self, at):
        old = self.sock
        local_ip, old_port = old.getsockname()[:2]
        self.sock = self._socket(local_ip)
        old.close()
        new_cid = bool(self.a.rebind_new_cid and self.quic._peer_cid_available)
        if new_cid:
            self.quic.change_connection_id()
        self.rebind_info = {"rebind_at": at, "old_port": old_port, "new_port": self.sock.getsockname()[1],
                            "new_cid": new_cid}

    def start_pause(self):
        secs, self.pause_after_first_data = self.pause_after_first_data, None
        self.pause_info = {"t0": time.monotonic(), "received_before_pause":
                           sum(s.received for s in self.streams.values())}
        self.paused_until = time.monotonic() + secs


# --- modes -----------------------------------------------------------------------------------
def ws_headers(a, authority, path):
    h = [(":method", "CONNECT"), (":protocol", getattr(a, "protocol", "websocket")), (":scheme", a.scheme),
         (":authority", authority), (":path", path), ("sec-websocket-version", "13")]
    if getattr(a, "subprotocol", None):
        h.append(("sec-websocket-protocol", a.subprotocol))
    return h + auth_headers(a)


def req_headers(a, authority, path, method="GET", body=0):
    h = [(":method", method), (":scheme", a.scheme), (":authority", authority), (":path", path)]
    if body:
        h.append(("content-length", str(body)))
    return h + auth_headers(a)


def all_done(conn):
    return lambda: all(s.finished() for s in conn.streams.values())


is200 = (lambda st: st == 200)
is2xx = (lambda st: st is not None and 200 <= st < 300)


def mode_tunnels(conn, a, ws):
    conn.close_after_echo = a.close_after_echo
    if ws:
        conn.need_connect_protocol()
    else:
        conn.wait_settings()
    if a.datagrams and not conn.peer_datagrams():
        raise Fail("peer did not enable HTTP datagrams (SETTINGS_H3_DATAGRAM / max_datagram_frame_size)")
    for i in range(a.streams):
        s = TunnelStream(conn, a.bytes, a.seed + i, ws and not a.raw, is200 if ws else is2xx)
        s.kind = "ws" if ws else "connect"
        conn.open(s, ws_headers(a, a.authority, a.path) if ws else
                  [(":method", "CONNECT"), (":authority", a.target)] + auth_headers(a))
    conn.loop(all_done(conn), "all streams to finish")
    return {}


def mode_request(conn, a):
    conn.wait_settings()
    for i in range(a.count):
        s = conn.open(RequestStream(conn, a.body, a.seed + i),
                      req_headers(a, a.authority, a.path, a.method, a.body), end_stream=a.body == 0)
        if not a.concurrent:
            conn.loop(s.finished, f"response on stream {s.sid}")
    conn.loop(all_done(conn), "all responses")
    return {}


def mode_sequence(conn, a):
    conn.wait_settings()
    for step in a.step:
        kind, _, rest = step.partition(":")
        if kind == "connect":
            s = TunnelStream(conn, 0, a.seed, False, is2xx, sink_expect=0, label=step)
            conn.open(s, [(":method", "CONNECT"), (":authority", rest)] + auth_headers(a))
        elif kind in ("ws", "get"):
            i = rest.find(":/")
            authority, path = (rest[:i], rest[i + 1:]) if i >= 0 else (rest, "/")
            if kind == "ws":
                conn.need_connect_protocol()
                s = TunnelStream(conn, 0, a.seed, False, is200, sink_expect=0, label=step)
                conn.open(s, ws_headers(a, authority, path))
            else:
                s = conn.open(RequestStream(conn, 0, a.seed, label=step),
                              req_headers(a, authority, path), end_stream=True)
        else:
            raise Fail(f"bad --step {step!r}: want connect:HOST:PORT, ws:AUTH:PATH or get:AUTH:PATH")
        s.kind = kind
        want = s.finished if kind == "get" else (lambda s=s: s.status is not None or s.finished())
        conn.loop(want, f"answer to step {step}")
    for s in conn.streams.values():   # tunnels that are still open: cancel them
        if not s.finished():
            conn.reset_stream(s, H3_REQUEST_CANCELLED)
    conn.flush()
    return {}


def mode_slow_reader(conn, a):
    conn.need_connect_protocol()
    conn.pause_after_first_data = a.pause
    s = TunnelStream(conn, 0, 0, not a.raw, is200, sink_expect=a.bytes)
    s.kind = "slow-reader"
    conn.open(s, ws_headers(a, a.authority, a.path))
    conn.loop(all_done(conn), "the source stream to finish")
    info = dict(conn.pause_info or {})
    info.pop("t0", None)
    if a.seed is not None:
        want = hashlib.sha256(random.Random(a.seed).randbytes(a.bytes)).hexdigest()
        info["sha_expected"] = want
        if s.sha_recv.hexdigest() != want:
            s.error = "received bytes differ from random.Random(seed).randbytes(N)"
    return info


def build_parser():
    p = parser(__doc__)
    add_connect(p)
    p.add_argument("--bind", metavar="ADDR", help="local address to send from (e.g. 127.0.0.2)")
    add_timeouts(p, 300.0)
    add_quic(p, window=True)
    p.add_argument("--rebind-after", type=int, metavar="BYTES",
                   help="move to a new UDP socket (new local port) once stream 0 received BYTES")
    p.add_argument("--rebind-new-cid", action="store_true",
                   help="with --rebind-after: also switch to a new peer connection ID")
    sub = p.add_subparsers(dest="mode", required=True)

    def common(sp, authority=True):
        if authority:
            sp.add_argument("--authority", default="localhost", help=":authority")
            sp.add_argument("--path", default="/", help=":path")
            sp.add_argument("--scheme", default="https", choices=["https", "http"], help=":scheme")
        sp.add_argument("--token", help="send authorization: Bearer TOKEN")
        sp.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                        help="extra request header (repeatable)")
        sp.add_argument("--seed", type=int, default=1, help="payload seed (stream i uses seed+i)")
        return sp

    def tunnel_opts(sp):
        sp.add_argument("--streams", type=int, default=1, help="concurrent streams on one connection")
        sp.add_argument("--bytes", type=int, default=65536, help="payload bytes per stream")
        sp.add_argument("--close-after-echo", action="store_true",
                        help="send the Close / FIN only after the whole echo arrived")
        sp.add_argument("--datagrams", type=int, default=0, metavar="K",
                        help="also send K HTTP datagrams per stream (needs the peer's H3_DATAGRAM)")

    sp = common(sub.add_parser("ws", help="K extended-CONNECT websocket streams, echo check"))
    sp.add_argument("--subprotocol", help="offer sec-websocket-protocol")
    sp.add_argument("--protocol", default="websocket", help=":protocol (another value: 501 tests)")
    tunnel_opts(sp)
    sp.add_argument("--raw", action="store_true", help="no websocket framing (raw-echo origin)")
    sp = common(sub.add_parser("connect", help="K plain CONNECT streams, raw echo check"), False)
    sp.add_argument("--target", required=True, metavar="HOST:PORT", help=":authority of the CONNECT")
    tunnel_opts(sp)
    sp = common(sub.add_parser("request", help="C ordinary requests (sequential unless --concurrent)"))
    sp.add_argument("--method", default="GET")
    sp.add_argument("--body", type=int, default=0, help="request body bytes (seeded)")
    sp.add_argument("--count", type=int, default=1)
    sp.add_argument("--concurrent", action="store_true", help="open all C requests at once")
    sp = common(sub.add_parser("sequence", help="ordered steps on one connection (421 tests)"), False)
    sp.add_argument("--scheme", default="https", choices=["https", "http"])
    sp.add_argument("--step", action="append", required=True,
                    help="connect:HOST:PORT | ws:AUTHORITY:PATH | get:AUTHORITY:PATH (repeatable)")
    sp = common(sub.add_parser("slow-reader", help="ws stream from /source/N; stop reading for S s"))
    sp.set_defaults(seed=None)
    sp.add_argument("--bytes", type=int, required=True, help="bytes the origin sends (N)")
    sp.add_argument("--pause", type=float, required=True, help="seconds to stop reading the socket")
    sp.add_argument("--raw", action="store_true", help="raw bytes instead of websocket frames")
    return p


def main():
    a = build_parser().parse_args()
    logging.getLogger("quic").setLevel(logging.CRITICAL)   # we report errors ourselves
    t0 = time.monotonic()
    conn, extra, reason, code = None, {}, None, 1
    try:
        conn = Conn(a)
        extra = {"ws": lambda: mode_tunnels(conn, a, True), "connect": lambda: mode_tunnels(conn, a, False),
                 "request": lambda: mode_request(conn, a), "sequence": lambda: mode_sequence(conn, a),
                 "slow-reader": lambda: mode_slow_reader(conn, a)}[a.mode]()
    except Fail as e:
        reason, code = str(e), 2 if isinstance(e, AlpnFail) else 1
    except Exception as e:   # aioquic / socket errors: still report what happened
        reason = f"local error: {e!r}"
    if conn is None:
        print(f"h3_client: {reason}", file=sys.stderr)
        print(json.dumps({"summary": {"mode": a.mode, "error": reason}, "goaway": None, "ok": False}))
        return code
    conn.close()
    elapsed = time.monotonic() - t0
    streams = sorted(conn.streams.values(), key=lambda s: s.sid)
    for s in streams:
        print(json.dumps(s.result()))
    if code == 2:
        ok = False
    elif a.mode == "sequence":
        ok = reason is None and all(s.status is not None or s.reset is not None for s in streams)
    else:
        ok = reason is None and all(s.ok() for s in streams)
    if reason is None and not ok:
        bad = [s.result() for s in streams if not s.ok()]
        reason = f"{len(bad)} stream(s) failed: " + "; ".join(
            f"stream {r['stream']} status={r['status']} reset={r['reset']} error={r['error']} "
            f"received={r['received']}/sent={r['sent']}"
            for r in bad[:5])
    moved = sum(s.sent + s.received for s in streams)
    summary = {"mode": a.mode, "streams": len(streams), "ok_streams": sum(s.ok() for s in streams),
               "elapsed_s": round(elapsed, 3), "bytes_sent": sum(s.sent for s in streams),
               "bytes_received": sum(s.received for s in streams),
               "mib_per_s": round(moved / elapsed / 2**20, 2) if elapsed else None, "alpn": conn.alpn,
               "connection_close": conn.close_info, **(conn.rebind_info or {}), **extra}
    if a.rebind_after is not None and conn.rebind_info is None:
        summary["rebind_at"] = None
    if reason:
        summary["error"] = reason
        print(f"h3_client: {reason}", file=sys.stderr)
    print(json.dumps({"summary": summary, "goaway": conn.goaway, "ok": ok}))
    sys.stdout.flush()
    return code if reason and code == 2 else (0 if ok else 1)


if __name__ == "__main__":
    sys.exit(main())
