#!/usr/bin/env python3
"""HTTP/3 MASQUE proxy (aioquic, asyncio): the upstream peer for the edge's CONNECT-UDP (RFC 9298) and
CONNECT-IP (RFC 9484) relays. A test tool, not a proxy: everything it does is logged on stderr.

QUIC v1 + TLS 1.3 (ALPN h3) with --cert/--key (PEM). Prints exactly `listening <port>` (UDP) on stdout
once bound. SETTINGS: ENABLE_CONNECT_PROTOCOL=1 and H3_DATAGRAM=1 with the QUIC max_datagram_frame_size
transport parameter (not with --no-datagram: then every HTTP datagram we send is a DATAGRAM capsule),
plus aioquic's QPACK_MAX_TABLE_CAPACITY=4096, QPACK_BLOCKED_STREAMS=16 and the reserved setting 0x21=1.

  extended CONNECT :protocol connect-udp, :path /.well-known/masque/udp/{host}/{port}/[?query]
      (percent-decoded host, e.g. 2001%3Adb8%3A%3A1): a connected UDP socket to host:port, then 200 with
      capsule-protocol: ?1 (a request without `capsule-protocol: ?1` is logged and still accepted).
      Bad path -> 400, resolve/socket error -> 502.
      HTTP datagram, context 0 -> its payload is sent to the target; each UDP reply goes back as an HTTP
      datagram with context 0 (as a DATAGRAM capsule instead when the payload came in one, or when the
      peer has no HTTP datagrams). Any other context id -> the whole datagram is echoed back unchanged.
      The stream is a capsule stream (RFC 9297): DATAGRAM capsules (0x00) are handled like datagrams and
      answered with capsules; other capsule types are logged (`capsule type=0x.. len=..`) and echoed
      back byte for byte. A context-0 payload over 65527 bytes aborts the stream (RESET_STREAM +
      STOP_SENDING H3_MESSAGE_ERROR 0x10e; RFC 9298 s5 says "abort" without a code).
      Client FIN -> UDP socket closed, FIN back. Client RESET_STREAM -> UDP socket closed.
  extended CONNECT :protocol connect-ip, any path: 200 with capsule-protocol: ?1, then capsules
      ADDRESS_ASSIGN (0x01: request id 0, 192.0.2.1/32) and ROUTE_ADVERTISEMENT (0x03: IPv4
      0.0.0.0-255.255.255.255, protocol 0). ADDRESS_REQUEST (0x02) -> ADDRESS_ASSIGN with the same
      request ids (192.0.2.2/32, or 2001:db8::2/128 for an IPv6 request). Every capsule in and out is
      logged with the sha256 of its exact bytes (`capsule in|out type=0x.. len=.. sha=..`).
      HTTP datagram / DATAGRAM capsule context 0 (an IP packet) -> echoed with source and destination
      addresses swapped (IPv4 bytes 12-19, IPv6 bytes 8-39), nothing else changed: the IPv4 header
      checksum and the UDP/TCP pseudo-header checksums are sums, so a swap keeps them valid. Other
      contexts and unknown capsule types are echoed unchanged.
  other :protocol (or plain CONNECT) -> 501; any other method -> 404.

One line per stream on stderr when it ends: `stream c<conn>#<sid> <kind> <method> <authority> <path>
proto= status= target= dgrams_in= udp_out= udp_in= dgrams_out= capsules_in= capsules_out= ctx_seen=[0,2]
[<drop counters>] <notes> saw=<request headers as JSON, last on the line>`, plus `conn c<n>: closed ...`
per connection. dgrams_* count QUIC DATAGRAM frames, capsules_* all capsules (DATAGRAM ones included).
aioquic queues DATAGRAM frames without a size check and never drops them, so a datagram larger than a
packet would block the queue for good: we drop (and count `dgrams_too_big=`) any HTTP datagram above
--max-datagram-size - 44 bytes, and drop (`dgrams_queue_drop=`) when 4096 datagrams are already queued.
"""
import asyncio
import ipaddress
import json
import re
import socket
from urllib.parse import unquote

from aioquic.h3.connection import Setting
from aioquic.h3.events import DatagramReceived, DataReceived, HeadersReceived
import aioquic.quic.events as qe

