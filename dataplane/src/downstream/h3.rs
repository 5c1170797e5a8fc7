//! HTTP/3 downstream: one QUIC connection (ALPN h3) from the core's
//! endpoint, its request streams run the same straight line as h1 and h2
//! (intent → route + auth → upstream → relay):
//!
//! ```text
//! CONNECT :protocol websocket  → WebSocket intent (RFC 9220, routed by :authority)
//! CONNECT host:port            → CONNECT intent   (routed by SNI / default tunnel)
//! CONNECT :protocol webtransport | connect-udp | connect-ip
//!                              → a session (routed by :authority; relay::session)
//! anything else                → ordinary request (forwarded, see `forward`)
//! ```
//!
//! A bidirectional stream that starts with WebTransport's 0x41 signal is
//! not a request: it goes to its session (`http3::sessions`).
//!
//! The connection-level HTTP/3 (control and QPACK streams, SETTINGS,
//! GOAWAY) is [`crate::h3::connection`]; request frames are
//! [`crate::h3::stream`]; this module is the glue over [`crate::quic`].
//! Refusals are stream answers (DESIGN §5): a malformed request gets
//! RESET_STREAM + STOP_SENDING with H3_MESSAGE_ERROR, any other refusal its
//! status; a protocol error on a critical stream closes the connection with
//! its RFC 9114 code. A connection that carried a plain CONNECT answers 421
//! to reverse-proxy requests and the other way round.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::FutureExt;

use crate::answer::{answer, record, Answer};
use crate::core::{CoreCtx, ListenerCtx};
use crate::error::Rejection;
use crate::h3::connection::{self as h3conn, Side};
use crate::h3::error::{Code, H3Error};
use crate::h3::settings::{id, Settings};
use crate::h3::webtransport as wt;
use crate::http3::sessions::{self, Sessions, WtStream};
use crate::intent::SessionProtocol;
use crate::h3::stream::{RequestStream, StreamEvent};
use crate::intent::Intent;
use crate::message::{Field, Header, RequestHead, ResponseHead};
use crate::plan::{plan, Origin, Version};
use crate::quic::{self, RecvStream, SendStream};
use crate::relay::h3::{fail, send_data, H3Stream};
use crate::relay::{self, Leg, Prelude, RelayOptions};
use crate::stats;
use crate::timeout::with_timeout;
use crate::upstream::session::{self, Ask, AskKind, Deadlines, Opened};

mod forward;

/// Concurrent request streams a client may open on one connection.
pub const MAX_STREAMS: u32 = 256;
/// Receive window per stream; the connection's is 2×, from the core's
/// receive budget (`guard::RecvBudget`, shared with h2). Measured (bulk over
/// one stream, loopback, bench/compare.py): 1 MiB held it to 0.17 GB/s,
/// credit-bound (the client blocked on stream flow control hundreds of
/// times a second); 4 MiB reaches the core's CPU limit (0.31 GB/s).
pub const STREAM_WINDOW: u32 = 4 << 20;
/// How often the connection task checks for shutdown.
const WATCH: Duration = Duration::from_millis(250);

/// Who the connection's first stream made it (DESIGN §1: 421 separation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Proxy,
    Reverse,
}

/// Per-connection facts every stream needs.
struct Conn {
    core: Rc<CoreCtx>,
    lis: Rc<ListenerCtx>,
    quic: quic::Connection,
    sessions: Rc<Sessions>,
    client: SocketAddr,
    sni: Option<String>,
    role: Cell<Option<Role>>,
    streams: Cell<usize>,
    max_field_section: u64,
}

