#!/usr/bin/env python3
"""h2c (prior knowledge, cleartext) test origin for Switchyard's HTTP/2 upstream side (hyper-h2, asyncio).

Prints exactly `listening <port>` on stdout once ready; logs one line per stream on stderr.
Advertises SETTINGS_ENABLE_CONNECT_PROTOCOL=1 unless --no-connect-protocol (then an extended CONNECT
gets RST_STREAM PROTOCOL_ERROR, RFC 8441 s3).

  extended CONNECT :protocol websocket -> 200 (echoes the first offered sec-websocket-protocol;
      --reject-ws STATUS answers STATUS instead), then a websocket echo server on the stream bytes
      (wsproto frame layer: client frames masked, replies unmasked; Ping -> Pong; Close echoed then
      END_STREAM). --raw-echo echoes raw stream bytes. Path /source/N: send N bytes of
      random.Random(--seed).randbytes(N) (binary frames of <= 64 KiB, then Close 1000; raw with
      --raw-echo), then END_STREAM. Other :protocol values -> 501.
  plain CONNECT host:port -> TCP connect; 200 and relay (END_STREAM <-> FIN, reset <-> close),
      or 502 if the connect fails.
  anything else -> 200, body "h2 origin: <method> <path> body=<n>" (request body read fully first),
      header x-origin-saw = JSON object of the request headers received, pseudo-headers included
      (repeated names joined with ", ").
Flow control: received data is acknowledged only once handled, so a slow peer back-pressures.
"""
import argparse
import asyncio
import hashlib
import json
import random
import re
import sys

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.exceptions import H2Error, ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
import h2.events as ev
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

CHUNK = 65536
RESET = object()   # inbox marker: peer reset the stream / connection went away


class StreamGone(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class OStream:
    def __init__(self, sid, headers):
        self.sid = sid
        self.pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]
        h = {}
        for k, v in self.pairs:
            h[k] = f"{h[k]}, {v}" if k in h else v
        self.h = h
        self.inbox = asyncio.Queue()
        self.unacked = 0
        self.done = False
        self.status = None
        self.n_in = self.n_out = 0
        self.sha_in, self.sha_out = hashlib.sha256(), hashlib.sha256()
        self.note = ""


