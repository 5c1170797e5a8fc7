#!/usr/bin/env python3
"""HTTP/2 test client (hyper-h2 + wsproto frame layer) for Switchyard integration tests.

Speaks h2 over TLS (ALPN h2, --tls) or h2c with prior knowledge (default) to --connect HOST:PORT.
Prints one JSON object per stream on stdout, then a summary line {"summary", "goaway", "ok"}.
Exit 0 when the mode's expectations hold, 1 otherwise (reason on stderr), 2 when TLS ALPN did not
select h2. Every wait is bounded: --timeout seconds without socket progress, --deadline overall.

Payloads are seeded pseudo-random bytes: stream i (0-based) of `ws`/`connect` sends
random.Random(seed + i).randbytes(n), generated in 64 KiB chunks (chunking does not change the
bytes); `h2_origin.py` uses random.Random(seed).randbytes(N) for /source/N.
"""
import argparse
import hashlib
import json
import random
import select
import socket
import ssl
import sys
import time

from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import H2Error, ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
import h2.events as ev
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

CHUNK = 65536          # websocket frame payload / generator chunk
OUTQ_LOW = 256 * 1024  # refill a stream's send queue below this
PUMP_BUDGET = 1 << 20  # at most this much queued for the socket at once


class Fail(Exception):
    """The run did not meet expectations (exit 1)."""


class AlpnFail(Fail):
    """TLS did not select h2 (exit 2)."""


class Stream:
    kind = "stream"

    def __init__(self, conn, label=None):
        self.conn, self.label = conn, label
        self.sid = None
        self.status, self.headers = None, {}
        self.sent = self.received = 0
        self.sha_sent, self.sha_recv = hashlib.sha256(), hashlib.sha256()
        self.reset = None          # RST_STREAM code from the peer
        self.local_reset = None    # RST_STREAM code we sent
        self.end_stream = False    # peer sent END_STREAM
        self.outq = bytearray()
        self.end_after = False     # send END_STREAM once outq drained
        self.end_sent = False
        self.error = None

    def on_response(self):
        pass

    def refill(self):
        pass

    def on_data(self, data):
        self.count(data)

    def count(self, data):
        self.received += len(data)
        self.sha_recv.update(data)

    def finished(self):
        return (self.reset is not None or self.local_reset is not None or self.error is not None
                or (self.end_stream and self.end_sent) or self.conn.dead)

    def ok(self):
        return self.status is not None and self.reset is None and self.error is None

    def result(self):
        r = {"stream": self.sid, "status": self.status, "headers": self.headers, "sent": self.sent,
             "received": self.received, "sha_sent": self.sha_sent.hexdigest(),
             "sha_received": self.sha_recv.hexdigest(), "reset": self.reset,
             "end_stream": self.end_stream, "kind": self.kind}
        if self.label is not None:
            r["step"] = self.label
        if self.local_reset is not None:
            r["local_reset"] = self.local_reset
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
        # --close-after-echo: half-close (END_STREAM / WebSocket Close) only
        # once every byte came back; for peers that do not half-close
        # (pproxy closes both ways on EOF; websockets drops queued echoes).
        self.wait_echo = getattr(conn, "close_after_echo", False)

    def on_response(self):
        if self.accept(self.status):
            self.open = True
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
            if self.framed:   # END_STREAM follows once the echoed Close arrives
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
            self.conn.reset_stream(self, ErrorCodes.CANCEL)

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
            self.end_sent = True   # HEADERS carried END_STREAM

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