/// Serves one QUIC connection (from the endpoint's admission) until it ends.
pub async fn serve(core: Rc<CoreCtx>, lis: Rc<ListenerCtx>, quic: quic::Connection) {
    stats::add(&core.stats.connections_total, 1);
    let _active = crate::core::Active::new(&core.stats);
    let client = quic.remote_address();
    match with_timeout(core.edge.handshake_timeout, quic.connected()).await {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            tracing::debug!(core = core.core, %client, "quic handshake failed: {e}");
            return;
        }
        None => {
            tracing::warn!(core = core.core, %client, timeout = ?core.edge.handshake_timeout, "quic handshake not complete within the handshake timeout");
            quic.close(Code::NO_ERROR.0, b"handshake timeout");
            return;
        }
    }
    // The connection's receive credit comes out of the core's budget, as
    // an h2 connection's does (the transport parameters offered only the
    // protocol minimum).
    let window = core.h2_budget.reserve(2 * STREAM_WINDOW);
    quic.set_receive_window(u64::from(window.window));
    let (sni, _) = quic.handshake();
    let max_field_section = core.edge.max_head_bytes as u64;
    let mut local = Settings::default();
    local.set(id::MAX_FIELD_SECTION_SIZE, max_field_section);
    local.set(id::ENABLE_CONNECT_PROTOCOL, 1);
    // HTTP datagrams (RFC 9297) and WebTransport draft-02, with the
    // datagram setting's draft value that Chromium also sends, and
    // draft-15 (`:protocol webtransport-h3`).
    local.set(id::H3_DATAGRAM, 1);
    local.set(wt::setting::H3_DATAGRAM_DRAFT04, 1);
    local.set(wt::setting::ENABLE_WEBTRANSPORT_DRAFT02, 1);
    local.set(wt::setting::WT_ENABLED, 1);
    let h3 = Rc::new(RefCell::new(h3conn::Connection::new(Side::Server, local)));
    // Our critical streams: held open for the connection's life.
    let preface = h3.borrow().control_preface();
    let mut control = match crate::http3::own_streams(&quic, preface).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(core = core.core, %client, "h3 connection ended during set-up: {e}");
            return;
        }
    };
    let sessions = Sessions::new(core.stats.clone());
    let conn = Rc::new(Conn {
        core: core.clone(),
        lis,
        quic: quic.clone(),
        sessions: sessions.clone(),
        client,
        sni,
        role: Cell::new(None),
        streams: Cell::new(0),
        max_field_section,
    });
    glommio::spawn_local(crate::http3::peer_streams(quic.clone(), h3.clone(), sessions.clone(), core.core)).detach();
    glommio::spawn_local(sessions::datagrams(quic.clone(), sessions)).detach();
    let mut next_id = 0u64;
    let closing = loop {
        let stop = async {
            while !core.stop.load(Ordering::Relaxed) {
                glommio::timer::sleep(WATCH).await;
            }
            None
        };
        match async { Some(quic.accept_bi().await) }.or(stop).await {
            Some(Ok((send, recv))) => {
                next_id = recv.id() + 4;
                stats::add(&core.stats.h3_streams_total, 1);
                glommio::spawn_local(stream(conn.clone(), send, recv)).detach();
            }
            Some(Err(e)) => {
                tracing::debug!(core = core.core, %client, "h3 connection ended: {e}");
                break false;
            }
            None => break true,
        }
    };
    if closing {
        // GOAWAY: streams from `next_id` on will not be served; the ones in
        // flight get the edge's shutdown grace to finish, as h1 relays do.
        let mut goaway = Vec::new();
        if h3conn::goaway(next_id, &mut goaway).is_ok() {
            let _ = control[0].write_all(&goaway).await;
        }
        let t0 = Instant::now();
        while conn.streams.get() > 0 && t0.elapsed() < core.edge.shutdown_grace && quic.close_reason().is_none() {
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
        quic.close(Code::NO_ERROR.0, b"shutting down");
    }
    drop(window);
}

struct StreamGuard<'a>(&'a Conn);

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        self.0.streams.set(self.0.streams.get().saturating_sub(1));
    }
}

/// A request stream after its HEADERS: the parser and the bytes read past it.
struct Opening {
    send: SendStream,
    /// Taken by a forwarded request's body pump.
    recv: Option<RecvStream>,
    frames: RequestStream,
    rest: Bytes,
    /// The request ended with its head (FIN seen).
    ended: bool,
}

impl Opening {
    fn into_leg(self, conn: &Conn) -> Option<H3Stream> {
        let recv = self.recv?;
        Some(H3Stream { conn: conn.quic.clone(), sessions: conn.sessions.clone(), send: self.send, recv, frames: self.frames, rest: self.rest, capsules: None })
    }

    fn stop(&mut self, code: Code) {
        if let Some(r) = self.recv.as_mut() {
            r.stop(code.0);
        }
    }
}

/// Why no head came.
enum NoHead {
    /// The client reset or the connection ended: nobody to answer.
    Gone,
    /// A protocol error (already answered on the stream or connection).
    Broken(H3Error),
    Timeout,
}