class Conn:
    count = 0

    def __init__(self, a, reader, writer):
        Conn.count += 1
        self.cid, self.a, self.reader, self.writer = Conn.count, a, reader, writer
        self.streams, self.tasks = {}, set()
        self.closed = False
        self.kick_ev = asyncio.Event()
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.h2.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: a.max_streams,
            SettingCodes.MAX_HEADER_LIST_SIZE: 65536,
            SettingCodes.INITIAL_WINDOW_SIZE: a.window,
            SettingCodes.ENABLE_CONNECT_PROTOCOL: 0 if a.no_connect_protocol else 1})

    # --- plumbing ----------------------------------------------------------------------------
    def kick(self):
        self.kick_ev.set()
        self.kick_ev = asyncio.Event()

    def write_pending(self):
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def flush(self):
        self.write_pending()
        try:
            await self.writer.drain()
        except (ConnectionError, OSError):
            self.closed = True
            raise StreamGone()

    async def recv(self, st):
        """Next chunk of request data (bytes), None at END_STREAM, RESET if reset/closed.
        The previous chunk is acknowledged only now, i.e. after the handler dealt with it."""
        self.ack(st)
        item = await st.inbox.get()
        if isinstance(item, tuple):
            data, st.unacked = item
            st.n_in += len(data)
            st.sha_in.update(data)
            return data
        return item

    def ack(self, st):
        if st.unacked and not self.closed:
            try:
                self.h2.acknowledge_received_data(st.unacked, st.sid)
            except (H2Error, KeyError):
                pass
            self.write_pending()
        st.unacked = 0

    async def send(self, st, data, end=False):
        view, off = memoryview(data), 0
        while off < len(data):
            if self.closed:
                raise StreamGone()
            try:
                w = self.h2.local_flow_control_window(st.sid)
            except (StreamClosedError, ProtocolError):
                raise StreamGone()
            if w <= 0:
                await self.kick_ev.wait()
                continue
            n = min(w, self.h2.max_outbound_frame_size, len(data) - off)
            try:
                self.h2.send_data(st.sid, bytes(view[off:off + n]))
            except (StreamClosedError, ProtocolError):
                raise StreamGone()
            st.n_out += n
            st.sha_out.update(view[off:off + n])
            off += n
            await self.flush()
        if end:
            try:
                self.h2.end_stream(st.sid)
            except (StreamClosedError, ProtocolError):
                raise StreamGone()
            await self.flush()

    async def respond(self, st, status, headers=(), end=False):
        st.status = status
        try:
            self.h2.send_headers(st.sid, [(":status", str(status))] + list(headers), end_stream=end)
        except (StreamClosedError, ProtocolError):
            raise StreamGone()
        await self.flush()

    def reset(self, st, code):
        try:
            self.h2.reset_stream(st.sid, code)
        except (StreamClosedError, ProtocolError):
            pass
        self.write_pending()

    async def sink(self, st):
        while (await self.recv(st)) not in (None, RESET):
            pass

    async def wait_end(self, st, task=None):
        """Consume (and acknowledge) the peer's remaining data until END_STREAM/reset, bounded."""
        try:
            await asyncio.wait_for(task or self.sink(st), self.a.timeout)
        except asyncio.TimeoutError:
            st.note += " (peer did not end its side)"

    # --- connection loop ---------------------------------------------------------------------
    async def run(self):
        self.h2.initiate_connection()
        if self.a.window > 65535:
            self.h2.increment_flow_control_window(self.a.window - 65535)
        self.write_pending()
        try:
            while not self.closed:
                data = await self.reader.read(262144)
                if not data:
                    break
                try:
                    events = self.h2.receive_data(data)
                except ProtocolError as e:
                    log(f"conn c{self.cid}: h2 protocol error: {e!r}")
                    self.write_pending()
                    break
                for e in events:
                    self.event(e)
                self.write_pending()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed = True
            for st in self.streams.values():
                st.inbox.put_nowait(RESET)
            self.kick()
            await asyncio.sleep(0)
            for t in list(self.tasks):
                t.cancel()
            if self.tasks:
                await asyncio.wait(self.tasks, timeout=self.a.timeout)
            self.writer.close()

    def event(self, e):
        st = self.streams.get(getattr(e, "stream_id", None) or -1)
        if isinstance(e, ev.RequestReceived):
            st = self.streams[e.stream_id] = OStream(e.stream_id, e.headers)
            t = asyncio.create_task(self.handle(st))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)
        elif isinstance(e, ev.DataReceived):
            if st and not st.done:
                st.inbox.put_nowait((e.data, e.flow_controlled_length))
            else:
                try:
                    self.h2.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                except H2Error:
                    pass
        elif isinstance(e, ev.StreamEnded) and st:
            st.inbox.put_nowait(None)
        elif isinstance(e, ev.StreamReset) and st:
            st.note += f" reset-by-peer={int(e.error_code)}"
            st.inbox.put_nowait(RESET)
            self.kick()
        elif isinstance(e, (ev.WindowUpdated, ev.RemoteSettingsChanged)):
            self.kick()
        elif isinstance(e, ev.ConnectionTerminated):
            log(f"conn c{self.cid}: GOAWAY from peer code={int(e.error_code)} last={e.last_stream_id}")
            self.closed = True
            self.kick()

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
            self.reset(st, ErrorCodes.INTERNAL_ERROR)
        finally:
            st.done = True
            self.ack(st)
            while not st.inbox.empty():
                item = st.inbox.get_nowait()
                if isinstance(item, tuple) and not self.closed:
                    st.unacked = item[1]
                    self.ack(st)
            self.streams.pop(st.sid, None)
            log(f"stream c{self.cid}#{st.sid} {kind} {method} {h.get(':authority', '-')} "
                f"{h.get(':path', '-')} proto={proto} status={st.status} in={st.n_in} out={st.n_out} "
                f"sha_in={st.sha_in.hexdigest()} sha_out={st.sha_out.hexdigest()}{st.note}")

    # --- handlers ----------------------------------------------------------------------------
    async def h_ext_connect(self, st, proto):
        a = self.a
        if a.no_connect_protocol:
            st.note += " :protocol-without-SETTINGS_ENABLE_CONNECT_PROTOCOL"
            self.reset(st, ErrorCodes.PROTOCOL_ERROR)
            return
        if proto != "websocket":
            await self.respond(st, 501, end=True)
            return
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
                    return await self.send(st, b"", end=True)
                await self.send(st, data)
        fp = FrameProtocol(client=False, extensions=[])
        while True:
            data = await self.recv(st)
            if data is RESET:
                return
            if data is None:   # END_STREAM without a Close frame: end our side too
                return await self.send(st, b"", end=True)
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

        async def up():   # stream -> TCP
            while True:
                data = await self.recv(st)
                if data is RESET:
                    w.close()
                    return
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
                    return await self.send(st, b"", end=True)
                await self.send(st, data)

        tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
        try:
            for t in asyncio.as_completed(tasks):
                try:
                    await t
                except (ConnectionError, OSError) as e:
                    st.note += f" tcp-error={e!r}"
                    self.reset(st, ErrorCodes.CONNECT_ERROR)
                    w.close()
                except StreamGone:
                    w.close()
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
        out = f"h2 origin: {method} {path} body={len(body)}".encode()
        hdrs = [("content-type", "text/plain"), ("content-length", str(len(out))),
                ("x-origin-saw", json.dumps(st.h, separators=(",", ":")))]
        if method == "HEAD":
            return await self.respond(st, 200, hdrs, end=True)
        await self.respond(st, 200, hdrs)
        await self.send(st, out, end=True)


async def serve(a):
    host, _, port = a.listen.rpartition(":")

    async def on_conn(reader, writer):
        await Conn(a, reader, writer).run()

    server = await asyncio.start_server(on_conn, host.strip("[]"), int(port))
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT", help="port 0 = any free port")
    p.add_argument("--no-connect-protocol", action="store_true",
                   help="do not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL=1")
    p.add_argument("--reject-ws", type=int, metavar="STATUS", help="answer websocket CONNECTs with STATUS")
    p.add_argument("--raw-echo", action="store_true", help="websocket streams: raw bytes, no framing")
    p.add_argument("--seed", type=int, default=1, help="seed for /source/N: random.Random(seed).randbytes(N)")
    p.add_argument("--timeout", type=float, default=20.0,
                   help="bound for upstream TCP connects and for waiting on a peer's END_STREAM")
    p.add_argument("--window", type=int, default=65535, help="INITIAL_WINDOW_SIZE and connection window")
    p.add_argument("--max-streams", type=int, default=1000, help="SETTINGS_MAX_CONCURRENT_STREAMS")
    a = p.parse_args()
    try:
        asyncio.run(serve(a))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