class Conn:
    def __init__(self, a):
        self.a, self.timeout, self.deadline = a, a.timeout, time.monotonic() + a.deadline
        host, _, port = a.connect.rpartition(":")
        host = host.strip("[]")
        try:
            source = (a.bind, 0) if a.bind else None
            sock = socket.create_connection((host, int(port)), timeout=a.timeout, source_address=source)
        except OSError as e:
            raise Fail(f"connect {a.connect}: {e}")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if a.tls:
            ctx = ssl.create_default_context(cafile=a.cafile)
            if a.insecure:
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            try:
                sock = ctx.wrap_socket(sock, server_hostname=a.sni or host)
            except (OSError, ssl.SSLError) as e:
                raise Fail(f"TLS handshake with {a.connect}: {e}")
            alpn = sock.selected_alpn_protocol()
            if alpn != "h2":
                raise AlpnFail(f"ALPN did not negotiate h2 (server selected {alpn!r})")
        sock.setblocking(False)
        self.sock, self.is_tls = sock, a.tls
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.h2.local_settings = Settings(client=True, initial_values={
            SettingCodes.ENABLE_PUSH: 0, SettingCodes.MAX_CONCURRENT_STREAMS: 100,
            SettingCodes.MAX_HEADER_LIST_SIZE: 65536, SettingCodes.INITIAL_WINDOW_SIZE: a.window})
        self.h2.initiate_connection()
        if a.window > 65535:
            self.h2.increment_flow_control_window(a.window - 65535)
        self.streams = {}
        self.inbuf, self.outbuf = bytearray(), bytearray()
        self.dead = None            # reason string once the connection is unusable
        self.settings_seen = False
        self.goaway = self.goaway_last = None
        self.cancelled = set()      # streams we reset in rapid-reset (see _take_output)
        self.pause_after_first_data = None
        self.paused_until = 0.0
        self.pause_info = None
        self.outbuf += self.h2.data_to_send()

    # --- socket loop -------------------------------------------------------------------------
    def loop(self, cond, what):
        last = time.monotonic()
        while not cond():
            if self.dead:
                raise Fail(f"{self.dead} (while waiting for {what})")
            self.pump()
            now = time.monotonic()
            if self.paused_until and now >= self.paused_until:
                self.paused_until, last = 0.0, now
                self.pause_info["paused_s"] = round(now - self.pause_info["t0"], 3)
            if not self.paused_until and now - last > self.timeout:
                raise Fail(f"timeout: {self.timeout}s without progress while waiting for {what}")
            if now > self.deadline:
                raise Fail(f"deadline of {self.a.deadline}s passed while waiting for {what}")
            rl = [] if self.paused_until else [self.sock]
            wl = [self.sock] if self.outbuf else []
            if rl and self.is_tls and self.sock.pending():
                r, w = rl, []
            else:
                r, w, _ = select.select(rl, wl, [], 0.2)
            progressed = False
            if w:
                progressed |= self._write()
            if r:
                progressed |= self._read()
            if progressed:
                last = time.monotonic()

    def _write(self):
        try:
            n = self.sock.send(bytes(self.outbuf[:262144]))
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return False
        except OSError as e:   # read what the peer sent before it went away (e.g. a GOAWAY)
            self.outbuf.clear()
            self._read()
            self.dead = self.dead or f"send failed: {e}"
            return False
        del self.outbuf[:n]
        return n > 0

    def _read(self):
        got = False
        for _ in range(16):
            try:
                data = self.sock.recv(262144)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError as e:
                self.dead = f"connection error: {e}"
                break
            if not data:
                self.dead = "peer closed the connection"
                break
            got = True
            self.inbuf += data
            self._frames()
            if self.paused_until or self.dead:
                break
        return got

    def _frames(self):
        buf = self.inbuf   # split into whole frames so an h2 error cannot swallow earlier events
        while len(buf) >= 9 and not self.dead:
            n = 9 + int.from_bytes(buf[:3], "big")
            if len(buf) < n:
                break
            frame = bytes(buf[:n])
            del buf[:n]
            if self.h2.state_machine.state == ConnectionState.CLOSED:
                self._after_goaway(frame)
                continue
            try:
                events = self.h2.receive_data(frame)
            except (ProtocolError, H2Error) as e:
                self.dead = f"h2 protocol error from peer: {e!r}"
                events = []
            for e in events:
                self._event(e)
        self.outbuf += self._take_output()

    def _after_goaway(self, frame):
        """h2 refuses every frame after GOAWAY; still note responses/ends/resets for the report."""
        ftype, flags, sid = frame[3], frame[4], int.from_bytes(frame[5:9], "big") & 0x7FFFFFFF
        s, payload = self.streams.get(sid), frame[9:]
        if s is None:
            return
        if ftype in (0, 1) and flags & 0x8:            # PADDED
            payload = payload[1:len(payload) - payload[0]]
        if ftype == 1:
            if flags & 0x20:                           # PRIORITY
                payload = payload[5:]
            try:
                hdrs = self.h2.decoder.decode(payload, raw=True)
            except Exception:
                return
            self._response(s, hdrs)
        elif ftype == 0:
            s.on_data(payload)
        elif ftype == 3:
            s.reset = int.from_bytes(payload[:4], "big")
        if ftype in (0, 1) and flags & 0x1:
            s.end_stream = True
            s.end_sent = True   # nothing more can be sent on this connection anyway

    def _take_output(self):
        data = self.h2.data_to_send()
        if not self.cancelled or not data:
            return data
        out, i = bytearray(), 0    # drop h2's RST_STREAM(STREAM_CLOSED) replies on streams we reset
        while i + 9 <= len(data):
            n = 9 + int.from_bytes(data[i:i + 3], "big")
            sid = int.from_bytes(data[i + 5:i + 9], "big") & 0x7FFFFFFF
            code = int.from_bytes(data[i + 9:i + 13], "big")
            if not (data[i + 3] == 3 and code == ErrorCodes.STREAM_CLOSED and sid in self.cancelled):
                out += data[i:i + n]
            i += n
        return bytes(out)

    def _response(self, s, hdrs):
        h = {}
        for k, v in hdrs:
            k, v = k.decode("latin-1").lower(), v.decode("latin-1")
            h[k] = f"{h[k]}, {v}" if k in h else v
        s.status = int(h.pop(":status", "0"))
        s.headers = h
        s.on_response()

    def _event(self, e):
        s = self.streams.get(getattr(e, "stream_id", None) or -1)
        if isinstance(e, ev.RemoteSettingsChanged):
            self.settings_seen = True
        elif isinstance(e, ev.ResponseReceived) and s:
            self._response(s, e.headers)
        elif isinstance(e, ev.DataReceived):
            if s:
                s.on_data(e.data)
            try:
                self.h2.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            except (StreamClosedError, ProtocolError):
                pass
        elif isinstance(e, ev.StreamEnded) and s:
            s.end_stream = True
            s.on_end()
        elif isinstance(e, ev.StreamReset) and s:
            s.reset = int(e.error_code)
        elif isinstance(e, ev.ConnectionTerminated):
            self.goaway, self.goaway_last = int(e.error_code), e.last_stream_id
            for sid, st in self.streams.items():
                if e.last_stream_id is not None and sid > e.last_stream_id and not st.finished():
                    st.error = f"not processed: GOAWAY last_stream_id={e.last_stream_id}"

    def pump(self):
        if self.h2.state_machine.state == ConnectionState.CLOSED or self.dead:
            return
        budget = PUMP_BUDGET - len(self.outbuf)
        for s in list(self.streams.values()):
            if s.finished() or s.end_sent:
                continue
            s.refill()
            while s.outq and budget > 0:
                try:
                    w = self.h2.local_flow_control_window(s.sid)
                except (StreamClosedError, ProtocolError):
                    s.outq.clear()
                    break
                n = min(w, self.h2.max_outbound_frame_size, len(s.outq), budget)
                if n <= 0:
                    break
                self.h2.send_data(s.sid, bytes(s.outq[:n]))
                del s.outq[:n]
                budget -= n
                s.refill()
            if not s.outq and s.end_after and not s.end_sent:
                try:
                    self.h2.end_stream(s.sid)
                except (StreamClosedError, ProtocolError):
                    pass
                s.end_sent = True
        self.outbuf += self._take_output()

    # --- helpers -----------------------------------------------------------------------------
    def wait_settings(self):
        self.loop(lambda: self.settings_seen, "the server's SETTINGS")

    def open(self, s, headers, end_stream=False):
        s.sid = self.h2.get_next_available_stream_id()
        self.streams[s.sid] = s
        self.h2.send_headers(s.sid, headers, end_stream=end_stream)
        self.outbuf += self._take_output()
        return s

    def reset_stream(self, s, code):
        try:
            self.h2.reset_stream(s.sid, code)
        except (StreamClosedError, ProtocolError):
            pass
        s.local_reset = int(code)

    def start_pause(self):
        secs, self.pause_after_first_data = self.pause_after_first_data, None
        self.pause_info = {"t0": time.monotonic(), "received_before_pause":
                           sum(s.received for s in self.streams.values())}
        self.paused_until = time.monotonic() + secs

    def close(self):
        try:
            if self.h2.state_machine.state != ConnectionState.CLOSED and not self.dead:
                self.h2.close_connection()
                self.outbuf += self._take_output()
                end = time.monotonic() + min(self.timeout, 2)
                while self.outbuf and time.monotonic() < end and not self.dead:
                    select.select([], [self.sock], [], 0.2)
                    self._write()
        except (OSError, H2Error):
            pass
        self.sock.close()