from quicpeer import (CAP_ADDRESS_ASSIGN, CAP_ADDRESS_REQUEST, CAP_DATAGRAM, CAP_ROUTE_ADVERTISEMENT,
                      DGRAM_OVERHEAD, CapsuleError, Capsules, DatagramH3, ServerConnection, add_quic, capsule,
                      header_dict, log, read_varint, run_server, send_fin, server_config, server_parser, sha,
                      udp_socket, varint)

H3_INTERNAL_ERROR, H3_MESSAGE_ERROR = 0x102, 0x10E
MAX_UDP_PAYLOAD = 65527
MAX_CAPSULE = 1 << 20       # a longer capsule aborts the stream (H3_MESSAGE_ERROR)
DGRAM_QUEUE_MAX = 4096      # HTTP datagrams waiting in aioquic before we drop new ones
UDP_PATH = re.compile(r"/\.well-known/masque/udp/([^/?#]+)/([^/?#]+)/")


def addr_list(value):
    """ADDRESS_ASSIGN / ADDRESS_REQUEST value -> [(request id, version, ip string, prefix)]."""
    out, i = [], 0
    while i < len(value):
        r = read_varint(value, i)
        if r is None or r[1] >= len(value):
            raise CapsuleError("truncated address")
        ver, i = value[r[1]], r[1] + 1
        n = {4: 4, 6: 16}.get(ver)
        if n is None or i + n + 1 > len(value):
            raise CapsuleError(f"bad address (ip version {ver})")
        out.append((r[0], ver, str(ipaddress.ip_address(bytes(value[i:i + n]))), value[i + n]))
        i += n + 1
    return out


def addr_value(items):
    return b"".join(varint(rid) + bytes([ver]) + ipaddress.ip_address(ip).packed + bytes([plen])
                    for rid, ver, ip, plen in items)


def udp_error(e):
    """Counter name for a UDP socket error (ICMP port unreachable -> udp_refused)."""
    return "udp_refused" if isinstance(e, ConnectionRefusedError) else f"udp_error_{getattr(e, 'errno', 0)}"


def swap_ip(pkt):
    """IP packet with source and destination swapped (checksums stay valid), else unchanged."""
    if len(pkt) >= 20 and pkt[0] >> 4 == 4:
        return pkt[:12] + pkt[16:20] + pkt[12:16] + pkt[20:]
    if len(pkt) >= 40 and pkt[0] >> 4 == 6:
        return pkt[:8] + pkt[24:40] + pkt[8:24] + pkt[40:]
    return pkt


class MStream:
    def __init__(self, sid, headers):
        self.sid = sid
        self.h = header_dict(headers)
        self.kind, self.status, self.target, self.note = "request", None, None, ""
        self.open = self.done = False
        self.caps = Capsules(MAX_CAPSULE)
        self.pending = []            # context-0 payloads (with via_capsule flag) before the socket is up
        self.udp = None
        self.via_capsule = {}        # sha of a payload that came in a capsule -> count (reply in one too)
        self.ctx_seen = set()
        self.n = dict(dgrams_in=0, udp_out=0, udp_in=0, dgrams_out=0, capsules_in=0, capsules_out=0)
        self.drops = {}


