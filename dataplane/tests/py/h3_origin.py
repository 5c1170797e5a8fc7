#!/usr/bin/env python3
"""HTTP/3 test origin (aioquic, asyncio) for Switchyard's h3 sides: the h3 counterpart of h2_origin.py.

QUIC v1 + TLS 1.3 (ALPN h3) with --cert/--key (PEM). Prints exactly `listening <port>` on stdout
once the UDP socket is bound; logs one line per stream on stderr (same format as h2_origin.py).
SETTINGS: ENABLE_CONNECT_PROTOCOL=1 unless --no-connect-protocol (then an extended CONNECT gets
RESET_STREAM + STOP_SENDING H3_MESSAGE_ERROR 0x10e, RFC 9220 s3), H3_DATAGRAM=1 (with the QUIC
max_datagram_frame_size transport parameter) unless --no-datagram, plus aioquic's own
QPACK_MAX_TABLE_CAPACITY=4096, QPACK_BLOCKED_STREAMS=16 and the reserved setting 0x21=1.

  extended CONNECT :protocol websocket -> 200 (echoes the first offered sec-websocket-protocol;
      --reject-ws STATUS answers STATUS instead), then a websocket echo server on the stream bytes
      (wsproto frame layer: client frames masked, replies unmasked; Ping -> Pong; Close echoed then
      FIN). --raw-echo echoes raw stream bytes. Path /source/N: send random.Random(--seed).randbytes(N)
      (binary frames of <= 64 KiB, then Close 1000; raw with --raw-echo), then FIN.
      Other :protocol values -> 501.
  plain CONNECT host:port -> TCP connect; 200 and relay (FIN <-> FIN; a TCP reset or error ->
      RESET_STREAM + STOP_SENDING H3_CONNECT_ERROR 0x10f; the peer's RESET_STREAM -> TCP RST),
      or 502 if the connect fails.
  GET /big/N -> 200 with N bytes random.Random(--seed).randbytes(N) (content-length N);
      GET /reset-after/N -> 200, those N bytes, 0.2 s later RESET_STREAM H3_INTERNAL_ERROR (no FIN).
  anything else -> 200, body "h3 origin: <method> <path> body=<n>" (request body read fully first),
      header x-origin-saw = JSON object of the request headers received, pseudo-headers included
      (repeated names joined with ", ").
  HTTP datagrams (RFC 9297) on an open request stream are echoed back on it (counted as dgrams=).
Streams end with a bare FIN (no empty DATA frame). aioquic raises its receive windows as data arrives,
so there is no application back-pressure towards the peer; sending waits while a stream has more than
1 MiB unacknowledged. aioquic closes the whole connection (H3_MESSAGE_ERROR 0x10e etc.) on a malformed
request rather than resetting the stream; such closes are logged as `conn c<n>: ...` lines.
"""
import asyncio
import hashlib
import json
import random
import re
import socket
import struct

from aioquic.h3.connection import Setting
from aioquic.h3.events import DatagramReceived, DataReceived, HeadersReceived
import aioquic.quic.events as qe
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from quicpeer import (DatagramH3, ServerConnection, add_quic, header_dict, log, run_server, send_fin, server_config,
                      server_parser)

CHUNK = 65536
SEND_HIGH = 1 << 20        # per stream: unacknowledged bytes queued in QUIC before a sender waits
RESET = object()           # inbox marker: peer reset the stream / connection went away
H3_INTERNAL_ERROR, H3_MESSAGE_ERROR, H3_CONNECT_ERROR = 0x102, 0x10E, 0x10F


class StreamGone(Exception):
    pass


class OriginH3(DatagramH3):
    def __init__(self, quic, a):
        self.a = a   # read by _get_local_settings, called from super().__init__
        super().__init__(quic, not a.no_datagram)

    def _get_local_settings(self):
        s = super()._get_local_settings()
        if self.a.no_connect_protocol:
            s.pop(Setting.ENABLE_CONNECT_PROTOCOL, None)
        return s


class OStream:
    def __init__(self, sid, headers):
        self.sid = sid
        self.h = header_dict(headers)
        self.inbox = asyncio.Queue()
        self.done = False
        self.status = None
        self.n_in = self.n_out = 0
        self.sha_in, self.sha_out = hashlib.sha256(), hashlib.sha256()
        self.dgrams = 0
        self.note = ""