# --- modes -----------------------------------------------------------------------------------
def auth_headers(a):
    h = [("authorization", f"Bearer {a.token}")] if a.token else []
    for x in a.header:
        k, _, v = x.partition(":")
        h.append((k.strip().lower(), v.strip()))
    return h


def ws_headers(a, authority, path):
    h = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", a.scheme),
         (":path", path), (":authority", authority), ("sec-websocket-version", "13")]
    if getattr(a, "subprotocol", None):
        h.append(("sec-websocket-protocol", a.subprotocol))
    return h + auth_headers(a)


def req_headers(a, authority, path, method="GET", body=0):
    h = [(":method", method), (":scheme", a.scheme), (":path", path), (":authority", authority)]
    if body:
        h.append(("content-length", str(body)))
    return h + auth_headers(a)


def need_connect_protocol(conn):
    conn.wait_settings()
    if conn.h2.remote_settings.enable_connect_protocol != 1:
        raise Fail("peer did not enable extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL != 1)")


def all_done(conn):
    return lambda: all(s.finished() for s in conn.streams.values())


is200 = (lambda st: st == 200)
is2xx = (lambda st: st is not None and 200 <= st < 300)


def mode_tunnels(conn, a, ws):
    conn.close_after_echo = getattr(a, "close_after_echo", False)
    if ws:
        need_connect_protocol(conn)
    else:
        conn.wait_settings()
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
        conn.loop(s.finished, f"response on stream {s.sid}")
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
                need_connect_protocol(conn)
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
            conn.reset_stream(s, ErrorCodes.CANCEL)
    conn.outbuf += conn._take_output()
    return {}


