#!/usr/bin/env python3
"""WebTransport over HTTP/3 (draft-ietf-webtrans-http3-02, what aioquic 1.7.2 and Chromium speak) test
client for Switchyard's WebTransport relay tests (aioquic sans-IO, select() loop as in h3_client.py).

QUIC v1 + TLS 1.3 with ALPN h3 to --connect HOST:PORT. SETTINGS (aioquic, enable_webtransport=True):
QPACK_MAX_TABLE_CAPACITY=4096, QPACK_BLOCKED_STREAMS=16, ENABLE_CONNECT_PROTOCOL=1, 0x21=1,
H3_DATAGRAM(0x33)=1, ENABLE_WEBTRANSPORT(0x2b603742)=1; transport parameter max_datagram_frame_size=65536.
Waits for the server's SETTINGS and refuses (exit 1) unless they carry ENABLE_WEBTRANSPORT=1 (skip the
check with --no-settings-check), then sends the extended CONNECT:
  :method CONNECT, :protocol webtransport, :scheme https, :authority A, :path P (+ ?NAME=T with
  --token-query NAME), sec-webtransport-http3-draft02: 1, origin: https://A (--origin overrides, ''
  omits), authorization: Bearer T (--token without --token-query), --header extras.
  (--draft 15: SETTINGS_WT_ENABLED(0x2c7cf000)=1 instead of 0x2b603742, which the server must send too;
  :protocol webtransport-h3 and no draft-02 header.)
After a 2xx (session id = the CONNECT stream id):
  --send-capsule TYPE:HEX  capsules sent first on the CONNECT stream (one DATA frame each; GREASE tests)
  --bidi N      N bidi streams, stream i sends random.Random(seed + i).randbytes(B) + FIN; the echo must
                be byte-identical and end with FIN
  --uni N       N uni streams, stream i sends random.Random(seed + 1000 + i).randbytes(B) + FIN; each
                must come back, byte-identical with FIN, on one of the server's uni streams (matched by
                sha256)
  --datagrams N N datagrams `wt-dgram <i>`, counting the ones echoed back (no assertion, loss allowed)
  --expect-server-streams K  accept the server's bidi and uni streams; bidi ones are echoed (FIN after
                the server's FIN); K of each must arrive and end; their contents are reported
  --reset-bidi CODE  one more bidi stream: sends 1000 bytes, waits for their echo, then RESET_STREAM CODE
  --stop-bidi CODE   the same with STOP_SENDING CODE instead
                (CODE = a number, or wt:N for the draft's HTTP/3 mapping of WebTransport code N,
                0x52e4a40fa8db + N + N // 0x1e, as Chromium sends; the peer's RESET_STREAM /
                STOP_SENDING codes are recorded, within --grace s)
  --hold-bidi N N bidi streams that send 1000 bytes (random.Random(seed + 3000 + i)), wait for the echo
                and stay open; how they end after the session is over (a relay's WT_SESSION_GONE
                resets) is reported in `held` (waits up to --grace s)
  --close CODE:REASON  after the echoes: WT_CLOSE_SESSION (capsule 0x2843, u32 CODE + UTF-8 REASON) in
                one DATA frame with FIN on the CONNECT stream; waits up to --timeout for the server's FIN
  --expect-close  wait (bounded by --timeout) for the server's WT_CLOSE_SESSION + FIN; exit 1 without
Without --close / --expect-close the client lingers --linger s for server capsules, then closes the QUIC
connection with H3_NO_ERROR (0x100). A server WT_CLOSE_SESSION is answered with a bare FIN; the client
then waits at most --grace s more for unfinished echoes.

stdout: one JSON object {status, headers, settings, session_id, bidi: {ok, n, streams}, uni: {ok, n,
streams}, datagrams: {sent, received}, server_streams: {bidi: [...], uni: [...]}, capsules_in,
close_session, close_sent, reset_seen, held, connect_stream_fin, connect_stream_fin_sent,
connect_stream_reset, connection_close, alpn, elapsed_s, error, ok}.
Exit 0 iff the status is 2xx (or equals --expect-status) and every expectation above held (echoes
byte-identical with FIN, K server streams, --expect-close), 1 otherwise (reason on stderr and in
`error`), 2 when the server did not select ALPN h3. --timeout bounds time without progress (a QUIC
stream / H3 event, or more of our bytes acknowledged), --deadline the whole run.
"""
import hashlib
import json
import logging
import random
import struct
import sys
import time