/// Reads the request's HEADERS.
async fn read_head(
    conn: &Conn,
    mut send: SendStream,
    mut recv: RecvStream,
    first: Bytes,
) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, Opening), NoHead> {
    let mut frames = RequestStream::server(conn.max_field_section);
    let read = async {
        let mut pending = Some(first).filter(|b| !b.is_empty());
        loop {
            let mut raw = match pending.take() {
                Some(b) => b,
                None => match recv.chunk(64 * 1024).await {
                    Ok(Some(b)) => b,
                    Ok(None) => {
                        return Err(frames.finish().err().map_or(NoHead::Gone, NoHead::Broken));
                    }
                    Err(_) => return Err(NoHead::Gone),
                },
            };
            while !raw.is_empty() {
                let (used, event) = frames.read(&raw).map_err(NoHead::Broken)?;
                let head = match event {
                    Some(StreamEvent::Head(fields)) => Some(fields),
                    _ => None,
                };
                bytes::Buf::advance(&mut raw, used);
                if let Some(fields) = head {
                    return Ok((fields, raw));
                }
            }
        }
    };
    let (fields, rest) = match with_timeout(conn.core.edge.handshake_timeout, read).await {
        Some(Ok(x)) => x,
        Some(Err(NoHead::Broken(e))) => {
            let _ = fail(&conn.quic, Some(&mut send), &mut recv, &e);
            return Err(NoHead::Broken(e));
        }
        Some(Err(other)) => return Err(other),
        None => {
            send.reset(Code::REQUEST_REJECTED.0);
            recv.stop(Code::REQUEST_REJECTED.0);
            return Err(NoHead::Timeout);
        }
    };
    // FIN right behind the head: a request without a body.
    let ended = rest.is_empty() && ended_now(&mut recv);
    Ok((fields, Opening { send, recv: Some(recv), frames, rest, ended }))
}

/// A stream's first bytes, at least its first varint whole (`None`: it
/// ended or failed first; `read_head` then finds nothing to answer).
async fn first_bytes(recv: &mut RecvStream) -> Option<Bytes> {
    let mut buf = Vec::new();
    loop {
        match recv.chunk(64 * 1024).await {
            Ok(Some(b)) if buf.is_empty() && crate::h3::varint::decode(&b).is_some() => return Some(b),
            Ok(Some(b)) => {
                buf.extend_from_slice(&b);
                if crate::h3::varint::decode(&buf).is_some() {
                    return Some(Bytes::from(buf));
                }
            }
            Ok(None) if buf.is_empty() => return Some(Bytes::new()),
            Ok(None) => return Some(Bytes::from(buf)),
            Err(_) => return None,
        }
    }
}

/// Whether the stream's FIN is already here (nothing more to read).
fn ended_now(recv: &mut RecvStream) -> bool {
    let waker = futures_util::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    matches!(recv.poll_chunk(&mut cx, 0), std::task::Poll::Ready(Ok(None)))
}

