"""Shared parts of the HTTP/3 test peers in this directory (h3_client.py, h3_origin.py, h3_bad.py,
masque_client.py, masque_server.py, wt_client.py, wt_server.py, udp_echo.py): QUIC varints and RFC 9297
capsules, header helpers, QUIC configurations, UDP sockets, the batching UDP server loop, the sans-IO
client connection (socket loop, SETTINGS wait, close) and the common command-line options.

Not a tool itself. The scripts import it as a sibling module: `python dataplane/tests/py/<script>.py`
puts this directory first on sys.path. Plain Python plus aioquic, like the scripts.
"""
import argparse
import asyncio
import hashlib
import logging
import select
import socket
import ssl
import sys
import time

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.h3.connection import FrameType, H3Connection, H3Stream, Setting
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
import aioquic.quic.events as qe

H3_NO_ERROR = 0x100
ALPN_ALERT = 0x100 + 120   # CRYPTO_ERROR(no_application_protocol)
BUFFER = 4 << 20           # SO_RCVBUF / SO_SNDBUF of our UDP sockets
SEND_HIGH = 1 << 20        # clients: unacknowledged bytes queued in QUIC on a stream before we stop writing
DATAGRAM_FRAME_SIZE = 65536   # the max_datagram_frame_size transport parameter we send (RFC 9221)
DGRAM_OVERHEAD = 44        # short header (1 + CID <= 20 + PN 4) + AEAD tag 16 + frame type/length 3
# Capsule types: RFC 9297 s3.5 (DATAGRAM), RFC 9484 s4.7 (CONNECT-IP), WebTransport draft-02 s5.
CAP_DATAGRAM, CAP_ADDRESS_ASSIGN, CAP_ADDRESS_REQUEST, CAP_ROUTE_ADVERTISEMENT = 0x00, 0x01, 0x02, 0x03
CLOSE_SESSION = 0x2843     # WT_CLOSE_SESSION
WT_FIRST, WT_LAST = 0x52E4A40FA8DB, 0x52E5AC983162   # draft-02 (Chromium) app code n <-> HTTP/3 code


def log(msg):
    """One line on stderr, flushed (the servers' log)."""
    print(msg, file=sys.stderr, flush=True)


def sha(b):
    """sha256 of b, hex."""
    return hashlib.sha256(b).hexdigest()


# --- QUIC varints, TLV records (HTTP/3 frames, RFC 9297 capsules) ---------------------------------
def varint(v):
    """QUIC variable-length integer, shortest form (RFC 9000 §16)."""
    if v < 1 << 6:
        return bytes([v])
    if v < 1 << 14:
        return (v | 0x4000).to_bytes(2, "big")
    if v < 1 << 30:
        return (v | 0x80000000).to_bytes(4, "big")
    return (v | 0xC000000000000000).to_bytes(8, "big")


def read_varint(buf, i):
    """QUIC variable-length integer at buf[i:] -> (value, next index), or None if buf ends inside it."""
    if i >= len(buf):
        return None
    n = 1 << (buf[i] >> 6)
    if i + n > len(buf):
        return None
    return int.from_bytes(bytes([buf[i] & 0x3F]) + bytes(buf[i + 1:i + n]), "big"), i + n


def capsule(ctype, value):
    """One capsule (RFC 9297 §3.2): type varint, length varint, value."""
    return varint(ctype) + varint(len(value)) + value


class CapsuleError(Exception):
    """A malformed capsule (e.g. longer than the parser's limit)."""


def pop_tlvs(buf, limit=None):
    """Takes the complete type-length-value records (capsules, HTTP/3 frames) off the front of the
    bytearray buf: [(type, exact record bytes, value)]. A declared length over `limit` raises
    CapsuleError (buf is then left as it was)."""
    out, i = [], 0
    while (t := read_varint(buf, i)) and (n := read_varint(buf, t[1])):
        if limit is not None and n[0] > limit:
            raise CapsuleError(f"capsule type=0x{t[0]:x} len={n[0]} over {limit}")
        end = n[1] + n[0]
        if end > len(buf):
            break
        out.append((t[0], bytes(buf[i:end]), bytes(buf[n[1]:end])))
        i = end
    del buf[:i]
    return out