class Origin(ServerConnection):
    def __init__(self, quic, a, **kw):
        super().__init__(quic, a, **kw)
        self.streams, self.tasks, self.seen = {}, set(), set()   # seen: request streams ever opened
        self.peer = None
        self.kick_ev = asyncio.Event()

    # --- plumbing ----------------------------------------------------------------------------
    def kick(self):
        if not self.kick_ev.is_set():
            self.kick_ev.set()

    def datagram_received(self, data, addr):
        if addr != self.peer:   # first datagram, NAT rebinding or migration of the client
            if self.peer is not None:
                log(f"conn c{self.cid}: datagram from new peer address {addr[0]}:{addr[1]} "
                    f"(was {self.peer[0]}:{self.peer[1]})")
            self.peer = addr
        super().datagram_received(data, addr)
        if not ServerConnection.batch:
            self.kick()

    def after_batch(self):
        self.transmit()
        self.kick()

    def _handle_timer(self):
        super()._handle_timer()
        self.kick()

    async def writable(self, st):
        """Wait until the stream has less than SEND_HIGH unacknowledged bytes queued in QUIC."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.a.timeout
        while True:
            qs = self._quic._streams.get(st.sid)
            if self.closed or qs is None or qs.sender._reset_error_code is not None:
                raise StreamGone()
            if len(qs.sender._buffer) < SEND_HIGH:
                return
            if loop.time() > end:
                st.note += " (send stalled)"
                raise StreamGone()
            self.kick_ev.clear()
            try:
                await asyncio.wait_for(self.kick_ev.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    async def recv(self, st):
        """Next chunk of request data (bytes), None at FIN, RESET if reset/closed."""
        item = await st.inbox.get()
        if isinstance(item, bytes):
            parts = [item]   # join what is already queued: fewer, larger echo writes
            while not st.inbox.empty() and isinstance(st.inbox._queue[0], bytes):
                parts.append(st.inbox.get_nowait())
            item = b"".join(parts)
            st.n_in += len(item)
            st.sha_in.update(item)
        return item

    async def send(self, st, data, end=False):
        view, off = memoryview(data), 0
        while off < len(data):
            await self.writable(st)
            n = min(CHUNK, len(data) - off)
            try:
                self.h3.send_data(st.sid, bytes(view[off:off + n]), False)
            except Exception:   # FrameUnexpected / RuntimeError after a reset
                raise StreamGone()
            st.n_out += n
            st.sha_out.update(view[off:off + n])
            off += n
            self.soon()
        if end:
            self.fin(st)

    def fin(self, st):
        """FIN without an empty DATA frame."""
        if not send_fin(self.h3, self._quic, st.sid):
            raise StreamGone()
        self.soon()

    async def respond(self, st, status, headers=(), end=False):
        st.status = status
        hdrs = [(b":status", str(status).encode())] + [(k.encode(), v.encode()) for k, v in headers]
        try:
            self.h3.send_headers(st.sid, hdrs, end_stream=end)
        except Exception:
            raise StreamGone()
        self.soon()

    async def sink(self, st):
        while (await self.recv(st)) not in (None, RESET):
            pass

    async def wait_end(self, st, task=None):
        """Consume the peer's remaining data until FIN/reset, bounded."""
        try:
            await asyncio.wait_for(task or self.sink(st), self.a.timeout)
        except asyncio.TimeoutError:
            st.note += " (peer did not end its side)"

    # --- events ------------------------------------------------------------------------------
    def quic_event_received(self, e):
        if isinstance(e, qe.ProtocolNegotiated) and self.h3 is None:
            self.h3 = OriginH3(self._quic, self.a)
        st = self.streams.get(getattr(e, "stream_id", -1))
        if isinstance(e, qe.StreamReset) and st:
            st.note += f" reset-by-peer=0x{e.error_code:x}"
            st.inbox.put_nowait(RESET)
        elif isinstance(e, qe.StopSendingReceived) and st:
            st.note += f" stop-sending-by-peer=0x{e.error_code:x}"
            self.kick()
        elif isinstance(e, qe.ConnectionTerminated):
            self.log_closed(e)
            for s in self.streams.values():
                s.inbox.put_nowait(RESET)
            self.kick()
            for t in list(self.tasks):
                asyncio.get_running_loop().call_later(self.a.timeout, t.cancel)
        if self.h3 is not None:
            for he in self.h3.handle_event(e):
                self.h3_event(he)

    def h3_event(self, he):
        st = self.streams.get(he.stream_id)
        if isinstance(he, HeadersReceived) and st is None:
            if he.stream_id % 4 != 0 or he.stream_id in self.seen:   # (trailers after we finished)
                return
            self.seen.add(he.stream_id)
            st = self.streams[he.stream_id] = OStream(he.stream_id, he.headers)
            t = asyncio.create_task(self.handle(st))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)
        elif isinstance(he, DataReceived) and st and not st.done and he.data:
            st.inbox.put_nowait(he.data)
        elif isinstance(he, DatagramReceived):
            if st and not st.done:
                st.dgrams += 1
                self.h3.send_datagram(he.stream_id, he.data)
            return
        if st and getattr(he, "stream_ended", False):
            st.inbox.put_nowait(None)

    async def handle(self, st):
        h = st.h
        method, proto = h.get(":method", ""), h.get(":protocol")
        kind = "request"
        try:
            if method == "CONNECT" and proto is not None:
                kind = "ext-connect"
                await self.h_ext_connect(st, proto)
            elif method == "CONNECT":
                kind = "connect"
                await self.h_connect(st)
            else:
                await self.h_request(st)
        except StreamGone:
            st.note += " stream-gone"
        except asyncio.CancelledError:
            st.note += " cancelled"
        except Exception as e:   # keep serving other streams, but say what broke
            st.note += f" handler-error={e!r}"
            self.reset(st, H3_INTERNAL_ERROR)
        finally:
            st.done = True
            self.streams.pop(st.sid, None)
            dg = f" dgrams={st.dgrams}" if st.dgrams else ""
            log(f"stream c{self.cid}#{st.sid} {kind} {method} {h.get(':authority', '-')} "
                f"{h.get(':path', '-')} proto={proto} status={st.status} in={st.n_in} out={st.n_out} "
                f"sha_in={st.sha_in.hexdigest()} sha_out={st.sha_out.hexdigest()}{dg}{st.note}")

    # --- handlers ----------------------------------------------------------------------------
    async def h_ext_connect(self, st, proto):
        a = self.a
        if a.no_connect_protocol:
            st.note += " :protocol-without-SETTINGS_ENABLE_CONNECT_PROTOCOL"
            self.reset(st, H3_MESSAGE_ERROR)
            return
        if proto != "websocket":
            await self.respond(st, 501, end=True)
            return await self.wait_end(st)
        if a.reject_ws:
            await self.respond(st, a.reject_ws, [("content-length", "0")], end=True)
            return await self.wait_end(st)
        extra = []
        offered = st.h.get("sec-websocket-protocol")
        if offered:
            extra.append(("sec-websocket-protocol", offered.split(",")[0].strip()))
        await self.respond(st, 200, extra)
        m = re.fullmatch(r"/source/(\d+)", st.h.get(":path", "").split("?")[0])
        if m:
            return await self.source(st, int(m.group(1)))
        if a.raw_echo:
            while True:
                data = await self.recv(st)
                if data is RESET:
                    return
                if data is None:
                    return self.fin(st)
                await self.send(st, data)
        fp = FrameProtocol(client=False, extensions=[])
        while True:
            data = await self.recv(st)
            if data is RESET:
                return
            if data is None:   # FIN without a Close frame: end our side too
                return self.fin(st)
            fp.receive_bytes(data)
            out, closing = bytearray(), False
            try:
                for f in fp.received_frames():
                    if f.opcode in (Opcode.BINARY, Opcode.TEXT, Opcode.CONTINUATION):
                        out += fp.send_data(f.payload, fin=f.message_finished)
                    elif f.opcode is Opcode.PING:
                        out += fp.pong(f.payload)
                    elif f.opcode is Opcode.CLOSE:
                        out += fp.close(f.payload[0], f.payload[1])
                        closing = True
                        st.note += f" ws-close={int(f.payload[0])}"
            except ParseFailed as e:
                out += fp.close(e.code, str(e)[:100])
                closing = True
                st.note += f" ws-parse-failed={e}"
            await self.send(st, out, end=closing)
            if closing:
                return await self.wait_end(st)

    async def source(self, st, n):
        sink = asyncio.create_task(self.sink(st))
        rng = random.Random(self.a.seed)
        fp = None if self.a.raw_echo else FrameProtocol(client=False, extensions=[])
        sha, left = hashlib.sha256(), n
        try:
            while left > 0:
                chunk = rng.randbytes(min(CHUNK, left))
                left -= len(chunk)
                sha.update(chunk)
                await self.send(st, chunk if fp is None else fp.send_data(chunk, fin=True))
            await self.send(st, b"" if fp is None else fp.close(1000, "source done"), end=True)
            st.note += f" source={n} sha_payload={sha.hexdigest()}"
            await self.wait_end(st, sink)
        finally:
            sink.cancel()

    async def h_connect(self, st):
        host, _, port = st.h.get(":authority", "").rpartition(":")
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)),
                                          self.a.timeout)
        except (OSError, ValueError, asyncio.TimeoutError) as e:
            st.note += f" connect-failed={e!r}"
            await self.respond(st, 502, [("content-length", "0")], end=True)
            return await self.wait_end(st)
        await self.respond(st, 200)

        def tcp_rst():
            sock = w.get_extra_info("socket")
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            w.transport.abort()

        async def up():   # stream -> TCP
            while True:
                data = await self.recv(st)
                if data is RESET:
                    st.note += " tcp-rst-sent"
                    return tcp_rst()
                if data is None:
                    if w.can_write_eof():
                        w.write_eof()
                    return
                w.write(data)
                await w.drain()

        async def down():   # TCP -> stream
            while True:
                data = await r.read(CHUNK)
                if not data:
                    return self.fin(st)
                await self.send(st, data)

        tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
        try:
            for t in asyncio.as_completed(tasks):
                try:
                    await t
                except (ConnectionError, OSError) as e:
                    st.note += f" tcp-error={e!r}"
                    self.reset(st, H3_CONNECT_ERROR)
                    tcp_rst()
                    break
                except StreamGone:
                    tcp_rst()
                    break
        finally:
            for t in tasks:
                t.cancel()
            w.close()

    async def h_request(self, st):
        body = bytearray()
        while True:
            data = await self.recv(st)
            if data is RESET:
                return
            if data is None:
                break
            body += data
        method, path = st.h.get(":method", ""), st.h.get(":path", "")
        m = re.fullmatch(r"/(big|reset-after)/(\d+)", path)
        if m:   # N seeded bytes (random.Random(--seed)); reset-after: then RESET_STREAM H3_INTERNAL_ERROR
            data = random.Random(self.a.seed).randbytes(int(m.group(2)))
            hdrs = [("content-type", "application/octet-stream")]
            if m.group(1) == "big":
                hdrs.append(("content-length", str(len(data))))
            await self.respond(st, 200, hdrs)
            await self.send(st, data, end=m.group(1) == "big")
            if m.group(1) == "reset-after":
                await asyncio.sleep(0.2)   # the answer is on its way before the reset
                self.reset(st, H3_INTERNAL_ERROR)
            return
        out = f"h3 origin: {method} {path} body={len(body)}".encode()
        hdrs = [("content-type", "text/plain"), ("content-length", str(len(out))),
                ("x-origin-saw", json.dumps(st.h, separators=(",", ":")))]
        if method == "HEAD":
            return await self.respond(st, 200, hdrs, end=True)
        await self.respond(st, 200, hdrs)
        await self.send(st, out, end=True)