def mode_rapid_reset(conn, a):
    conn.wait_settings()
    hdrs = req_headers(a, a.authority, a.path)
    sent, t0, final, err = 0, time.monotonic(), None, None
    try:
        for i in range(a.count):
            if conn.dead or conn.goaway is not None:
                break
            sid = conn.h2.get_next_available_stream_id()
            conn.cancelled.add(sid)
            conn.h2.send_headers(sid, hdrs, end_stream=True)
            conn.h2.reset_stream(sid, ErrorCodes.CANCEL)
            sent += 1
            if i % 32 == 31:
                conn.outbuf += conn._take_output()
                conn._write()
                if select.select([conn.sock], [], [], 0)[0]:
                    conn._read()
                if len(conn.outbuf) > 4 << 20:
                    conn.loop(lambda: len(conn.outbuf) < 1 << 20, "the socket to drain")
        conn.outbuf += conn._take_output()
        burst_s = time.monotonic() - t0
        if conn.goaway is None and not conn.dead:
            final = conn.open(RequestStream(conn, 0, a.seed), hdrs, end_stream=True)
            final.kind = "final-get"
        conn.loop(lambda: final is None or final.finished()
                  or (conn.goaway is not None and (conn.goaway_last or 0) < final.sid),
                  "the final GET or a GOAWAY")
    except Fail as e:
        burst_s, err = time.monotonic() - t0, str(e)
    if conn.goaway is None and not conn.dead:   # give a late GOAWAY a short grace period
        conn.timeout = a.grace
        try:
            conn.loop(lambda: conn.goaway is not None, "a GOAWAY")
        except Fail:
            pass
    conn.rapid_ok = True
    return {"resets_sent": sent, "burst_s": round(burst_s, 3), "goaway_last_stream": conn.goaway_last,
            "final_sent": final is not None, "final_status": final.status if final else None,
            "final_answered": bool(final and final.status is not None), "wait_error": err,
            "connection_closed": conn.dead}