def control_frames(uni, sid, data):
    """Feeds `data` of the peer's unidirectional stream sid into uni ({sid: [stream type or None,
    buffer]}): the complete frames [(type, exact bytes, payload)] it completes on the control stream
    (type 0x00); the bytes of other stream types are dropped."""
    st = uni.setdefault(sid, [None, bytearray()])
    b = st[1]
    b += data
    if st[0] is None:
        t = read_varint(b, 0)
        if t is None:
            return []
        st[0] = t[0]
        del b[:t[1]]
    if st[0] != 0:
        b.clear()
        return []
    return pop_tlvs(b)


class Capsules:
    """RFC 9297 capsule stream parser: feed(bytes) -> [(type, exact capsule bytes, value)]; the bytes
    of an incomplete capsule wait in .buf. limit: see pop_tlvs()."""

    def __init__(self, limit=None):
        self.buf, self.limit = bytearray(), limit

    def feed(self, data):
        """More stream bytes -> the capsules they complete."""
        self.buf += data
        return pop_tlvs(self.buf, self.limit)


def wt_code(h):
    """HTTP/3 error code -> WebTransport application code (draft-02 mapping), or None."""
    if h is not None and WT_FIRST <= h <= WT_LAST and (h - 0x21) % 0x1F != 0:
        s = h - WT_FIRST
        return s - s // 0x1F
    return None


# --- headers --------------------------------------------------------------------------------------
def header_dict(headers, lower=False):
    """[(name, value)] as bytes -> {name: value} decoded as latin-1, repeated names joined with ", "
    (names lowercased with lower)."""
    h = {}
    for k, v in headers:
        k, v = k.decode("latin-1"), v.decode("latin-1")
        if lower:
            k = k.lower()
        h[k] = f"{h[k]}, {v}" if k in h else v
    return h


def take_response(rec, headers):
    """A response's field section into rec.status and rec.headers ({lowercased name: value} without
    :status), unless rec has its status already or this is an interim (1xx) response. True if taken."""
    h = header_dict(headers, lower=True)
    status = int(h.pop(":status", "0"))
    if rec.status is None and not 100 <= status < 200:
        rec.status, rec.headers = status, h
        return True
    return False


def encode_headers(headers):
    """[(name, value)] as str -> as latin-1 bytes (aioquic's send_headers)."""
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


def with_token_query(a, path):
    """path plus ?NAME=T (or &NAME=T) under --token T --token-query NAME."""
    if a.token and a.token_query:
        path += ("&" if "?" in path else "?") + f"{a.token_query}={a.token}"
    return path


def auth_headers(a):
    """`authorization: Bearer T` for --token T (unless --token-query puts it in the path), then the
    --header 'NAME: VALUE' extras (names lowercased)."""
    h = [("authorization", f"Bearer {a.token}")] if a.token and not getattr(a, "token_query", None) else []
    for x in a.header:
        k, _, v = x.partition(":")
        h.append((k.strip().lower(), v.strip()))
    return h


# --- HTTP/3 connections ---------------------------------------------------------------------------
class DatagramH3(H3Connection):
    """aioquic's H3Connection (WebTransport off) with SETTINGS_H3_DATAGRAM=1 in our SETTINGS when
    `datagrams` (aioquic adds it only with enable_webtransport)."""

    def __init__(self, quic, datagrams):
        self.datagrams = datagrams   # read by _get_local_settings, called from super().__init__
        super().__init__(quic, enable_webtransport=False)

    def _get_local_settings(self):
        """aioquic's SETTINGS (ENABLE_CONNECT_PROTOCOL=1 among them) + H3_DATAGRAM=1 if datagrams."""
        s = super()._get_local_settings()
        if self.datagrams:
            s[Setting.H3_DATAGRAM] = 1
        return s