/// Handles one request stream: a request in, an answer and maybe a relay out.
async fn stream(conn: Rc<Conn>, mut send: SendStream, mut recv: RecvStream) {
    // The first frame type tells a request from a WebTransport stream.
    let first = match with_timeout(conn.core.edge.handshake_timeout, first_bytes(&mut recv)).await {
        Some(Some(b)) => b,
        Some(None) => return,
        None => {
            send.reset(Code::REQUEST_REJECTED.0);
            recv.stop(Code::REQUEST_REJECTED.0);
            return;
        }
    };
    if let Some((wt::BIDI_SIGNAL, n)) = crate::h3::varint::decode(&first) {
        let rest = first.slice(n..);
        return sessions::accept_stream(conn.quic.clone(), conn.sessions.clone(), WtStream::Bidi(send, recv), rest).await;
    }
    conn.streams.set(conn.streams.get() + 1);
    let _count = StreamGuard(&conn);
    let (fields, mut open) = match read_head(&conn, send, recv, first).await {
        Ok(x) => x,
        Err(NoHead::Broken(e)) => {
            tracing::info!(core = conn.core.core, client = %conn.client, code = %e.code, "h3 request refused: {}", e.reason);
            return;
        }
        Err(NoHead::Timeout) => {
            tracing::info!(core = conn.core.core, client = %conn.client, timeout = ?conn.core.edge.handshake_timeout, "h3 request head not complete within the handshake timeout");
            return;
        }
        Err(NoHead::Gone) => return,
    };
    let request = match crate::codec::h3::request_head(&fields, true) {
        Ok(r) => r,
        Err(e) => return refuse(&conn, &mut open, e.into(), None, None),
    };
    drop(fields);
    let (mut head, protocol) = (request.head, request.protocol);
    // WebTransport: which draft this client speaks (its `:protocol` token).
    let draft = protocol.as_deref().and_then(wt::Draft::from_token).unwrap_or(wt::Draft::Draft02);
    let intent = match crate::intent::classify_extended(&head, protocol.as_deref()) {
        Ok(i) => i,
        Err(e) => return refuse(&conn, &mut open, e.into(), Some(&head), None),
    };
    // CONNECT-UDP and CONNECT-IP are proxy egress, like plain CONNECT.
    let role = match intent {
        Intent::Connect { .. } => Role::Proxy,
        Intent::Session { protocol: SessionProtocol::ConnectUdp | SessionProtocol::ConnectIp } => Role::Proxy,
        _ => Role::Reverse,
    };
    match conn.role.get() {
        Some(r) if r != role => {
            let what = match role {
                Role::Proxy => "CONNECT",
                Role::Reverse => "reverse-proxy request",
            };
            return refuse(&conn, &mut open, Rejection::Misdirected(what), Some(&head), None);
        }
        Some(_) => {}
        None => conn.role.set(Some(role)),
    }
    let core = &conn.core;
    let routes = core.routes.borrow().clone();
    let from = Origin {
        client: conn.client,
        sni: conn.sni.as_deref(),
        default_tunnel: conn.lis.cfg.default_tunnel.as_deref(),
        version: Version::H3,
    };
    let param = &core.edge.token_query_param;
    let now = crate::managed::now_unix_s();
    let plan = match plan(&routes, from, &mut head, intent, param, now) {
        Ok(p) => p,
        Err((rej, t)) => return refuse(&conn, &mut open, rej, Some(&head), t.as_deref()),
    };
    crate::policy::add_forwarding_headers(&mut head, conn.client.ip(), "https");
    let t = plan.tunnel.clone();
    match plan.intent {
        Intent::Request => forward::request(&conn, &t, head, open).await,
        Intent::WebSocket | Intent::Connect { .. } => tunnel(&conn, &t, plan.intent, head, open).await,
        Intent::Session { protocol } => session(&conn, &t, (protocol, draft), head, open).await,
        Intent::Upgrade { token } => refuse(
            &conn,
            &mut open,
            Rejection::UpgradeNotAllowed(crate::logsafe::ClientText(token)),
            Some(&head),
            Some(&t),
        ),
    }
}

/// Runs `work` unless the client cancels the stream first (STOP_SENDING):
/// then `None`, and `work` (an upstream dial or handshake) is dropped.
async fn unless_cancelled<T>(send: &mut SendStream, work: impl std::future::Future<Output = T>) -> Option<T> {
    async { Some(work.await) }
        .or(async {
            std::future::poll_fn(|cx| send.poll_stopped(cx)).await;
            None
        })
        .await
}

