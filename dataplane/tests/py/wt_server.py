#!/usr/bin/env python3
"""WebTransport over HTTP/3 (draft-ietf-webtrans-http3-02, what aioquic 1.7.2 and Chromium speak) test
server (aioquic, asyncio): the "upstream" for Switchyard's WebTransport relay tests.

QUIC v1 + TLS 1.3 (ALPN h3) with --cert/--key (PEM). Prints exactly `listening <port>` (the UDP port)
on stdout once bound; everything else goes to stderr. SETTINGS (aioquic, enable_webtransport=True):
QPACK_MAX_TABLE_CAPACITY=4096, QPACK_BLOCKED_STREAMS=16, ENABLE_CONNECT_PROTOCOL=1, 0x21=1,
H3_DATAGRAM(0x33)=1, ENABLE_WEBTRANSPORT(0x2b603742)=1; transport parameter max_datagram_frame_size=65536.

  (--draft 15: SETTINGS_WT_ENABLED(0x2c7cf000)=1 instead of 0x2b603742; the token is webtransport-h3, a
  request with `sec-webtransport-http3-draft02` gets 400, and the 200 carries no draft header.)
  extended CONNECT :protocol webtransport -> 200 + `sec-webtransport-http3-draft: draft02`, except
      path /reject -> 404 and /forbidden -> 403 (content-length 0, FIN). Other :protocol -> 501.
      Session behaviour by path (query string allowed on every path):
      /echo (and any other path): a client bidi stream is echoed on itself (FIN after the client's
          FIN); a client uni stream is echoed on a new server uni stream (opened at its first byte,
          FIN after the client's FIN); datagrams are echoed. A client RESET_STREAM / STOP_SENDING on a
          WT stream is logged (`reset code=N` / `stop code=N`) and mirrored with the same code on the
          paired stream (RESET_STREAM -> RESET_STREAM, STOP_SENDING -> STOP_SENDING; aioquic itself
          also answers a STOP_SENDING with RESET_STREAM of the same code).
      /server-streams?n=K: echo as above, and right after the 200 the server opens K bidi and K uni
          streams, writes `server-bidi-i` / `server-uni-i` and FIN; what the client sends back on
          the bidi ones is logged (`server-bidi i ... echoed=... match=`).
      /goaway: echo as above, and right after the 200 an HTTP/3 GOAWAY (id = this stream + 4) on
          the control stream (logged `goaway sent`).
      /close?code=C&reason=R: echo as above; once the first client bidi echo is complete and
          acknowledged, the server sends WT_CLOSE_SESSION (capsule 0x2843, u32 C + UTF-8 R, in one
          DATA frame) on the CONNECT stream with FIN.
  The CONNECT stream's DATA is parsed as a capsule stream (RFC 9297: type varint, length varint,
  value); every capsule is logged (`capsule in type=0x.. len=.. sha=..`), unknown ones are ignored.
  A client WT_CLOSE_SESSION is logged (`close_session code=N reason=<hex> sha=<sha256 of the capsule
  bytes>`) and answered with a bare FIN; a client FIN without a close capsule is answered with FIN.
  anything else (not an extended CONNECT) -> 200, body `wt server: <method> <path>`.

stderr lines: `wt c<conn>#<sid> ...` per WT stream event / completed stream (kind, session, in/out
bytes and sha256), `session c<conn>#<sid> ...` once per session (path, status, counters, close codes,
`saw=` JSON of the request headers), `conn c<conn>: closed ...` per connection.
WT streams/datagrams that arrive before their session's CONNECT was processed are buffered until it
is (and dropped, with STOP_SENDING 0x3994bd84 WT_BUFFERED_STREAM_REJECTED on streams, if it is
rejected). Session ends do not reset the session's open WT streams (a relay's job in the tests).
--timeout bounds waiting for the client's FIN after our WT_CLOSE_SESSION and for an echo's ack.
"""
import hashlib
import json
import struct
from urllib.parse import parse_qs, urlsplit

from aioquic.h3.connection import FrameType, encode_frame
from aioquic.h3.events import DatagramReceived, DataReceived, HeadersReceived, WebTransportStreamDataReceived
import aioquic.quic.events as qe

from quicpeer import (CLOSE_SESSION, Capsules, ServerConnection, WebTransportH3, add_quic, capsule, header_dict, log,
                      run_server, server_config, server_parser, varint, wt_code)