from aioquic.h3.connection import Setting
from aioquic.h3.events import DatagramReceived, DataReceived, HeadersReceived, WebTransportStreamDataReceived
import aioquic.quic.events as qe

from quicpeer import (CLOSE_SESSION, WT_ENABLED, WT_FIRST, AlpnFail, Capsules, Fail, QuicClient, WebTransportH3, add_connect,
                      add_quic, add_timeouts, auth_headers, capsule, encode_headers, parser, send_fin, take_response,
                      with_token_query, wt_code)

CHUNK = 65536
PROBE_BYTES = 1000
KEEP = 4096                # bytes of a server stream's content kept for the report


def wt_to_h3(n):
    return WT_FIRST + n + n // 0x1E


def parse_code(x):
    if x is None:
        return None
    if x.startswith("wt:"):
        return wt_to_h3(int(x[3:], 0))
    return int(x, 0)


class WtStream:
    def __init__(self, sid, kind, index=None, nbytes=0, seed=None):
        self.sid, self.kind, self.index = sid, kind, index
        self.remaining, self.rng = nbytes, (random.Random(seed) if seed is not None else None)
        self.outq = bytearray()
        self.sent = self.received = 0
        self.sha_sent, self.sha_recv = hashlib.sha256(), hashlib.sha256()
        self.fin_in = self.fin_sent = False
        self.end_after = False       # FIN once outq and remaining are drained
        self.reset_stream = self.stop_sending = None   # codes from the peer
        self.local_code = None
        self.local_at = None
        self.session = None          # session id carried by the peer's stream header
        self.content = bytearray()   # server streams: first KEEP bytes

    def refill(self):
        while self.rng is not None and self.remaining > 0 and len(self.outq) < 256 * 1024:
            chunk = self.rng.randbytes(min(CHUNK, self.remaining))
            self.remaining -= len(chunk)
            self.outq += chunk

    def count(self, data):
        self.received += len(data)
        self.sha_recv.update(data)

    def echo_ok(self):
        return (self.fin_in and self.fin_sent and self.received == self.sent
                and self.sha_recv.digest() == self.sha_sent.digest() and self.reset_stream is None)

    def result(self):
        r = {"stream": self.sid, "sent": self.sent, "received": self.received,
             "sha_sent": self.sha_sent.hexdigest(), "sha_received": self.sha_recv.hexdigest(),
             "fin_in": self.fin_in, "fin_sent": self.fin_sent, "reset_stream": self.reset_stream,
             "stop_sending": self.stop_sending}
        if self.index is not None:
            r["index"] = self.index
        return r