def main():
    p = server_parser(__doc__)
    p.add_argument("--no-connect-protocol", action="store_true",
                   help="do not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL=1")
    p.add_argument("--no-datagram", action="store_true",
                   help="do not advertise SETTINGS_H3_DATAGRAM=1 / max_datagram_frame_size")
    p.add_argument("--reject-ws", type=int, metavar="STATUS", help="answer websocket CONNECTs with STATUS")
    p.add_argument("--raw-echo", action="store_true", help="websocket streams: raw bytes, no framing")
    p.add_argument("--seed", type=int, default=1, help="seed for /source/N: random.Random(seed).randbytes(N)")
    p.add_argument("--timeout", type=float, default=20.0,
                   help="bound for upstream TCP connects, stalled sends and waiting on a peer's FIN")
    add_quic(p, window=True)
    p.add_argument("--retry", action="store_true", help="validate client addresses with a Retry first")
    p.add_argument("--alpn", default="h3", help="ALPN to accept (anything but h3: client exit-2 tests)")
    a = p.parse_args()
    run_server(server_config(a, a.alpn, not a.no_datagram, max_data=a.window, max_stream_data=a.window),
               a.listen, lambda quic, **kw: Origin(quic, a, **kw), retry=a.retry)


if __name__ == "__main__":
    main()