BUFFERED_STREAM_REJECTED = 0x3994BD84
KEEP = 256   # bytes of a server-opened bidi stream's echo kept for the log


def code_str(c):
    w = wt_code(c)
    return f"{c}" + (f" wt={w}" if w is not None else "")


class Session:
    def __init__(self, sid, headers):
        self.sid = sid
        self.h = header_dict(headers)
        self.path = self.h.get(":path", "")
        u = urlsplit(self.path)
        self.route, self.q = u.path, {k: v[-1] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
        self.status = None
        self.open = False        # 2xx sent, session usable
        self.caps = Capsules()   # the CONNECT stream's DATA, parsed as capsules
        self.capsules = []
        self.close_in = self.close_out = None
        self.fin_in = self.fin_out = False
        self.reset_in = None
        self.done = False
        self.n = {"bidi": 0, "uni": 0, "srv_bidi": 0, "srv_uni": 0, "dgrams_in": 0, "dgrams_out": 0,
                  "in": 0, "out": 0}
        self.first_echo = None   # /close: sid of the first completed bidi echo
        self.notes = []


class WtStream:
    def __init__(self, sid, sess, kind, label=None):
        self.sid, self.sess, self.kind, self.label = sid, sess, kind, label
        self.pair = None   # client uni -> our echo uni stream (and back)
        self.n_in = self.n_out = 0
        self.sha_in, self.sha_out = hashlib.sha256(), hashlib.sha256()
        self.fin_in = self.fin_out = False
        self.reset_in = self.stop_in = self.reset_out = None
        self.sent_text = b""
        self.echo = bytearray()
        self.logged = False


class WtServer(ServerConnection):
    def __init__(self, quic, a, **kw):
        super().__init__(quic, a, **kw)
        self.sessions, self.streams = {}, {}
        self.pending = {}   # session id -> [H3 events] that arrived before its CONNECT

    # --- events ----------------------------------------------------------------------------------
    def quic_event_received(self, e):
        if isinstance(e, qe.ProtocolNegotiated) and self.h3 is None:
            self.h3 = WebTransportH3(self._quic, draft15=self.a.draft == 15)
        sid = getattr(e, "stream_id", -1)
        if isinstance(e, qe.StreamReset):
            if sid in self.streams:
                self.on_reset(self.streams[sid], e.error_code)
            elif sid in self.sessions:
                s = self.sessions[sid]
                s.reset_in = e.error_code
                log(f"session c{self.cid}#{sid} CONNECT stream reset code={code_str(e.error_code)}")
                self.end_session(s, "connect-stream-reset")
        elif isinstance(e, qe.StopSendingReceived):
            if sid in self.streams:
                self.on_stop(self.streams[sid], e.error_code)
            elif sid in self.sessions:
                log(f"session c{self.cid}#{sid} CONNECT stream stop code={code_str(e.error_code)}")
        elif isinstance(e, qe.ConnectionTerminated):
            self.log_closed(e)
            for s in list(self.sessions.values()):
                self.end_session(s, "connection-closed")
        if self.h3 is not None:
            for he in self.h3.handle_event(e):
                self.h3_event(he)

    def h3_event(self, he):
        sid = he.stream_id
        if isinstance(he, WebTransportStreamDataReceived):
            s = self.sessions.get(he.session_id)
            if s is None or not s.open:
                if s is None and len(self.pending.setdefault(he.session_id, [])) < 10000:
                    self.pending[he.session_id].append(he)
                    return
                return self.reject_stream(sid, he.session_id)
            return self.on_wt_data(s, he)
        if isinstance(he, DatagramReceived):
            s = self.sessions.get(sid)
            if s is None:
                if len(self.pending.setdefault(sid, [])) < 10000:
                    self.pending[sid].append(he)
                return
            if s.open and not s.done:
                s.n["dgrams_in"] += 1
                self.h3.send_datagram(sid, he.data)
                s.n["dgrams_out"] += 1
            return
        s = self.sessions.get(sid)
        if isinstance(he, HeadersReceived) and s is None:
            if sid % 4 != 0 or sid in self.streams:
                return
            self.on_request(sid, he)
        elif isinstance(he, DataReceived) and s is not None:
            if he.data:
                self.parse_capsules(s, he.data)
            if he.stream_ended:
                self.on_connect_fin(s)

    # --- requests --------------------------------------------------------------------------------
    def on_request(self, sid, he):
        s = Session(sid, he.headers)
        method, proto = s.h.get(":method", ""), s.h.get(":protocol")
        if method != "CONNECT" or proto is None:
            body = f"wt server: {method} {s.path}".encode()
            self.h3.send_headers(sid, [(b":status", b"200"), (b"content-type", b"text/plain"),
                                       (b"content-length", str(len(body)).encode())])
            if method == "HEAD":
                self._quic.send_stream_data(sid, b"", end_stream=True)
            else:
                self.h3.send_data(sid, body, True)
            log(f"request c{self.cid}#{sid} {method} {s.h.get(':authority', '-')} {s.path} status=200")
            return
        self.sessions[sid] = s
        draft15 = self.a.draft == 15
        if proto != ("webtransport-h3" if draft15 else "webtransport"):
            return self.answer(s, 501)
        if draft15 and "sec-webtransport-http3-draft02" in s.h:
            return self.answer(s, 400)
        if s.route == "/reject":
            return self.answer(s, 404)
        if s.route == "/forbidden":
            return self.answer(s, 403)
        s.status, s.open = 200, True
        self.h3.send_headers(sid, [(b":status", b"200")] if draft15 else
                             [(b":status", b"200"), (b"sec-webtransport-http3-draft", b"draft02")])
        log(f"session c{self.cid}#{sid} accepted path={s.path} authority={s.h.get(':authority', '-')}")
        if s.route == "/goaway":
            # HTTP/3 GOAWAY on our control stream: no new requests past this one.
            self._quic.send_stream_data(self.h3._local_control_stream_id,
                                        encode_frame(FrameType.GOAWAY, varint(sid + 4)))
            log(f"session c{self.cid}#{sid} goaway sent id={sid + 4}")
        if s.route == "/server-streams":
            k = int(s.q.get("n", "1") or 0)
            for i in range(k):
                for uni in (False, True):
                    kind = "srv-uni" if uni else "srv-bidi"
                    wsid = self.h3.open_wt(sid, uni)
                    w = self.streams[wsid] = WtStream(wsid, s, kind, i)
                    w.sent_text = f"server-{'uni' if uni else 'bidi'}-{i}".encode()
                    self.write(w, w.sent_text, True)
                    s.n[kind.replace("-", "_")] += 1
        for he in self.pending.pop(sid, []):
            self.h3_event(he)

    def answer(self, s, status):
        s.status = status
        self.h3.send_headers(s.sid, [(b":status", str(status).encode()), (b"content-length", b"0")],
                             end_stream=True)
        s.fin_out = True
        for he in self.pending.pop(s.sid, []):
            if isinstance(he, WebTransportStreamDataReceived):
                self.reject_stream(he.stream_id, s.sid)
        self.end_session(s, "rejected")

    def reject_stream(self, sid, session_id):
        if sid in self.streams:
            return
        self.streams[sid] = WtStream(sid, None, "rejected")
        log(f"wt c{self.cid}#{sid} stream for session {session_id} that is not open: "
            f"STOP_SENDING 0x{BUFFERED_STREAM_REJECTED:x}")
        try:
            self._quic.stop_stream(sid, BUFFERED_STREAM_REJECTED)
            if sid % 4 == 0:
                self._quic.reset_stream(sid, BUFFERED_STREAM_REJECTED)
        except ValueError:
            pass

    # --- WT streams ------------------------------------------------------------------------------
    def write(self, w, data, end=False):
        try:
            self._quic.send_stream_data(w.sid, data, end_stream=end)
        except (ValueError, RuntimeError, AssertionError):   # reset / stopped
            return
        w.n_out += len(data)
        w.sha_out.update(data)
        if w.sess:
            w.sess.n["out"] += len(data)
        if end:
            w.fin_out = True
            self.stream_done(w)

    def on_wt_data(self, s, he):
        sid, data, ended = he.stream_id, he.data, he.stream_ended
        w = self.streams.get(sid)
        if w is None:
            if sid % 4 == 0:
                w, key = WtStream(sid, s, "bidi", s.n["bidi"]), "bidi"
            elif sid % 4 == 2:
                w, key = WtStream(sid, s, "uni", s.n["uni"]), "uni"
            else:   # server-initiated ids are always registered when opened
                log(f"wt c{self.cid}#{sid} data on an unknown server-initiated stream, ignored")
                return
            s.n[key] += 1
            self.streams[sid] = w
        if w.kind == "rejected" or w.reset_in is not None:
            return
        w.n_in += len(data)
        w.sha_in.update(data)
        s.n["in"] += len(data)
        if ended:
            w.fin_in = True
        if w.kind == "bidi":
            if w.stop_in is None:
                self.write(w, data, ended)
            if ended and s.route == "/close" and s.first_echo is None:
                s.first_echo = sid
                self.close_after_ack(s, w, self._loop.time() + self.a.timeout)
        elif w.kind == "uni":
            if w.pair is None:
                psid = self.h3.open_wt(s.sid, True)
                p = self.streams[psid] = WtStream(psid, s, "echo-uni", w.label)
                w.pair, p.pair = psid, sid
            p = self.streams[w.pair]
            if p.stop_in is None:
                self.write(p, data, ended)
            if ended:
                self.stream_done(p)
        elif w.kind == "srv-bidi":
            if len(w.echo) < KEEP:
                w.echo += data[:KEEP - len(w.echo)]
            if ended:
                log(f"wt c{self.cid}#{sid} server-bidi {w.label} session={s.sid} sent={w.sent_text!r} "
                    f"echoed={bytes(w.echo)!r} match={bytes(w.echo) == w.sent_text and w.n_in == len(w.sent_text)}")
        if ended:
            self.stream_done(w)

    def stream_done(self, w):
        if w.logged:
            return
        finished = ((w.fin_in or w.reset_in is not None or w.kind in ("srv-uni", "echo-uni"))
                    and (w.fin_out or w.stop_in is not None or w.reset_out is not None or w.kind == "uni"))
        if not finished:
            return
        w.logged = True
        extra = ""
        if w.reset_in is not None:
            extra += f" reset_in={w.reset_in}"
        if w.stop_in is not None:
            extra += f" stop_in={w.stop_in}"
        if w.reset_out is not None:
            extra += f" reset_out={w.reset_out}"
        if w.pair is not None:
            extra += f" pair={w.pair}"
        log(f"wt c{self.cid}#{w.sid} done kind={w.kind} session={w.sess.sid if w.sess else '-'} "
            f"in={w.n_in} out={w.n_out} sha_in={w.sha_in.hexdigest()} sha_out={w.sha_out.hexdigest()} "
            f"fin_in={w.fin_in} fin_out={w.fin_out}{extra}")

    def on_reset(self, w, code):
        w.reset_in = code
        log(f"wt c{self.cid}#{w.sid} reset code={code_str(code)} kind={w.kind} "
            f"session={w.sess.sid if w.sess else '-'} in={w.n_in}")
        target = w.sid if w.kind in ("bidi", "srv-bidi") else w.pair if w.kind == "uni" else None
        if target is not None:
            try:
                self._quic.reset_stream(target, code)
                log(f"wt c{self.cid}#{target} reset sent code={code_str(code)}")
            except ValueError:
                pass
            t = self.streams.get(target)
            if t is not None:
                t.reset_out = code
                if t is not w:
                    self.stream_done(t)
        self.stream_done(w)

    def on_stop(self, w, code):
        w.stop_in = code   # aioquic already reset our sending half with the same code
        log(f"wt c{self.cid}#{w.sid} stop code={code_str(code)} kind={w.kind} "
            f"session={w.sess.sid if w.sess else '-'} out={w.n_out}")
        target = w.sid if w.kind in ("bidi", "srv-bidi") else w.pair if w.kind == "echo-uni" else None
        if target is not None:
            t = self.streams.get(target)
            if t is None or not t.fin_in:
                try:
                    self._quic.stop_stream(target, code)
                    log(f"wt c{self.cid}#{target} stop sent code={code_str(code)}")
                except ValueError:
                    pass
        self.stream_done(w)

    # --- session / capsules ----------------------------------------------------------------------
    def parse_capsules(self, s, data):
        for ctype, raw, value in s.caps.feed(data):
            sha = hashlib.sha256(raw).hexdigest()
            s.capsules.append((ctype, len(value)))
            log(f"wt c{self.cid}#{s.sid} capsule in type=0x{ctype:x} len={len(value)} sha={sha}")
            if ctype == CLOSE_SESSION:
                code = struct.unpack("!I", value[:4])[0] if len(value) >= 4 else None
                s.close_in = (code, value[4:].hex(), sha)
                log(f"wt c{self.cid}#{s.sid} close_session code={code} reason={value[4:].hex()} sha={sha}"
                    + ("" if len(value) >= 4 else " (shorter than 4 bytes)"))
                self.fin_connect(s)

    def fin_connect(self, s, data=b""):
        if s.fin_out:
            return
        s.fin_out = True
        try:
            if data:
                self.h3.send_data(s.sid, data, True)
            else:
                self._quic.send_stream_data(s.sid, b"", end_stream=True)
        except Exception as e:   # reset / stopped
            s.notes.append(f"fin-failed={e!r}")
        if s.fin_in:
            self.end_session(s, "closed")

    def on_connect_fin(self, s):
        s.fin_in = True
        if s.caps.buf:
            s.notes.append(f"trailing-capsule-bytes={len(s.caps.buf)}")
        if s.fin_out:
            self.end_session(s, "closed")
        else:
            self.fin_connect(s)

    def close_after_ack(self, s, w, deadline):
        """/close: send WT_CLOSE_SESSION + FIN once the first echo's bytes and FIN are acknowledged."""
        if s.done or s.fin_out or self.closed:
            return
        qs = self._quic._streams.get(w.sid)
        acked = qs is None or qs.sender.is_finished or qs.sender._reset_error_code is not None
        if not acked and self._loop.time() < deadline:
            self._loop.call_later(0.01, self.close_after_ack, s, w, deadline)
            return
        try:
            code = int(s.q.get("code", "0") or 0)
        except ValueError:
            code = 0
        reason = s.q.get("reason", "").encode()
        raw = capsule(CLOSE_SESSION, struct.pack("!I", code & 0xFFFFFFFF) + reason)
        sha = hashlib.sha256(raw).hexdigest()
        s.close_out = (code, reason.hex(), sha)
        log(f"wt c{self.cid}#{s.sid} close_session out code={code} reason={reason.hex()} sha={sha}"
            + ("" if acked else " (echo not acknowledged in time)"))
        self.fin_connect(s, raw)
        self._loop.call_later(self.a.timeout, self.peer_fin_timeout, s)
        self.tx()

    def peer_fin_timeout(self, s):
        if not s.done:
            s.notes.append("(peer did not end its side)")
            self.end_session(s, "timeout")

    def end_session(self, s, why):
        if s.done:
            return
        s.done = True
        for w in self.streams.values():
            if w.sess is s and not w.logged:
                w.logged = True
                log(f"wt c{self.cid}#{w.sid} open-at-session-end kind={w.kind} in={w.n_in} out={w.n_out} "
                    f"sha_in={w.sha_in.hexdigest()} sha_out={w.sha_out.hexdigest()} "
                    f"fin_in={w.fin_in} fin_out={w.fin_out}")
        n = s.n
        ci = "-" if s.close_in is None else f"{s.close_in[0]}/{s.close_in[1]}"
        co = "-" if s.close_out is None else f"{s.close_out[0]}/{s.close_out[1]}"
        caps = ",".join(f"0x{t:x}:{ln}" for t, ln in s.capsules) or "-"
        notes = (" " + " ".join(s.notes)) if s.notes else ""
        reset = f" reset_in={s.reset_in}" if s.reset_in is not None else ""
        log(f"session c{self.cid}#{s.sid} end={why} path={s.path} proto={s.h.get(':protocol')} "
            f"status={s.status} bidi={n['bidi']} uni={n['uni']} srv_bidi={n['srv_bidi']} "
            f"srv_uni={n['srv_uni']} dgrams_in={n['dgrams_in']} dgrams_out={n['dgrams_out']} in={n['in']} "
            f"out={n['out']} capsules={caps} close_in={ci} close_out={co} fin_in={s.fin_in} "
            f"fin_out={s.fin_out}{reset}{notes} saw={json.dumps(s.h, separators=(',', ':'))}")


def main():
    p = server_parser(__doc__)
    p.add_argument("--timeout", type=float, default=20.0,
                   help="bound for the client's FIN after our WT_CLOSE_SESSION and for an echo's ack")
    p.add_argument("--draft", type=int, choices=(2, 15), default=2,
                   help="15: speak draft-15 (SETTINGS_WT_ENABLED 0x2c7cf000 instead of 0x2b603742, "
                        ":protocol webtransport-h3 only, 400 if the draft-02 header comes, no draft header "
                        "in the answer)")
    add_quic(p)
    a = p.parse_args()
    run_server(server_config(a), a.listen, lambda quic, **kw: WtServer(quic, a, **kw))


if __name__ == "__main__":
    main()