WT_ENABLED = 0x2C7CF000   # draft-ietf-webtrans-http3-15 SETTINGS_WT_ENABLED


class WebTransportH3(H3Connection):
    """aioquic's H3Connection with WebTransport on. open_wt() fixes an aioquic gap: the peer's bytes
    on a bidi WT stream *we* opened carry no 0x41 signal, and aioquic would parse them as HTTP/3
    frames; pre-registering the stream as WEBTRANSPORT_STREAM makes them arrive as
    WebTransportStreamDataReceived."""

    def __init__(self, quic, draft15=False):
        self.draft15 = draft15
        super().__init__(quic, enable_webtransport=True)

    def _get_local_settings(self):
        """draft15: SETTINGS_WT_ENABLED (0x2c7cf000) = 1 instead of draft-02's ENABLE_WEBTRANSPORT."""
        settings = super()._get_local_settings()
        if self.draft15:
            del settings[Setting.ENABLE_WEBTRANSPORT]
            settings[WT_ENABLED] = 1
        return settings

    def open_wt(self, session_id, uni):
        """Opens a WT stream (uni or bidi) of session session_id: its stream id."""
        sid = self.create_webtransport_stream(session_id, is_unidirectional=uni)
        if not uni:
            st = H3Stream(sid)
            st.frame_type, st.session_id = FrameType.WEBTRANSPORT_STREAM, session_id
            self._stream[sid] = st
        return sid


def send_fin(h3, quic, sid):
    """FIN on a request stream without an empty DATA frame (aioquic's send_data(b"", True) would add
    one). False if the stream was reset or is gone."""
    hs = h3._stream.get(sid)
    if hs is not None:
        hs.sending_ended = True
    try:
        quic.send_stream_data(sid, b"", end_stream=True)
    except (ValueError, RuntimeError):
        return False
    return True


def abort_stream(quic, sid, code):
    """RESET_STREAM + STOP_SENDING with `code` (nothing if the stream is gone)."""
    try:
        quic.reset_stream(sid, code)
        quic.stop_stream(sid, code)
    except ValueError:
        pass


# --- QUIC configuration and UDP sockets -----------------------------------------------------------
def server_config(a, alpn="h3", datagrams=True, **kw):
    """QuicConfiguration of a server: ALPN `alpn`, --cert/--key, --max-datagram-size, --idle-timeout,
    the max_datagram_frame_size transport parameter when `datagrams`, plus kw."""
    cfg = QuicConfiguration(is_client=False, alpn_protocols=[alpn], max_datagram_size=a.max_datagram_size,
                            idle_timeout=a.idle_timeout,
                            max_datagram_frame_size=DATAGRAM_FRAME_SIZE if datagrams else None, **kw)
    cfg.load_cert_chain(a.cert, a.key)
    return cfg


def client_config(a, host, **kw):
    """QuicConfiguration of a client: ALPN h3, server name --sni or `host`, --insecure, --cafile, plus kw."""
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name=a.sni or host, **kw)
    if a.insecure:
        cfg.verify_mode = ssl.CERT_NONE
    if a.cafile:
        cfg.load_verify_locations(cafile=a.cafile)
    return cfg


class Fail(Exception):
    """The run did not meet expectations (exit 1)."""


class AlpnFail(Fail):
    """The server did not select h3 (exit 2)."""