class Client(QuicClient):
    def __init__(self, a):
        super().__init__(a, max_datagram_frame_size=65536)
        # session
        self.session = None
        self.status, self.headers = None, {}
        self.connect_fin = self.connect_fin_sent = False
        self.connect_reset = None
        self.caps = Capsules()   # the CONNECT stream's DATA
        self.capsules_in, self.close_in, self.close_in_at, self.close_sent = [], None, None, None
        self.dgram_payloads, self.dgram_recv, self.dgram_other = set(), 0, 0

    def new_h3(self):
        return WebTransportH3(self.quic, draft15=self.a.draft == 15)

    def loop(self, cond, what):   # and then write what the last events queued (echoes, FINs)
        super().loop(cond, what)
        self.pump()
        self.flush()

    # --- events ----------------------------------------------------------------------------------
    def quic_event(self, e):
        sid = getattr(e, "stream_id", -1)
        if isinstance(e, qe.StreamReset):
            if sid == self.session:
                self.connect_reset = e.error_code
            else:
                self.stream_for(sid).reset_stream = e.error_code
        elif isinstance(e, qe.StopSendingReceived):
            if sid == self.session:
                self.connect_reset = self.connect_reset or e.error_code
            else:
                w = self.stream_for(sid)
                w.stop_sending = e.error_code
                w.outq.clear()
                w.remaining = 0

    def stream_for(self, sid):
        w = self.streams.get(sid)
        if w is None:   # a server-initiated stream we had not seen data on yet
            w = self.streams[sid] = WtStream(sid, "srv-uni" if sid % 4 == 3 else "srv-bidi")
        return w

    def h3_event(self, he):
        sid = he.stream_id
        if isinstance(he, DatagramReceived):
            if sid == self.session and he.data in self.dgram_payloads:
                self.dgram_recv += 1
            else:
                self.dgram_other += 1
            return
        if sid == self.session and self.session is not None:
            if isinstance(he, HeadersReceived):
                take_response(self, he.headers)
            elif isinstance(he, DataReceived) and he.data:
                self.parse_capsules(he.data)
            if getattr(he, "stream_ended", False):
                self.connect_fin = True
            return
        if not isinstance(he, WebTransportStreamDataReceived):
            return
        w = self.stream_for(sid)
        w.session = he.session_id
        w.count(he.data)
        if w.kind.startswith("srv") and len(w.content) < KEEP:
            w.content += he.data[:KEEP - len(w.content)]
        if w.kind == "srv-bidi" and w.local_code is None and w.stop_sending is None:
            w.outq += he.data   # echo back
            w.sent += len(he.data)
            w.sha_sent.update(he.data)
        if he.stream_ended:
            w.fin_in = True
            if w.kind == "srv-bidi":
                w.end_after = True

    def parse_capsules(self, data):
        for ctype, raw, value in self.caps.feed(data):
            sha = hashlib.sha256(raw).hexdigest()
            self.capsules_in.append({"type": ctype, "len": len(value), "sha": sha})
            if ctype == CLOSE_SESSION and self.close_in is None:
                code = struct.unpack("!I", value[:4])[0] if len(value) >= 4 else None
                reason = value[4:]
                try:
                    text = reason.decode("utf-8")
                except UnicodeDecodeError:
                    text = None
                self.close_in = {"code": code, "reason": text, "reason_hex": reason.hex(), "sha": sha}
                self.close_in_at = time.monotonic()
                self.fin_connect()   # answer the close with our FIN

    # --- sending ---------------------------------------------------------------------------------
    def pump(self):
        if self.dead:
            return
        for w in list(self.streams.values()):
            if w.fin_sent or w.local_code is not None:
                continue
            w.refill()
            while w.outq:
                room = self.stream_room(w.sid)
                if room is None:   # STOP_SENDING: no more
                    w.outq.clear()
                    w.remaining = 0
                    w.end_after = False
                    break
                if not room:
                    break
                n = min(CHUNK, len(w.outq))
                chunk = bytes(w.outq[:n])
                del w.outq[:n]
                w.refill()
                last = w.end_after and not w.outq and w.remaining == 0
                self.quic.send_stream_data(w.sid, chunk, end_stream=last)
                if w.kind != "srv-bidi":
                    w.sent += n
                    w.sha_sent.update(chunk)
                if last:
                    w.fin_sent = True
            if not w.outq and w.remaining == 0 and w.end_after and not w.fin_sent:
                if self.stream_room(w.sid) is not None:
                    self.quic.send_stream_data(w.sid, b"", end_stream=True)
                    w.fin_sent = True

    def fin_connect(self, data=b""):
        if self.connect_fin_sent or self.session is None:
            return
        self.connect_fin_sent = True
        try:
            if data:
                self.h3.send_data(self.session, data, True)
            else:
                send_fin(self.h3, self.quic, self.session)
        except Exception:
            pass

    def open_stream(self, kind, uni, index=None, nbytes=0, seed=None):
        sid = self.h3.open_wt(self.session, uni)
        w = self.streams[sid] = WtStream(sid, kind, index, nbytes, seed)
        return w