class Masque(ServerConnection):
    def __init__(self, quic, a, **kw):
        super().__init__(quic, a, **kw)
        self.streams, self.seen, self.tasks = {}, set(), set()
        self.unknown_dgrams = 0
        self.dgram_max = a.max_datagram_size - DGRAM_OVERHEAD

    # --- plumbing ----------------------------------------------------------------------------
    def drop(self, st, why):
        st.drops[why] = st.drops.get(why, 0) + 1

    def peer_datagrams(self):
        rs = self.h3.received_settings or {}
        return (not self.a.no_datagram and rs.get(Setting.H3_DATAGRAM) == 1
                and self._quic._remote_max_datagram_frame_size is not None)

    def send_dgram(self, st, payload):
        """One HTTP datagram (context id + data) on st: a QUIC DATAGRAM, or a capsule without them."""
        if not self.peer_datagrams():
            return self.send_capsule(st, capsule(CAP_DATAGRAM, payload))
        if len(varint(st.sid // 4)) + len(payload) > self.dgram_max:
            return self.drop(st, "dgrams_too_big")
        if len(self._quic._datagrams_pending) >= DGRAM_QUEUE_MAX:
            return self.drop(st, "dgrams_queue_drop")
        self.h3.send_datagram(st.sid, payload)
        st.n["dgrams_out"] += 1
        self.soon()

    def send_capsule(self, st, raw, logged=False):
        if st.done:
            return
        try:
            self.h3.send_data(st.sid, raw, False)
        except Exception as e:   # stream reset / gone
            st.note += f" send-failed={e!r}"
            return
        st.n["capsules_out"] += 1
        if logged:
            log(f"stream c{self.cid}#{st.sid} capsule out type=0x{read_varint(raw, 0)[0]:x} len={len(raw)} "
                f"sha={sha(raw)}")
        self.soon()

    def respond(self, st, status, headers=(), end=False):
        st.status = status
        hdrs = [(b":status", str(status).encode())] + [(k.encode(), v.encode()) for k, v in headers]
        self.h3.send_headers(st.sid, hdrs, end_stream=end)
        self.soon()

    def fin(self, st):
        send_fin(self.h3, self._quic, st.sid)
        self.soon()

    def finish(self, st, why=""):
        """Stream over: close the UDP socket, log the stream line once."""
        if st.done:
            return
        st.done = True
        st.note += why
        if st.udp is not None:
            try:
                self._loop.remove_reader(st.udp.fileno())
            except (ValueError, OSError):
                pass
            st.udp.close()
        self.streams.pop(st.sid, None)
        h = st.h
        n = " ".join(f"{k}={v}" for k, v in st.n.items())
        d = "".join(f" {k}={v}" for k, v in st.drops.items())
        log(f"stream c{self.cid}#{st.sid} {st.kind} {h.get(':method', '-')} {h.get(':authority', '-')} "
            f"{h.get(':path', '-')} proto={h.get(':protocol')} status={st.status} target={st.target} {n} "
            f"ctx_seen=[{','.join(map(str, sorted(st.ctx_seen)))}]{d}{st.note} "
            f"saw={json.dumps(h, separators=(',', ':'))}")

    # --- events ------------------------------------------------------------------------------
    def quic_event_received(self, e):
        if isinstance(e, qe.ProtocolNegotiated) and self.h3 is None:
            self.h3 = DatagramH3(self._quic, not self.a.no_datagram)
        st = self.streams.get(getattr(e, "stream_id", -1))
        if isinstance(e, qe.StreamReset) and st:
            self.finish(st, f" reset-by-peer=0x{e.error_code:x}")
        elif isinstance(e, qe.StopSendingReceived) and st:
            st.note += f" stop-sending-by-peer=0x{e.error_code:x}"
        elif isinstance(e, qe.ConnectionTerminated):
            self.log_closed(e, f" dgrams_unknown_stream={self.unknown_dgrams}" if self.unknown_dgrams else "")
            for s in list(self.streams.values()):
                self.finish(s, " connection-closed")
        if self.h3 is not None:
            for he in self.h3.handle_event(e):
                try:
                    self.h3_event(he)
                except Exception as ex:   # keep serving, but say what broke
                    s = self.streams.get(he.stream_id)
                    if s is not None:
                        self.reset(s, H3_INTERNAL_ERROR)
                        self.finish(s, f" handler-error={ex!r}")

    def h3_event(self, he):
        st = self.streams.get(he.stream_id)
        if isinstance(he, HeadersReceived) and st is None:
            if he.stream_id % 4 != 0 or he.stream_id in self.seen:
                return
            self.seen.add(he.stream_id)
            st = self.streams[he.stream_id] = MStream(he.stream_id, he.headers)
            self.on_request(st)
        elif isinstance(he, DataReceived) and st and st.open and he.data:
            try:
                for ctype, raw, value in st.caps.feed(he.data):
                    st.n["capsules_in"] += 1
                    (self.udp_capsule if st.kind == "connect-udp" else self.ip_capsule)(st, ctype, raw, value)
                    if st.done:
                        return
            except CapsuleError as ex:
                log(f"stream c{self.cid}#{st.sid} bad capsule stream: {ex}")
                self.reset(st, H3_MESSAGE_ERROR)
                return self.finish(st, " bad-capsule")
        elif isinstance(he, DatagramReceived):
            if st is None or not st.open:
                if st is None and self.unknown_dgrams == 0:
                    log(f"conn c{self.cid}: datagram for unknown stream {he.stream_id} (dropped)")
                self.unknown_dgrams += st is None
                return
            st.n["dgrams_in"] += 1
            self.on_dgram(st, he.data)
            return
        if st and getattr(he, "stream_ended", False) and not st.done:
            if st.open and st.caps.buf:
                st.note += f" trailing-partial-capsule={len(st.caps.buf)}"
            if st.status is not None and 200 <= st.status < 300:
                self.fin(st)
            self.finish(st, " fin")

    def on_request(self, st):
        h = st.h
        method, proto = h.get(":method"), h.get(":protocol")
        if method != "CONNECT":
            self.respond(st, 404, [("content-length", "0")], end=True)
            return self.finish(st)
        if proto not in ("connect-udp", "connect-ip"):
            st.kind = "ext-connect" if proto else "connect"
            self.respond(st, 501, [("content-length", "0")], end=True)
            return self.finish(st)
        st.kind = proto
        if h.get("capsule-protocol") != "?1":
            st.note += f" capsule-protocol-missing({h.get('capsule-protocol')!r})"
            log(f"stream c{self.cid}#{st.sid} {proto}: request has no 'capsule-protocol: ?1' (accepted)")
        if proto == "connect-ip":
            self.respond(st, 200, [("capsule-protocol", "?1")])
            st.open = True
            self.send_capsule(st, capsule(CAP_ADDRESS_ASSIGN, addr_value([(0, 4, "192.0.2.1", 32)])), True)
            self.send_capsule(st, capsule(CAP_ROUTE_ADVERTISEMENT, bytes([4]) + bytes(4) + b"\xff" * 4 + b"\0"),
                              True)
            return
        m = UDP_PATH.fullmatch(h.get(":path", "").split("?")[0])
        port = unquote(m.group(2)) if m else ""
        if not m or not port.isdigit() or not 0 < int(port) < 65536:
            st.note += " bad-path"
            self.respond(st, 400, [("content-length", "0")], end=True)
            return self.finish(st)
        host = unquote(m.group(1))
        st.target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        st.open = True   # capsules / datagrams are queued until the socket is up
        task = asyncio.ensure_future(self.open_udp(st, host.strip("[]"), int(port)))
        self.tasks.add(task)   # a reference, so the task is not garbage-collected while it runs
        task.add_done_callback(self.tasks.discard)

    async def open_udp(self, st, host, port):
        try:
            ai = await asyncio.wait_for(self._loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM),
                                        self.a.timeout)
            fam, _, _, _, addr = ai[0]
            s = udp_socket(fam)
            s.setblocking(False)
            s.connect(addr)
        except (OSError, asyncio.TimeoutError, UnicodeError) as e:
            if not st.done:
                st.open = False
                self.respond(st, 502, [("content-length", "0")], end=True)
                self.finish(st, f" udp-failed={e!r}")
            return
        if st.done:
            return s.close()
        st.udp = s
        self._loop.add_reader(s.fileno(), self.udp_readable, st)
        self.respond(st, 200, [("capsule-protocol", "?1")])
        pending, st.pending = st.pending, []
        for payload, via_capsule in pending:
            self.udp_send(st, payload, via_capsule)

    # --- connect-udp -------------------------------------------------------------------------
    def on_dgram(self, st, data, raw=None):
        """An HTTP datagram payload (context id + data); raw = the DATAGRAM capsule it came in."""
        r = read_varint(data, 0)
        if r is None:
            return self.drop(st, "dgrams_no_context")
        ctx = r[0]
        st.ctx_seen.add(ctx)
        if st.kind == "connect-ip":
            out = varint(0) + swap_ip(data[r[1]:]) if ctx == 0 else data
        elif ctx != 0:
            out = data
        else:
            payload = data[r[1]:]
            if len(payload) > MAX_UDP_PAYLOAD:
                log(f"stream c{self.cid}#{st.sid} context-0 payload of {len(payload)} bytes > {MAX_UDP_PAYLOAD}: "
                    f"abort H3_MESSAGE_ERROR")
                self.reset(st, H3_MESSAGE_ERROR)
                return self.finish(st, f" oversize-payload={len(payload)}")
            if st.udp is None:
                st.pending.append((payload, raw is not None))
            else:
                self.udp_send(st, payload, raw is not None)
            return
        if raw is not None:   # unchanged payload: the very same capsule bytes go back
            self.send_capsule(st, raw if out is data else capsule(CAP_DATAGRAM, out), st.kind == "connect-ip")
        else:
            self.send_dgram(st, out)

    def udp_send(self, st, payload, via_capsule):
        if via_capsule and not self.a.reply_datagrams:
            k = sha(payload)
            st.via_capsule[k] = st.via_capsule.get(k, 0) + 1
        try:
            st.udp.send(payload)
            st.n["udp_out"] += 1
        except (BlockingIOError, InterruptedError):
            self.drop(st, "udp_send_drop")
        except OSError as e:   # ICMP unreachable from an earlier send, message too long, ...
            self.drop(st, udp_error(e))

    def udp_readable(self, st):
        for _ in range(64):
            try:
                data = st.udp.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self.drop(st, udp_error(e))
                continue
            st.n["udp_in"] += 1
            k = sha(data) if st.via_capsule else None
            if k is not None and st.via_capsule.get(k):
                st.via_capsule[k] -= 1
                if not st.via_capsule[k]:
                    del st.via_capsule[k]
                self.send_capsule(st, capsule(CAP_DATAGRAM, varint(0) + data))
            else:
                self.send_dgram(st, varint(0) + data)
        self.transmit()

    def udp_capsule(self, st, ctype, raw, value):
        if ctype == CAP_DATAGRAM:
            return self.on_dgram(st, value, raw)
        log(f"stream c{self.cid}#{st.sid} capsule type=0x{ctype:x} len={len(value)} (echoed)")
        self.send_capsule(st, raw)

    # --- connect-ip --------------------------------------------------------------------------
    def ip_capsule(self, st, ctype, raw, value):
        fields = ""
        try:
            if ctype in (CAP_ADDRESS_ASSIGN, CAP_ADDRESS_REQUEST):
                fields = " addrs=" + ",".join(f"{rid}:{ip}/{plen}" for rid, _v, ip, plen in addr_list(value))
        except CapsuleError as e:
            fields = f" malformed={e}"
        log(f"stream c{self.cid}#{st.sid} capsule in type=0x{ctype:x} len={len(raw)} sha={sha(raw)}{fields}")
        if ctype == CAP_DATAGRAM:
            return self.on_dgram(st, value, raw)
        if ctype == CAP_ADDRESS_REQUEST:
            try:
                req = addr_list(value)
            except CapsuleError:
                req = []
            if not req or any(rid == 0 for rid, *_ in req):   # RFC 9484 s4.7.2: abort the stream
                self.reset(st, H3_MESSAGE_ERROR)
                return self.finish(st, " bad-address-request")
            out = [(rid, ver, "192.0.2.2" if ver == 4 else "2001:db8::2", 32 if ver == 4 else 128)
                   for rid, ver, _ip, _plen in req]
            return self.send_capsule(st, capsule(CAP_ADDRESS_ASSIGN, addr_value(out)), True)
        if ctype in (CAP_ADDRESS_ASSIGN, CAP_ROUTE_ADVERTISEMENT):
            return   # the client's own assignment / routes: logged only
        self.send_capsule(st, raw, True)   # unknown / GREASE: echoed unchanged


def main():
    p = server_parser(__doc__)
    p.add_argument("--no-datagram", action="store_true",
                   help="no SETTINGS_H3_DATAGRAM / max_datagram_frame_size: HTTP datagrams go as capsules")
    p.add_argument("--reply-datagrams", action="store_true",
                   help="UDP replies go as QUIC datagrams even when the payload came in a DATAGRAM capsule")
    p.add_argument("--timeout", type=float, default=20.0, help="bound for resolving a connect-udp target")
    add_quic(p)
    a = p.parse_args()
    run_server(server_config(a, datagrams=not a.no_datagram), a.listen,
               lambda quic, **kw: Masque(quic, a, **kw))


if __name__ == "__main__":
    main()