/// WebSocket or CONNECT: open the upstream session, answer 200, relay.
async fn tunnel(conn: &Conn, t: &Rc<crate::tunnel::Tunnel>, intent: Intent, head: RequestHead, mut open: Opening) {
    let asked = std::time::Instant::now();
    let core = &conn.core;
    let edge = &core.edge;
    let limits = Deadlines { connect: edge.upstream_connect_timeout, handshake: edge.upstream_handshake_timeout };
    let kind = match &intent {
        Intent::Connect { authority } => AskKind::Connect { authority: authority.clone() },
        _ => AskKind::WebSocket,
    };
    let opening = async {
        if t.config.mode == crate::config::TunnelMode::HttpUpgrade {
            crate::upstream::dial(&core.resolver, t, limits.connect)
                .await
                .map(|up| Opened::Open { leg: Leg::Tcp(up), early: Vec::new(), fields: Vec::new() })
        } else {
            let ask = Ask {
                kind: kind.clone(),
                authority: head.host().unwrap_or_default().to_owned(),
                path: head.target.clone(),
                fields: crate::policy::request_fields(&head),
            };
            session::open(core, t, ask, limits).await
        }
    };
    let opened = match unless_cancelled(&mut open.send, opening).await {
        None => return,
        Some(Ok(o)) => o,
        Some(Err(rej)) => return refuse(conn, &mut open, rej, Some(&head), Some(t)),
    };
    let what = if kind == AskKind::WebSocket { "websocket" } else { "connect" };
    match opened {
        Opened::Open { leg, early, fields } => {
            let Some(relayed) = accept(conn, &mut open, t, (what, asked), &head, &fields).await else { return };
            drop((head, fields));
            tracing::debug!(client = %conn.client, tunnel = %t.config.name, kind = what, "h3 relay started");
            let opts = RelayOptions { idle: edge.idle_timeout, splice: false, end_on_upstream_eof: false };
            let prelude = Prelude { to_up: Vec::new(), to_down: early };
            let Some(down) = open.into_leg(conn) else { return };
            let r = relay::relay_legs(Leg::H3(down), leg, prelude, opts, &core.stats).await;
            relayed.finish(core, t, &r);
            let q = conn.quic.stats();
            tracing::debug!(client = %conn.client, tunnel = %t.config.name, kind = what, up = r.down_to_up, down = r.up_to_down, end = ?r.end,
                rtt = ?q.path.rtt, cwnd = q.path.cwnd, lost = q.path.lost_packets, sent = q.path.sent_packets, congestion_events = q.path.congestion_events,
                acks_tx = q.frame_tx.acks, acks_rx = q.frame_rx.acks, max_stream_data_tx = q.frame_tx.max_stream_data, stream_data_blocked_rx = q.frame_rx.stream_data_blocked,
                data_blocked_rx = q.frame_rx.data_blocked, tx_ios = q.udp_tx.ios, tx_datagrams = q.udp_tx.datagrams, rx_ios = q.udp_rx.ios, "h3 relay ended");
        }
        Opened::Refused { status, fields, body } => {
            tracing::info!(client = %conn.client, tunnel = %t.config.name, status, kind = what, "upstream refused the {what}; answer relayed");
            respond_with(&mut open.send, status, &fields, &body).await;
        }
    }
}

/// A session (WebTransport, CONNECT-UDP, CONNECT-IP): open its twin on the
/// tunnel's h3 upstream, pass the answer back, relay (`relay::session`).
async fn session(
    conn: &Conn,
    t: &Rc<crate::tunnel::Tunnel>,
    (protocol, draft): (SessionProtocol, wt::Draft),
    head: RequestHead,
    mut open: Opening,
) {
    let asked = std::time::Instant::now();
    let core = &conn.core;
    let edge = &core.edge;
    if t.config.http_version != crate::config::UpstreamVersion::H3 {
        let why = format!("{} is relayed to an h3 upstream only (http_version = \"h3\")", protocol.token());
        return refuse(conn, &mut open, Rejection::NotSupported(why), Some(&head), Some(t));
    }
    let limits = Deadlines { connect: edge.upstream_connect_timeout, handshake: edge.upstream_handshake_timeout };
    let opening = crate::upstream::h3::open_session(core, t, (protocol, draft), &head, limits);
    let (opened, dedicated) = match unless_cancelled(&mut open.send, opening).await {
        None => return,
        Some(Ok(o)) => o,
        Some(Err(rej)) => return refuse(conn, &mut open, rej, Some(&head), Some(t)),
    };
    let what = protocol.token();
    match opened {
        crate::upstream::h3::Answer::Open { stream: up, fields } => {
            let Some(relayed) = accept(conn, &mut open, t, (what, asked), &head, &fields).await else { return };
            drop((head, fields));
            stats::add(&core.stats.sessions_total, 1);
            tracing::debug!(client = %conn.client, tunnel = %t.config.name, kind = what, "h3 session relay started");
            // A session may be quiet on its request stream while datagrams
            // and streams flow: the QUIC connections' idle timeouts end it.
            let opts = RelayOptions { idle: Duration::from_secs(365 * 24 * 3600), splice: false, end_on_upstream_eof: false };
            let Some(down) = open.into_leg(conn) else { return };
            let r = crate::relay::session::relay(protocol, down, *up, opts, &core.stats).await;
            relayed.finish(core, t, &r);
            if let Some(q) = dedicated {
                q.close(Code::NO_ERROR.0, b"session ended");
            }
            tracing::debug!(client = %conn.client, tunnel = %t.config.name, kind = what, up = r.down_to_up, down = r.up_to_down, end = ?r.end, "h3 session relay ended");
        }
        crate::upstream::h3::Answer::Refused { status, fields, body } => {
            if let Some(q) = dedicated {
                q.close(Code::NO_ERROR.0, b"session refused");
            }
            tracing::info!(client = %conn.client, tunnel = %t.config.name, status, kind = what, "upstream refused the {what}; answer relayed");
            respond_with(&mut open.send, status, &fields, &body).await;
        }
    }
}