def request_headers(a):
    h = [(":method", "CONNECT"), (":protocol", a.protocol), (":scheme", "https"), (":authority", a.authority),
         (":path", with_token_query(a, a.path))]
    if a.draft == 2:
        h.append(("sec-webtransport-http3-draft02", "1"))
    origin = f"https://{a.authority}" if a.origin is None else a.origin
    if origin:
        h.append(("origin", origin))
    return h + auth_headers(a)


def run(c, a, out):
    c.wait_settings()
    out["settings"] = {f"0x{k:x}": v for k, v in c.h3.received_settings.items()}
    wanted = (WT_ENABLED, "SETTINGS_WT_ENABLED 0x2c7cf000") if a.draft == 15 else \
        (Setting.ENABLE_WEBTRANSPORT, "SETTINGS_ENABLE_WEBTRANSPORT 0x2b603742")
    if not a.no_settings_check and c.h3.received_settings.get(wanted[0]) != 1:
        raise Fail(f"peer did not enable WebTransport ({wanted[1]} != 1)")
    c.session = c.quic.get_next_available_stream_id()
    out["session_id"] = c.session
    c.h3.send_headers(c.session, encode_headers(request_headers(a)))
    c.flush()
    c.loop(lambda: c.status is not None or c.connect_fin or c.connect_reset is not None, "the CONNECT response")
    if c.status is None:
        raise Fail(f"CONNECT stream ended without a response (reset={c.connect_reset})")
    if not 200 <= c.status < 300:
        c.loop(lambda: c.connect_fin or c.connect_reset is not None, "the end of the rejected CONNECT stream")
        c.fin_connect()
        return
    for spec in a.send_capsule:
        t, _, hx = spec.partition(":")
        c.h3.send_data(c.session, capsule(int(t, 0), bytes.fromhex(hx)), False)
    bidi = [c.open_stream("bidi", False, i, a.bytes, a.seed + i) for i in range(a.bidi)]
    uni = [c.open_stream("uni", True, i, a.bytes, a.seed + 1000 + i) for i in range(a.uni)]
    for w in bidi + uni:
        w.end_after = True
    for i in range(a.datagrams):
        p = b"wt-dgram %d" % i
        c.dgram_payloads.add(p)
        c.h3.send_datagram(c.session, p)
    c.dgrams_sent = a.datagrams
    held = [c.open_stream("held", False, i, PROBE_BYTES, a.seed + 3000 + i) for i in range(a.hold_bidi)]
    probe = None
    if a.reset_bidi is not None or a.stop_bidi is not None:
        probe = c.open_stream("probe", False, None, PROBE_BYTES, a.seed + 2000)
        probe.code = parse_code(a.reset_bidi if a.reset_bidi is not None else a.stop_bidi)
    c.flush()
    uni_shas = [None] * a.uni
    t_streams_done = [None]

    def probe_step():
        if probe is None:
            return True
        if probe.local_code is None:
            if probe.received >= PROBE_BYTES or probe.reset_stream is not None or probe.stop_sending is not None:
                if a.reset_bidi is not None:
                    c.quic.reset_stream(probe.sid, probe.code)
                else:
                    c.quic.stop_stream(probe.sid, probe.code)
                probe.local_code, probe.local_at = probe.code, time.monotonic()
            return False
        want = probe.reset_stream is not None and (a.reset_bidi is not None or probe.stop_sending is not None)
        return want or time.monotonic() - probe.local_at > a.grace

    def uni_done():
        for i, w in enumerate(uni):
            uni_shas[i] = (w.sent, w.sha_sent.digest()) if w.fin_sent else None
        if not all(w.fin_sent or w.stop_sending is not None for w in uni):
            return False
        echoes = [w for w in c.streams.values() if w.kind == "srv-uni" and w.fin_in and not is_server_text(w)]
        return len(echoes) >= a.uni

    def server_streams_done():
        k = a.expect_server_streams
        sb = [w for w in c.streams.values() if w.kind == "srv-bidi" and ((w.fin_in and w.fin_sent)
                                                                         or w.reset_stream is not None)]
        su = [w for w in c.streams.values() if w.kind == "srv-uni" and is_server_text(w)
              and (w.fin_in or w.reset_stream is not None)]
        return len(sb) >= k and len(su) >= k

    def work_done():
        if c.connect_reset is not None:
            return True
        streams = (all(w.fin_in and w.fin_sent or w.reset_stream is not None or w.stop_sending is not None
                       for w in bidi) and uni_done() and server_streams_done()
                   and all(h.received >= PROBE_BYTES or h.reset_stream is not None or h.stop_sending is not None
                           for h in held))
        pr = probe_step()
        if streams and t_streams_done[0] is None:
            t_streams_done[0] = time.monotonic()
        dg = c.dgram_recv >= a.datagrams or (t_streams_done[0] is not None
                                             and time.monotonic() - t_streams_done[0] > a.grace)
        if streams and pr and dg:
            return True
        # the server closed the session: give the rest --grace s
        return c.close_in_at is not None and time.monotonic() - c.close_in_at > a.grace

    c.loop(work_done, "the WebTransport echoes")
    if a.close is not None:
        code, _, reason = a.close.partition(":")
        raw = capsule(CLOSE_SESSION, struct.pack("!I", int(code, 0) & 0xFFFFFFFF) + reason.encode("utf-8"))
        if not c.connect_fin_sent:
            c.close_sent = {"code": int(code, 0), "reason": reason, "sha": hashlib.sha256(raw).hexdigest()}
            c.fin_connect(raw)
            c.flush()
        try:
            c.loop(lambda: c.connect_fin or c.connect_reset is not None, "the server's FIN after WT_CLOSE_SESSION")
        except Fail as e:
            out["close_wait_error"] = str(e)
    elif a.expect_close:
        c.loop(lambda: (c.close_in is not None and c.connect_fin) or c.connect_reset is not None,
               "the server's WT_CLOSE_SESSION and FIN")
    else:
        end = time.monotonic() + a.linger
        c.loop(lambda: time.monotonic() > end or c.connect_fin or c.connect_reset is not None, "linger")
        if c.connect_fin:   # server ended the session (with or without a capsule): end our side
            c.fin_connect()
            c.flush()
    if held:   # the session is over (or lingered): how did the held streams end?
        t = time.monotonic()
        c.loop(lambda: all(h.reset_stream is not None or h.stop_sending is not None or h.fin_in for h in held)
               or time.monotonic() - t > a.grace, "the held streams to be reset")