def udp_socket(family):
    """A UDP socket with BUFFER-sized receive and send buffers."""
    s = socket.socket(family, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        s.setsockopt(socket.SOL_SOCKET, opt, BUFFER)
    return s


def bind_udp(listen):
    """--listen HOST:PORT ([v6]:port ok, port 0 = any) -> a bound non-blocking UDP socket."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    sock = udp_socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.bind((host, int(port)))
    sock.setblocking(False)
    return sock


def resolve(connect):
    """--connect HOST:PORT -> (host, address family, socket address); Fail if it does not resolve."""
    host, _, port = connect.rpartition(":")
    host = host.strip("[]")
    try:
        fam, _, _, _, addr = socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM)[0]
    except (OSError, ValueError) as e:
        raise Fail(f"resolve {connect}: {e}")
    return host, fam, addr


def connected_udp(family, addr, connect, bind=None, buffers=True):
    """A non-blocking UDP socket connected to addr (from local address `bind`, any port, if given;
    with BUFFER-sized buffers unless not `buffers`); Fail naming `connect` if that fails."""
    s = udp_socket(family) if buffers else socket.socket(family, socket.SOCK_DGRAM)
    try:
        if bind:
            s.bind((bind, 0))
        s.connect(addr)
    except OSError as e:
        s.close()
        raise Fail(f"UDP socket to {connect}: {e}")
    s.setblocking(False)
    return s


# --- servers: asyncio + aioquic, up to 64 datagrams per wake-up -----------------------------------
class UdpOut:
    """The datagram 'transport' handed to aioquic: sendto() straight on the non-blocking socket (a
    datagram that does not fit in the socket buffer is dropped; QUIC recovers). Reading is done by
    serve()'s drain(), which takes up to 64 datagrams per wake-up (asyncio's transport takes one)."""

    def __init__(self, sock):
        self.sock = sock

    def sendto(self, data, addr):
        """Sends now, or drops the datagram."""
        try:
            self.sock.sendto(data, addr)
        except OSError:
            pass

    def close(self):
        self.sock.close()

    def get_extra_info(self, name, default=None):
        """asyncio transport API: the socket."""
        return self.sock if name == "socket" else default


class ServerConnection(QuicConnectionProtocol):
    """One server-side QUIC connection, numbered c1, c2, ... (self.cid) in the order they come, with
    the command line in self.a. While serve() reads a batch of datagrams they go to aioquic without
    aioquic's transmit() per datagram; after the batch each connection that got one runs after_batch()
    (one transmit())."""
    count = 0
    batch, dirty = False, set()   # while a batch of datagrams is read: who needs a transmit() after

    def __init__(self, quic, a, **kw):
        super().__init__(quic, **kw)
        ServerConnection.count += 1
        self.cid, self.a = ServerConnection.count, a
        self.h3 = None
        self.closed, self.tx_soon = False, False

    def datagram_received(self, data, addr):
        """A datagram for this connection: to aioquic; during a batch without transmit()."""
        if not ServerConnection.batch:
            return super().datagram_received(data, addr)
        self._quic.receive_datagram(data, addr, now=self._loop.time())
        self._process_events()
        ServerConnection.dirty.add(self)

    def after_batch(self):
        """After serve() read a batch that had datagrams for this connection."""
        self.transmit()

    def soon(self):
        """transmit() once the running callbacks are done (coalesces writes)."""
        if not self.tx_soon:
            self.tx_soon = True
            self._loop.call_soon(self.tx)

    def tx(self):
        """transmit() now."""
        self.tx_soon = False
        self.transmit()

    def log_closed(self, e, extra=""):
        """ConnectionTerminated: mark the connection closed, log `conn c<n>: closed ...`."""
        self.closed = True
        log(f"conn c{self.cid}: closed code=0x{e.error_code:x} frame_type={e.frame_type} "
            f"reason={e.reason_phrase!r}{extra}")

    def reset(self, st, code):
        """RESET_STREAM + STOP_SENDING on st (a stream record with .sid and .note)."""
        abort_stream(self._quic, st.sid, code)
        st.note += f" reset-sent=0x{code:x}"
        self.soon()


async def serve(cfg, listen, create_protocol, **server_kw):
    """QUIC server on --listen: prints exactly `listening <port>` on stdout once bound, then serves
    until cancelled. create_protocol: a ServerConnection factory (quic, **kw)."""
    sock = bind_udp(listen)
    server = QuicServer(configuration=cfg, create_protocol=create_protocol, **server_kw)
    server.connection_made(UdpOut(sock))

    def drain():   # up to 64 datagrams per wake-up, then one transmit() per connection
        ServerConnection.batch = True
        try:
            for _ in range(64):
                try:
                    data, addr = sock.recvfrom(65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    continue
                server.datagram_received(data, addr)
        finally:
            ServerConnection.batch = False
            for p in ServerConnection.dirty:
                p.after_batch()
            ServerConnection.dirty.clear()

    asyncio.get_running_loop().add_reader(sock.fileno(), drain)
    print(f"listening {sock.getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


def run_server(cfg, listen, create_protocol, **server_kw):
    """A server's main loop: aioquic's own logging off (closes are logged as conn lines), serve()
    until SIGINT."""
    logging.getLogger("quic").setLevel(logging.CRITICAL)
    try:
        asyncio.run(serve(cfg, listen, create_protocol, **server_kw))
    except KeyboardInterrupt:
        pass


# --- clients: aioquic sans-IO on one connected UDP socket, select() loop --------------------------
def poll_quic(quic, sock, wait, read, events, paused_until=0.0):
    """One turn of a sans-IO client's socket loop: select() on sock for up to `wait` s (less when
    aioquic's timer is due sooner) and read() if readable (while paused_until, sleep instead, at most
    until then); then, when aioquic's timer is due, run it and events()."""
    timer = quic.get_timer()
    if timer is not None:
        wait = min(wait, max(0.0, timer - time.monotonic()))
    if paused_until:
        time.sleep(min(wait, max(0.0, paused_until - time.monotonic())))
    elif select.select([sock], [], [], wait)[0]:
        read()
    timer = quic.get_timer()
    if timer is not None and time.monotonic() >= timer:
        quic.handle_timer(now=time.monotonic())
        events()