def mode_slow_reader(conn, a):
    need_connect_protocol(conn)
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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connect", required=True, metavar="HOST:PORT", help="server address ([::1]:443 ok)")
    p.add_argument("--tls", action="store_true", help="TLS with ALPN h2 (exit 2 if not negotiated)")
    p.add_argument("--cafile", help="PEM CA bundle to verify the server certificate")
    p.add_argument("--sni", help="TLS server name (default: the --connect host)")
    p.add_argument("--insecure", action="store_true", help="skip TLS certificate verification")
    p.add_argument("--bind", metavar="ADDR", help="local address to connect from (e.g. 127.0.0.2)")
    p.add_argument("--timeout", type=float, default=20.0, help="max seconds without socket progress")
    p.add_argument("--deadline", type=float, default=300.0, help="max seconds for the whole run")
    p.add_argument("--window", type=int, default=65535,
                   help="our INITIAL_WINDOW_SIZE and connection window (default 65535)")
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

    sp = common(sub.add_parser("ws", help="K extended-CONNECT websocket streams, echo check"))
    sp.add_argument("--subprotocol", help="offer sec-websocket-protocol")
    sp.add_argument("--streams", type=int, default=1, help="concurrent streams on one connection")
    sp.add_argument("--bytes", type=int, default=65536, help="payload bytes per stream")
    sp.add_argument("--close-after-echo", action="store_true",
                    help="send the Close / END_STREAM only after the whole echo arrived")
    sp.add_argument("--raw", action="store_true", help="no websocket framing (raw-echo origin)")
    sp = common(sub.add_parser("connect", help="K plain CONNECT streams, raw echo check"), False)
    sp.add_argument("--target", required=True, metavar="HOST:PORT", help=":authority of the CONNECT")
    sp.add_argument("--streams", type=int, default=1)
    sp.add_argument("--bytes", type=int, default=65536)
    sp.add_argument("--close-after-echo", action="store_true",
                    help="send END_STREAM only after the whole echo arrived")
    sp = common(sub.add_parser("request", help="C sequential ordinary requests"))
    sp.add_argument("--method", default="GET")
    sp.add_argument("--body", type=int, default=0, help="request body bytes (seeded)")
    sp.add_argument("--count", type=int, default=1)
    sp = common(sub.add_parser("sequence", help="ordered steps on one connection (421 tests)"), False)
    sp.add_argument("--scheme", default="https", choices=["https", "http"])
    sp.add_argument("--step", action="append", required=True,
                    help="connect:HOST:PORT | ws:AUTHORITY:PATH | get:AUTHORITY:PATH (repeatable)")
    sp = common(sub.add_parser("rapid-reset", help="N HEADERS+RST_STREAM(CANCEL), then one GET"))
    sp.add_argument("--count", type=int, default=1000)
    sp.add_argument("--grace", type=float, default=1.0, help="extra seconds to wait for a late GOAWAY")
    sp = common(sub.add_parser("slow-reader", help="ws stream from /source/N; stop reading for S s"))
    sp.set_defaults(seed=None)
    sp.add_argument("--bytes", type=int, required=True, help="bytes the origin sends (N)")
    sp.add_argument("--pause", type=float, required=True, help="seconds to stop reading the socket")
    sp.add_argument("--raw", action="store_true", help="raw bytes instead of websocket frames")
    return p


def main():
    a = build_parser().parse_args()
    t0 = time.monotonic()
    conn, extra, reason, code = None, {}, None, 1
    try:
        conn = Conn(a)
        conn.rapid_ok = False
        extra = {"ws": lambda: mode_tunnels(conn, a, True), "connect": lambda: mode_tunnels(conn, a, False),
                 "request": lambda: mode_request(conn, a), "sequence": lambda: mode_sequence(conn, a),
                 "rapid-reset": lambda: mode_rapid_reset(conn, a),
                 "slow-reader": lambda: mode_slow_reader(conn, a)}[a.mode]()
    except Fail as e:
        reason, code = str(e), 2 if isinstance(e, AlpnFail) else 1
    except (H2Error, OSError) as e:
        reason = f"local error: {e!r}"
    if conn is None:
        print(f"h2_client: {reason}", file=sys.stderr)
        print(json.dumps({"summary": {"mode": a.mode, "error": reason}, "goaway": None, "ok": False}))
        return code
    conn.close()
    elapsed = time.monotonic() - t0
    streams = sorted(conn.streams.values(), key=lambda s: s.sid)
    if a.mode == "rapid-reset":
        streams = [s for s in streams if s.sid not in conn.cancelled]
    for s in streams:
        print(json.dumps(s.result()))
    if a.mode == "rapid-reset":
        ok = conn.rapid_ok
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
               "mib_per_s": round(moved / elapsed / 2**20, 2) if elapsed else None, **extra}
    if reason:
        summary["error"] = reason
        print(f"h2_client: {reason}", file=sys.stderr)
    print(json.dumps({"summary": summary, "goaway": conn.goaway, "ok": ok}))
    sys.stdout.flush()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