def is_server_text(w):
    return w.received < 64 and bytes(w.content).startswith(b"server-")


def main():
    p = parser(__doc__)
    add_connect(p)
    add_timeouts(p, 120.0)
    add_quic(p)
    p.add_argument("--authority", required=True, help=":authority (and origin: https://A)")
    p.add_argument("--path", required=True, help=":path")
    p.add_argument("--protocol", help=":protocol (default: webtransport, with --draft 15 webtransport-h3)")
    p.add_argument("--draft", type=int, choices=(2, 15), default=2,
                   help="15: speak draft-15 (SETTINGS_WT_ENABLED 0x2c7cf000 instead of 0x2b603742, :protocol "
                        "webtransport-h3, no sec-webtransport-http3-draft02 header; the server must send "
                        "0x2c7cf000=1)")
    p.add_argument("--origin", help="origin header value ('' = none; default https://AUTHORITY)")
    p.add_argument("--token", help="send authorization: Bearer TOKEN (or ?NAME=TOKEN with --token-query)")
    p.add_argument("--token-query", metavar="NAME", help="put the token in the :path query as NAME=TOKEN")
    p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="extra request header (repeatable)")
    p.add_argument("--no-settings-check", action="store_true",
                   help="send the CONNECT even without the server's ENABLE_WEBTRANSPORT=1")
    p.add_argument("--bidi", type=int, default=0, metavar="N", help="client bidi echo streams")
    p.add_argument("--uni", type=int, default=0, metavar="N", help="client uni streams echoed on server uni")
    p.add_argument("--datagrams", type=int, default=0, metavar="N", help="datagrams sent (echo counted)")
    p.add_argument("--bytes", type=int, default=65536, metavar="B", help="payload bytes per stream")
    p.add_argument("--seed", type=int, default=1, help="payload seed (bidi i: seed+i, uni i: seed+1000+i)")
    p.add_argument("--expect-server-streams", type=int, default=0, metavar="K",
                   help="K server bidi (echoed) + K server uni streams must arrive")
    p.add_argument("--close", metavar="CODE:REASON", help="send WT_CLOSE_SESSION + FIN after the echoes")
    p.add_argument("--expect-close", action="store_true", help="require the server's WT_CLOSE_SESSION + FIN")
    p.add_argument("--reset-bidi", metavar="CODE", help="probe stream ended by RESET_STREAM CODE (or wt:N)")
    p.add_argument("--stop-bidi", metavar="CODE", help="probe stream ended by STOP_SENDING CODE (or wt:N)")
    p.add_argument("--hold-bidi", type=int, default=0, metavar="N",
                   help="N bidi streams that send 1000 bytes and stay open; their resets after the session "
                        "end are reported in `held` (within --grace s)")
    p.add_argument("--send-capsule", action="append", default=[], metavar="TYPE:HEX",
                   help="capsule sent on the CONNECT stream after the 2xx (repeatable)")
    p.add_argument("--expect-status", type=int, metavar="S", help="status that counts as success")
    p.add_argument("--grace", type=float, default=2.0,
                   help="s to wait for reset answers / datagrams / echoes after a server close")
    p.add_argument("--linger", type=float, default=0.2,
                   help="s to wait for server capsules at the end (without --close / --expect-close)")
    a = p.parse_args()
    if a.protocol is None:
        a.protocol = "webtransport-h3" if a.draft == 15 else "webtransport"
    if a.reset_bidi is not None and a.stop_bidi is not None:
        p.error("--reset-bidi and --stop-bidi are exclusive")
    logging.getLogger("quic").setLevel(logging.CRITICAL)
    t0 = time.monotonic()
    c, reason, code = None, None, 1
    out = {"status": None, "headers": {}, "settings": None, "session_id": None}
    try:
        c = Client(a)
        run(c, a, out)
    except Fail as e:
        reason, code = str(e), 2 if isinstance(e, AlpnFail) else 1
    except Exception as e:   # aioquic / socket errors: still report what happened
        reason = f"local error: {e!r}"
    if c is None:
        print(f"wt_client: {reason}", file=sys.stderr)
        print(json.dumps({**out, "error": reason, "ok": False}))
        return code
    c.close()
    ws = sorted(c.streams.values(), key=lambda w: w.sid)
    bidi = [w for w in ws if w.kind == "bidi"]
    uni = [w for w in ws if w.kind == "uni"]
    srv_bidi = [w for w in ws if w.kind == "srv-bidi"]
    srv_uni = [w for w in ws if w.kind == "srv-uni"]
    echo_uni = [w for w in srv_uni if not is_server_text(w)]
    srv_uni_text = [w for w in srv_uni if is_server_text(w)]
    # uni echoes: match each of our uni streams to a server uni stream with the same bytes
    pool = {}
    for w in echo_uni:
        if w.fin_in and w.reset_stream is None:
            pool.setdefault((w.received, w.sha_recv.digest()), []).append(w)
    uni_res = []
    for w in uni:
        r = w.result()
        m = pool.get((w.sent, w.sha_sent.digest()))
        e = m.pop() if m and w.fin_sent else None
        r["echo_stream"] = e.sid if e else None
        if e:   # our uni stream receives nothing: report the echo stream's bytes
            r.update(received=e.received, sha_received=e.sha_recv.hexdigest(), fin_in=e.fin_in)
        uni_res.append(r)
    bidi_res = []
    for w in bidi:
        r = w.result()
        r["ok"] = w.echo_ok()
        bidi_res.append(r)
    bidi_ok = all(r["ok"] for r in bidi_res) and len(bidi) == a.bidi
    uni_ok = all(r["echo_stream"] is not None for r in uni_res) and len(uni) == a.uni

    def srv(w, bidi_kind):
        r = {"stream": w.sid, "session": w.session, "content": bytes(w.content).decode("latin-1"),
             "received": w.received, "fin_in": w.fin_in, "reset_stream": w.reset_stream}
        if bidi_kind:
            r.update(echoed=w.sent, fin_sent=w.fin_sent, stop_sending=w.stop_sending)
        return r

    server_streams = {"bidi": [srv(w, True) for w in srv_bidi], "uni": [srv(w, False) for w in srv_uni_text]}
    if echo_uni and not a.uni:
        server_streams["unexpected_uni"] = [srv(w, False) for w in echo_uni]
    probe = next((w for w in ws if w.kind == "probe"), None)
    reset_seen = None
    if probe is not None:
        reset_seen = {"stream": probe.sid, "sent": "reset_stream" if a.reset_bidi is not None else "stop_sending",
                      "sent_code": probe.local_code, "reset_stream": probe.reset_stream,
                      "stop_sending": probe.stop_sending, "echoed_before": probe.received}
        for k in ("sent_code", "reset_stream", "stop_sending"):
            if wt_code(reset_seen[k]) is not None:
                reset_seen[k + "_wt"] = wt_code(reset_seen[k])
    held = []
    for w in ws:
        if w.kind == "held":
            r = w.result()
            for k2 in ("reset_stream", "stop_sending"):
                if wt_code(r[k2]) is not None:
                    r[k2 + "_wt"] = wt_code(r[k2])
            held.append(r)
    st = c.status
    status_ok = (st == a.expect_status) if a.expect_status is not None else (st is not None and 200 <= st < 300)
    k = a.expect_server_streams
    good_sb = [w for w in srv_bidi if w.fin_in and w.fin_sent and w.reset_stream is None]
    good_su = [w for w in srv_uni_text if w.fin_in and w.reset_stream is None]
    expect = []
    if st is not None and 200 <= st < 300:
        if not bidi_ok:
            expect.append(f"bidi echoes failed ({sum(r['ok'] for r in bidi_res)}/{a.bidi} ok)")
        if not uni_ok:
            expect.append(f"uni echoes failed ({sum(r['echo_stream'] is not None for r in uni_res)}/{a.uni} ok)")
        if len(good_sb) < k or len(good_su) < k:
            expect.append(f"server streams: {len(good_sb)} bidi / {len(good_su)} uni complete, want {k}")
        if a.expect_close and c.close_in is None:
            expect.append("no WT_CLOSE_SESSION from the server")
    if not status_ok:
        expect.append(f"status {st}" + (f" != {a.expect_status}" if a.expect_status is not None else " not 2xx"))
    if reason is None and expect:
        reason = "; ".join(expect)
    ok = reason is None
    res = {**out, "status": st, "headers": c.headers,
           "bidi": {"ok": bidi_ok, "n": len(bidi), "streams": bidi_res},
           "uni": {"ok": uni_ok, "n": len(uni), "streams": uni_res},
           "datagrams": {"sent": getattr(c, "dgrams_sent", 0), "received": c.dgram_recv,
                         "other": c.dgram_other},
           "server_streams": server_streams, "capsules_in": c.capsules_in, "close_session": c.close_in,
           "close_sent": c.close_sent, "reset_seen": reset_seen, "held": held, "connect_stream_fin": c.connect_fin,
           "connect_stream_fin_sent": c.connect_fin_sent, "connect_stream_reset": c.connect_reset,
           "connection_close": c.close_info, "alpn": c.alpn,
           "elapsed_s": round(time.monotonic() - t0, 3), "error": reason, "ok": ok}
    if reason:
        print(f"wt_client: {reason}", file=sys.stderr)
    print(json.dumps(res))
    sys.stdout.flush()
    return 0 if ok else code


if __name__ == "__main__":
    sys.exit(main())