PROGRESS = (qe.StreamDataReceived, qe.StreamReset, qe.StopSendingReceived, qe.HandshakeCompleted,
            qe.DatagramFrameReceived)   # QUIC events that count as progress for --timeout


class QuicClient:
    """A client connection to --connect (ALPN h3, --sni/--cafile/--insecure, --idle-timeout,
    --max-datagram-size, cfg_kw for the rest of the QuicConfiguration) from a connected UDP socket
    (from --bind's address if given). Subclasses provide new_h3() (called before the handshake
    starts) and may override quic_event(e) (QUIC events but HandshakeCompleted), h3_event(he),
    events_done() (after a batch of events), pump() (write what is queued) and pause_ended(now).
    self.dead: why the connection is unusable; self.close_info: the CONNECTION_CLOSE seen."""
    POLL = 0.05   # longest select() wait in loop()

    def __init__(self, a, bind=None, **cfg_kw):
        self.a, self.timeout, self.deadline = a, a.timeout, time.monotonic() + a.deadline
        host, self.family, self.peer = resolve(a.connect)
        cfg = client_config(a, host, max_datagram_size=a.max_datagram_size, idle_timeout=a.idle_timeout,
                            **cfg_kw)
        self.quic = QuicConnection(configuration=cfg)
        self.sock = self._socket(bind)
        self.h3 = self.new_h3()
        self.quic.connect(self.peer, now=time.monotonic())
        self.streams = {}   # sid -> stream record; their acknowledged bytes count as progress
        self.dead = self.close_info = self.alpn = None
        self.alpn_fail = self.closing = self.handshake_done = False
        self.events, self.paused_until = 0, 0.0
        self.flush()

    def new_h3(self):
        """The H3Connection for self.quic."""
        raise NotImplementedError

    def _socket(self, bind):
        """A new UDP socket connected to the peer (from address bind, any port, if given)."""
        return connected_udp(self.family, self.peer, self.a.connect, bind)

    # --- socket loop -----------------------------------------------------------------------------
    def _mark(self):
        """What counts as progress: (events seen, stream bytes of ours acknowledged)."""
        acked = sum(qs.sender._buffer_start for sid in self.streams
                    if (qs := self.quic._streams.get(sid)) is not None)
        return self.events, acked

    def loop(self, cond, what):
        """Run until cond(). Fail after --timeout s without progress (an event or more of our stream
        bytes acknowledged; not while paused) or past --deadline; AlpnFail if ALPN h3 failed."""
        last, mark = time.monotonic(), self._mark()
        while not cond():
            if self.alpn_fail:
                raise AlpnFail(f"ALPN did not negotiate h3 ({self.dead or self.alpn!r})")
            if self.dead:
                raise Fail(f"{self.dead} (while waiting for {what})")
            self.pump()
            self.flush()
            now = time.monotonic()
            if self.paused_until and now >= self.paused_until:
                self.paused_until, last = 0.0, now
                self.pause_ended(now)
            m = self._mark()
            if m != mark:
                mark, last = m, now
            elif not self.paused_until and now - last > self.timeout:
                raise Fail(f"timeout: {self.timeout}s without progress while waiting for {what}")
            if now > self.deadline:
                raise Fail(f"deadline of {self.a.deadline}s passed while waiting for {what}")
            poll_quic(self.quic, self.sock, self.POLL, self._read, self._events, self.paused_until)

    def pump(self):
        """Hands queued stream data to aioquic (called on each turn of loop())."""

    def pause_ended(self, now):
        """self.paused_until has passed (the socket is read again)."""

    def flush(self):
        """Sends what aioquic has queued; a refused or failed send marks the connection dead."""
        for data, _addr in self.quic.datagrams_to_send(now=time.monotonic()):
            try:
                self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                pass   # dropped: QUIC loss recovery resends (an HTTP datagram in it is lost)
            except ConnectionRefusedError:
                self.dead = self.dead or f"connection refused (ICMP port unreachable from {self.a.connect})"
            except OSError as e:
                self.dead = self.dead or f"send failed: {e}"
        self._check_close()

    def _read(self):
        """Reads up to 256 datagrams into aioquic (events handled every 32): how many."""
        got = 0
        for _ in range(256):
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
            got += 1
            if got % 32 == 0:
                self._events()
        if got:
            self._events()
        return got

    def _events(self):
        """Handles aioquic's pending events: counts progress, notes the handshake and ALPN, passes the
        others to quic_event(), and each to the H3 layer (its events to h3_event())."""
        while (e := self.quic.next_event()) is not None:
            if isinstance(e, PROGRESS):
                self.events += 1
            if isinstance(e, qe.HandshakeCompleted):
                self.handshake_done, self.alpn = True, e.alpn_protocol
                if e.alpn_protocol != "h3":
                    self.alpn_fail = True
            else:
                self.quic_event(e)
            for he in self.h3.handle_event(e):
                self.h3_event(he)
        self.events_done()
        self._check_close()

    def quic_event(self, e):
        """A QUIC event other than HandshakeCompleted (before the H3 layer sees it)."""

    def h3_event(self, he):
        """An H3 event."""

    def events_done(self):
        """After a batch of events (before the close check)."""

    def _check_close(self):
        """Records a CONNECTION_CLOSE (close_info, dead; alpn_fail for 0x178 before the handshake)."""
        ev = self.quic._close_event
        if ev is None or self.close_info is not None or self.closing:
            return
        by_peer = self.quic._state == QuicConnectionState.DRAINING
        self.close_info = {"error_code": ev.error_code, "frame_type": ev.frame_type,
                           "reason": ev.reason_phrase, "by_peer": by_peer}
        who = "peer closed the connection" if by_peer else "connection closed by aioquic"
        self.dead = self.dead or f"{who}: CONNECTION_CLOSE 0x{ev.error_code:x} {ev.reason_phrase!r}"
        if ev.error_code == ALPN_ALERT and not self.handshake_done:
            self.alpn_fail = True

    # --- phases ----------------------------------------------------------------------------------
    def wait_handshake(self):
        """loop() until the handshake is done; AlpnFail unless the ALPN is h3."""
        self.loop(lambda: self.handshake_done, "the QUIC handshake")
        if self.alpn != "h3":
            raise AlpnFail(f"ALPN did not negotiate h3 (server selected {self.alpn!r})")

    def wait_settings(self):
        """Handshake (ALPN h3, else AlpnFail), then the server's SETTINGS."""
        self.wait_handshake()
        self.loop(lambda: self.h3.received_settings is not None, "the server's SETTINGS")

    def need_connect_protocol(self):
        """wait_settings(), then Fail unless they carry ENABLE_CONNECT_PROTOCOL=1."""
        self.wait_settings()
        if self.h3.received_settings.get(Setting.ENABLE_CONNECT_PROTOCOL) != 1:
            raise Fail("peer did not enable extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL != 1)")

    def stream_room(self, sid):
        """Our sending side of stream sid: None if it is gone or reset (e.g. after the peer's
        STOP_SENDING), else whether fewer than SEND_HIGH bytes wait unacknowledged in QUIC."""
        qs = self.quic._streams.get(sid)
        if qs is None or qs.sender._reset_error_code is not None:
            return None
        return len(qs.sender._buffer) < SEND_HIGH

    def peer_datagrams(self):
        """The peer sent SETTINGS_H3_DATAGRAM=1 and the max_datagram_frame_size transport parameter."""
        return (self.h3.received_settings.get(Setting.H3_DATAGRAM) == 1
                and self.quic._remote_max_datagram_frame_size is not None)

    def close(self):
        """CONNECTION_CLOSE H3_NO_ERROR (after HANDSHAKE_DONE, else aioquic would send it as
        APPLICATION_ERROR 0xc; waits up to 1 s for it), then close the socket."""
        if not self.dead:
            if self.handshake_done and not self.quic._handshake_confirmed:
                end = time.monotonic() + 1.0
                try:
                    self.loop(lambda: self.quic._handshake_confirmed or time.monotonic() > end,
                              "HANDSHAKE_DONE")
                except Fail:
                    pass
            self.quic.close(error_code=H3_NO_ERROR)
            self.closing = True
            self.flush()
        self.sock.close()