/// Answers 200 (with the upstream's `fields`) on a tunnel or session
/// stream; the relay's accounting starts (`None`: the client left first).
async fn accept(
    conn: &Conn,
    open: &mut Opening,
    t: &crate::tunnel::Tunnel,
    (kind, asked): (&'static str, std::time::Instant),
    head: &RequestHead,
    fields: &[Field],
) -> Option<crate::access::Relayed> {
    let mut answer = Vec::new();
    crate::codec::h3::encode_response(&response(200, fields), &mut answer);
    if let Err(e) = open.send.write_all(&answer).await {
        tracing::debug!(client = %conn.client, "stream gone before the answer: {e}");
        return None;
    }
    let route = crate::access::Route { kind, downstream: Version::H3, status: 200, asked };
    Some(crate::access::Relayed::start(&conn.core, t, conn.client, route, &head.target))
}

fn response(status: u16, fields: &[Field]) -> ResponseHead {
    ResponseHead {
        status,
        reason: String::new(),
        minor_version: 1,
        headers: fields.iter().map(|(n, v)| Header { name: n.clone(), value: v.clone() }).collect(),
    }
}

/// Sends a complete answer (HEADERS, DATA, FIN) on a stream.
async fn respond_with(send: &mut SendStream, status: u16, fields: &[Field], body: &[u8]) {
    let mut out = Vec::new();
    crate::codec::h3::encode_response(&response(status, fields), &mut out);
    let sent = async {
        send.write_all(&out).await?;
        send_data(send, body).await?;
        send.finish()
    };
    if let Err(e) = sent.await {
        tracing::debug!("h3 answer not delivered: {e}");
    }
}

/// A stream-level refusal, as [`answer`] decides on h3: a stream error for a
/// malformed request, a reset on a stealth tunnel, else its status and a
/// one-line body; and its log line. The rest of the request is not read.
fn refuse(conn: &Conn, open: &mut Opening, rej: Rejection, head: Option<&RequestHead>, tunnel: Option<&crate::tunnel::Tunnel>) {
    let a = answer(&rej, tunnel, Version::H3);
    record(&conn.core, conn.client, &rej, head, tunnel, &a);
    match a {
        Answer::Silent => {
            open.send.reset(Code::REQUEST_CANCELLED.0);
            open.stop(Code::REQUEST_CANCELLED);
        }
        Answer::StreamError => {
            open.send.reset(Code::MESSAGE_ERROR.0);
            open.stop(Code::MESSAGE_ERROR);
        }
        Answer::Respond(r) => {
            // Answered whole now (small), then the request side is stopped:
            // RFC 9114 §4.1 lets a server answer before the request ends.
            let mut out = Vec::new();
            crate::codec::h3::encode_response(&response(r.status, &r.fields), &mut out);
            let mut body = Vec::new();
            if !r.body.is_empty() {
                crate::h3::frame::encode_head(crate::h3::frame::ty::DATA, r.body.len() as u64, &mut body);
                body.extend_from_slice(&r.body);
            }
            out.extend_from_slice(&body);
            let waker = futures_util::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            // A refusal fits the stream's initial credit (bounded body).
            let written = open.send.poll_write(&mut cx, &out);
            if matches!(written, std::task::Poll::Ready(Ok(n)) if n == out.len()) {
                let _ = open.send.finish();
            } else {
                open.send.reset(Code::INTERNAL_ERROR.0);
            }
            if !open.ended {
                open.stop(Code::NO_ERROR);
            }
        }
    }
}