# --- command lines --------------------------------------------------------------------------------
def parser(doc):
    """ArgumentParser showing the script's docstring as written."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_listen(p):
    """--listen (UDP)."""
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT", help="UDP; port 0 = any free port")


def server_parser(doc):
    """parser() with --listen, --cert, --key."""
    p = parser(doc)
    add_listen(p)
    p.add_argument("--cert", required=True, metavar="PEM", help="certificate chain (PEM)")
    p.add_argument("--key", required=True, metavar="PEM", help="private key (PEM)")
    return p


def add_connect(p, peer="server"):
    """--connect, --cafile, --sni, --insecure."""
    p.add_argument("--connect", required=True, metavar="HOST:PORT", help=f"{peer} UDP address ([::1]:443 ok)")
    p.add_argument("--cafile", help="PEM CA bundle to verify the server certificate")
    p.add_argument("--sni", help="TLS server name (default: the --connect host; IPs send no SNI)")
    p.add_argument("--insecure", action="store_true", help="skip TLS certificate verification")


def add_timeouts(p, deadline):
    """--timeout (without progress), --deadline (whole run)."""
    p.add_argument("--timeout", type=float, default=20.0, help="max seconds without progress")
    p.add_argument("--deadline", type=float, default=deadline, help="max seconds for the whole run")


def add_quic(p, window=False):
    """--idle-timeout, [--window], --max-datagram-size."""
    p.add_argument("--idle-timeout", type=float, default=60.0, help="QUIC max_idle_timeout (s)")
    if window:
        p.add_argument("--window", type=int, default=1 << 20,
                       help="initial_max_data and initial_max_stream_data_* (aioquic doubles them as used)")
    p.add_argument("--max-datagram-size", type=int, default=1452,
                   help="largest UDP payload we send (aioquic does no PMTU discovery; >= 1200)")
