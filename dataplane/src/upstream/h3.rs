//! HTTP/3 upstreams (`http_version = "h3"`): per core, one QUIC connection
//! per tunnel, shared by all its streams (HTTP/3 multiplexes; a new
//! connection only when the last one ended or said GOAWAY), from a client
//! endpoint of the core (an ephemeral UDP port per address family).
//!
//! The upstream's certificate is checked against the tunnel's
//! `upstream_tls.ca` (else the system roots) for `upstream_tls.server_name`
//! (else the upstream's host); `insecure = true` checks nothing (tests).
//! A WebSocket is opened only after the upstream's SETTINGS enabled
//! extended CONNECT (RFC 9220 §3), else 502. Ordinary requests of h2 and
//! h3 clients ([`send_request`]) are streams of the same pooled connection:
//! HEADERS, the body as DATA, the answer read back by the caller.
//!
//! Sessions ([`open_session`]: CONNECT-UDP, CONNECT-IP, WebTransport) also
//! need the upstream's H3_DATAGRAM (and for WebTransport its draft-02
//! setting). A WebTransport session gets a connection of its own: draft-02
//! has no per-session flow control, so one session could starve another
//! sharing its connection (RELAY-FACTS conformance 20).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn_proto::{ClientConfig, IdleTimeout, TransportConfig, VarInt};

use super::session::{Ask, AskKind, Deadlines, Opened};
use crate::config::UpstreamTls;
use crate::core::CoreCtx;
use crate::error::Rejection;
use crate::h3::connection::{self as h3conn, Side};
use crate::h3::error::Code;
use crate::h3::settings::{id, Settings};
use crate::h3::webtransport::{self as wt};
use crate::http3::sessions::{self, Sessions, WtStream};
use crate::intent::SessionProtocol;
use crate::h3::stream::{RequestStream, StreamEvent};
use crate::message::{Header, RequestHead};
use crate::policy::{answer_fields, session_answer_fields};
use crate::quic;
use crate::relay::h3::{H3Reader, H3Stream};
use crate::relay::Leg;
use crate::target::Upstream;
use crate::timeout::with_timeout;
use crate::tunnel::Tunnel;

/// Largest refusal body passed back to the downstream.
const MAX_REFUSAL_BODY: usize = 64 * 1024;
/// Receive window per upstream stream; the connection's is 4×.
const STREAM_WINDOW: u32 = 1 << 20;

/// One HTTP/3 connection to an upstream.
struct H3Upstream {
    quic: quic::Connection,
    h3: Rc<RefCell<h3conn::Connection>>,
    sessions: Rc<Sessions>,
    /// The upstream and certificate check it was dialed for (a changed
    /// tunnel dials anew).
    upstream: String,
    tls: UpstreamTls,
}

impl H3Upstream {
    fn usable(&self) -> bool {
        self.quic.close_reason().is_none() && self.h3.borrow().peer_goaway().is_none()
    }
}

/// This core's h3 upstream connections and client endpoints.
#[derive(Default)]
pub struct H3Pool {
    /// Client endpoints: IPv4, IPv6.
    endpoints: RefCell<[Option<quic::Endpoint>; 2]>,
    conns: RefCell<HashMap<String, Rc<H3Upstream>>>,
    /// One dial at a time per tunnel.
    dialing: RefCell<HashMap<String, Rc<glommio::sync::Semaphore>>>,
    /// Client configs by certificate check (a tunnel whose check changes
    /// gets a new one).
    configs: RefCell<HashMap<UpstreamTls, ClientConfig>>,
}

impl std::fmt::Debug for H3Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Pool").field("connections", &self.conns.borrow().len()).finish()
    }
}

impl H3Pool {
    fn endpoint(&self, v6: bool, max_udp_payload: u16) -> Result<quic::Endpoint, Rejection> {
        let slot = usize::from(v6);
        if let Some(ep) = &self.endpoints.borrow()[slot] {
            return Ok(ep.clone());
        }
        let bind: SocketAddr = if v6 { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("literal address");
        let limits = quic::endpoint::Limits { handshakes_before_retry: usize::MAX, gso: true };
        let mut cfg = quinn_proto::EndpointConfig::default();
        let _ = cfg.max_udp_payload_size(max_udp_payload.max(1472));
        let ep = quic::Endpoint::bind(bind, Arc::new(cfg), None, limits, Code::REQUEST_CANCELLED.0)
            .map_err(|e| Rejection::UpstreamUnreachable { addr: bind.to_string(), reason: format!("cannot bind a UDP socket: {e}") })?;
        glommio::spawn_local(ep.clone().run(None, |_| {}, None)).detach();
        self.endpoints.borrow_mut()[slot] = Some(ep.clone());
        Ok(ep)
    }

    fn client_config(&self, t: &Tunnel, idle: Duration, max_udp_payload: u16) -> Result<ClientConfig, Rejection> {
        if let Some(c) = self.configs.borrow().get(&t.config.upstream_tls) {
            return Ok(c.clone());
        }
        let c = client_config(&t.config.upstream_tls, idle, max_udp_payload)
            .map_err(|reason| Rejection::UpstreamUnreachable { addr: t.config.upstream.clone(), reason })?;
        self.configs.borrow_mut().insert(t.config.upstream_tls.clone(), c.clone());
        Ok(c)
    }

    /// A usable connection to `t`'s upstream: the pooled one, or a new one.
    async fn connection(&self, core: &Rc<CoreCtx>, t: &Tunnel, limits: Deadlines) -> Result<Rc<H3Upstream>, Rejection> {
        let reuse = |pool: &Self| {
            pool.conns.borrow().get(&t.config.name).filter(|c| c.usable() && c.upstream == t.config.upstream && c.tls == t.config.upstream_tls).cloned()
        };
        if let Some(c) = reuse(self) {
            return Ok(c);
        }
        // One dial per tunnel at a time: the streams that arrive while it
        // runs share its connection instead of dialing their own.
        let lock = self.dialing.borrow_mut().entry(t.config.name.clone()).or_insert_with(|| Rc::new(glommio::sync::Semaphore::new(1))).clone();
        let _permit = lock.acquire_permit(1).await.map_err(|e| Rejection::UpstreamUnreachable { addr: t.config.upstream.clone(), reason: e.to_string() })?;
        if let Some(c) = reuse(self) {
            return Ok(c);
        }
        let c = Rc::new(self.dial(core, t, limits).await?);
        self.conns.borrow_mut().insert(t.config.name.clone(), c.clone());
        Ok(c)
    }

    async fn dial(&self, core: &Rc<CoreCtx>, t: &Tunnel, limits: Deadlines) -> Result<H3Upstream, Rejection> {
        let name = t.config.upstream.as_str();
        let (host, addrs) = match &t.upstream {
            Upstream::Addr(a) => (a.ip().to_string(), vec![*a]),
            Upstream::Name { host, port } => match with_timeout(limits.connect, core.resolver.resolve(host, *port)).await {
                Some(Ok(addrs)) => (host.clone(), addrs),
                Some(Err(reason)) => {
                    return Err(Rejection::UpstreamUnreachable { addr: name.to_owned(), reason: format!("cannot resolve: {reason}") })
                }
                None => return Err(Rejection::UpstreamTimeout { addr: format!("{name} (resolving)"), after: limits.connect }),
            },
        };
        let server_name = t.config.upstream_tls.server_name.clone().unwrap_or(host);
        let max_udp = core.edge.quic_max_udp_payload;
        let config = self.client_config(t, core.edge.idle_timeout, max_udp)?;
        let mut last = Rejection::UpstreamUnreachable { addr: name.to_owned(), reason: "no address".into() };
        for addr in addrs {
            let ep = self.endpoint(addr.is_ipv6(), max_udp)?;
            let quic = ep
                .connect(config.clone(), addr, &server_name)
                .map_err(|e| Rejection::UpstreamUnreachable { addr: addr.to_string(), reason: e.to_string() })?;
            match with_timeout(limits.connect, quic.connected()).await {
                Some(Ok(())) => return start(core, quic, t).await,
                Some(Err(e)) => {
                    last = Rejection::UpstreamUnreachable { addr: addr.to_string(), reason: format!("QUIC handshake: {e}") }
                }
                None => {
                    quic.close(Code::NO_ERROR.0, b"handshake timeout");
                    last = Rejection::UpstreamTimeout { addr: addr.to_string(), after: limits.connect }
                }
            }
        }
        Err(last)
    }
}

/// HTTP/3 on a fresh connection: our streams out, the peer's read.
async fn start(core: &Rc<CoreCtx>, quic: quic::Connection, t: &Tunnel) -> Result<H3Upstream, Rejection> {
    let mut local = Settings::default();
    local.set(id::MAX_FIELD_SECTION_SIZE, core.edge.max_head_bytes as u64);
    local.set(id::H3_DATAGRAM, 1);
    local.set(wt::setting::ENABLE_WEBTRANSPORT_DRAFT02, 1);
    // draft-15, with initial WebTransport credit the upstream never runs
    // out of (the relay does not send flow-control capsules).
    local.set(wt::setting::WT_ENABLED, 1);
    local.set(wt::setting::WT_INITIAL_MAX_DATA, (1 << 62) - 1);
    local.set(wt::setting::WT_INITIAL_MAX_STREAMS_UNI, 1 << 60);
    local.set(wt::setting::WT_INITIAL_MAX_STREAMS_BIDI, 1 << 60);
    let h3 = Rc::new(RefCell::new(h3conn::Connection::new(Side::Client, local)));
    let preface = h3.borrow().control_preface();
    let own = crate::http3::own_streams(&quic, preface)
        .await
        .map_err(|e| Rejection::UpstreamUnreachable { addr: t.config.upstream.clone(), reason: format!("h3 set-up: {e}") })?;
    // Our control and QPACK streams live as long as the connection (the
    // task reading the peer's streams ends with it), not as long as the
    // pool holds it: closing them is H3_CLOSED_CRITICAL_STREAM for the
    // streams still relaying on it.
    let sessions = Sessions::new(core.stats.clone());
    let (q, state, s) = (quic.clone(), h3.clone(), sessions.clone());
    glommio::spawn_local(async move {
        crate::http3::peer_streams(q, state, s, usize::MAX).await;
        drop(own);
    })
    .detach();
    glommio::spawn_local(sessions::datagrams(quic.clone(), sessions.clone())).detach();
    glommio::spawn_local(server_streams(quic.clone(), sessions.clone())).detach();
    Ok(H3Upstream { quic, h3, sessions, upstream: t.config.upstream.clone(), tls: t.config.upstream_tls.clone() })
}

/// Bidirectional streams the upstream opens: WebTransport streams go to
/// their session; HTTP/3 itself has none (RFC 9114 §6.1:
/// H3_STREAM_CREATION_ERROR).
async fn server_streams(quic: quic::Connection, sessions: Rc<Sessions>) {
    while let Ok((mut send, mut recv)) = quic.accept_bi().await {
        let (q, s) = (quic.clone(), sessions.clone());
        glommio::spawn_local(async move {
            match crate::http3::first_varint(&mut recv).await {
                Some((wt::BIDI_SIGNAL, rest)) => sessions::accept_stream(q, s, WtStream::Bidi(send, recv), rest).await,
                Some(_) => {
                    tracing::info!(upstream = %q.remote_address(), "h3 upstream opened a bidirectional stream that is not WebTransport; closing");
                    q.close(Code::STREAM_CREATION_ERROR.0, b"server-initiated bidirectional stream");
                }
                None => {
                    send.reset(Code::REQUEST_CANCELLED.0);
                }
            }
        })
        .detach();
    }
}

/// The upstream's SETTINGS, within `timeout`.
async fn peer_settings(up: &H3Upstream, timeout: Duration) -> Option<Settings> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = up.h3.borrow().peer_settings() {
            return Some(s.clone());
        }
        if Instant::now() >= deadline || up.quic.close_reason().is_some() {
            return None;
        }
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
}

/// Opens the session `ask` on an h3 upstream stream.
pub async fn open(core: &Rc<CoreCtx>, t: &Tunnel, ask: Ask, limits: Deadlines) -> Result<Opened, Rejection> {
    let up = core.h3.connection(core, t, limits).await?;
    let bad = |reason: String| Rejection::UpstreamBadAnswer(reason);
    if ask.kind == AskKind::WebSocket {
        match peer_settings(&up, limits.handshake).await {
            Some(s) if s.extended_connect() => {}
            Some(_) => return Err(bad("h3 upstream did not enable extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL)".into())),
            None => return Err(Rejection::UpstreamTimeout { addr: t.config.upstream.clone(), after: limits.handshake }),
        }
    }
    let (target, protocol) = match &ask.kind {
        AskKind::WebSocket => (ask.path.clone(), Some("websocket")),
        AskKind::Connect { authority } => (authority.clone(), None),
    };
    let authority = match &ask.kind {
        AskKind::WebSocket => ask.authority.clone(),
        AskKind::Connect { authority } => authority.clone(),
    };
    let mut headers = vec![Header { name: "host".into(), value: authority.into_bytes() }];
    if ask.kind == AskKind::WebSocket {
        headers.push(Header { name: "sec-websocket-version".into(), value: b"13".to_vec() });
    }
    headers.extend(ask.fields.iter().map(|(n, v)| Header { name: n.clone(), value: v.clone() }));
    let head = RequestHead { method: "CONNECT".into(), target, minor_version: 1, headers };
    let websocket = ask.kind == AskKind::WebSocket;
    Ok(match exchange(core, t, &up, &head, protocol, limits).await? {
        Answer::Open { stream, fields } => Opened::Open { leg: Leg::H3(*stream), early: Vec::new(), fields: session_answer_fields(fields, websocket) },
        Answer::Refused { status, fields, body } => Opened::Refused { status, fields, body },
    })
}

/// An upstream's answer to an extended CONNECT.
pub enum Answer {
    /// 2xx: the upstream end of the relay, and the answer's end-to-end fields.
    Open { stream: Box<H3Stream>, fields: Vec<crate::message::Field> },
    /// Anything else, passed back as it is (body bounded).
    Refused { status: u16, fields: Vec<crate::message::Field>, body: Vec<u8> },
}

/// Opens a session (`protocol`) for `head` (its `:authority`, path and
/// end-to-end fields) on `t`'s h3 upstream: the upstream end of a session
/// relay, and the dedicated connection to close after it (WebTransport).
/// WebTransport goes up in the newest draft the upstream enabled, and its
/// answer comes back in the client's `down_draft`.
pub async fn open_session(
    core: &Rc<CoreCtx>,
    t: &Tunnel,
    (protocol, down_draft): (SessionProtocol, wt::Draft),
    head: &RequestHead,
    limits: Deadlines,
) -> Result<(Answer, Option<quic::Connection>), Rejection> {
    let up = match protocol {
        SessionProtocol::WebTransport => Rc::new(core.h3.dial(core, t, limits).await?),
        _ => core.h3.connection(core, t, limits).await?,
    };
    let dedicated = (protocol == SessionProtocol::WebTransport).then(|| up.quic.clone());
    let bad = |reason: String| Rejection::UpstreamBadAnswer(reason);
    let refused = |what: &str| {
        if let Some(q) = &dedicated {
            q.close(Code::NO_ERROR.0, b"");
        }
        bad(format!("h3 upstream did not enable {what}"))
    };
    let up_draft = match peer_settings(&up, limits.handshake).await {
        Some(s) if !s.extended_connect() => return Err(refused("extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL)")),
        Some(s) if !s.h3_datagram() || up.quic.max_datagram_size().is_none() => {
            return Err(refused("HTTP datagrams (SETTINGS_H3_DATAGRAM and max_datagram_frame_size)"))
        }
        Some(s) => wt::Draft::of_peer(|id| s.get(id)),
        None => return Err(Rejection::UpstreamTimeout { addr: t.config.upstream.clone(), after: limits.handshake }),
    };
    let mut fields = crate::policy::request_fields(head);
    let token = match (protocol, up_draft) {
        (SessionProtocol::WebTransport, None) => {
            return Err(refused("WebTransport (SETTINGS_ENABLE_WEBTRANSPORT draft-02 or SETTINGS_WT_ENABLED)"))
        }
        (SessionProtocol::WebTransport, Some(draft)) => {
            draft.request_fields(&mut fields);
            draft.token()
        }
        _ => protocol.token(),
    };
    let mut headers = vec![Header { name: "host".into(), value: head.host().unwrap_or_default().as_bytes().to_vec() }];
    headers.extend(fields.into_iter().map(|(name, value)| Header { name, value }));
    let request = RequestHead { method: "CONNECT".into(), target: head.target.clone(), minor_version: 1, headers };
    match exchange(core, t, &up, &request, Some(token), limits).await {
        Ok(Answer::Open { stream, mut fields }) if protocol == SessionProtocol::WebTransport => {
            down_draft.answer_fields(&mut fields);
            Ok((Answer::Open { stream, fields }, dedicated))
        }
        Ok(opened) => Ok((opened, dedicated)),
        Err(e) => {
            if let Some(q) = &dedicated {
                q.close(Code::NO_ERROR.0, b"");
            }
            Err(e)
        }
    }
}

/// Sends `head` on a new stream of `up` and reads the answer: 2xx opens
/// the relay's upstream leg, anything else comes back as a refusal.
async fn exchange(
    core: &Rc<CoreCtx>,
    t: &Tunnel,
    up: &H3Upstream,
    head: &RequestHead,
    protocol: Option<&str>,
    limits: Deadlines,
) -> Result<Answer, Rejection> {
    let bad = |reason: String| Rejection::UpstreamBadAnswer(reason);
    let (mut send, mut recv) = up.quic.open_bi().await.map_err(|e| bad(format!("h3: {e}")))?;
    let mut out = Vec::new();
    crate::codec::h3::encode_request(head, protocol, &mut out);
    send.write_all(&out).await.map_err(|e| bad(format!("h3: {e}")))?;
    let (answer, frames, rest) = answer_head(core, t, &mut recv, limits).await?;
    let status = answer.status;
    let fields = answer_fields(answer.headers.iter().map(|h| (h.name.as_str(), h.value.as_slice())), false);
    if (200..300).contains(&status) {
        let stream = H3Stream { conn: up.quic.clone(), sessions: up.sessions.clone(), send, recv, frames, rest, capsules: None };
        return Ok(Answer::Open { stream: Box::new(stream), fields });
    }
    // Refused: its body (bounded) goes back; the stream is done.
    send.reset(Code::REQUEST_CANCELLED.0);
    let mut reader = H3Reader::body(up.quic.clone(), recv, frames, rest);
    let mut body = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while body.len() < MAX_REFUSAL_BODY {
        match with_timeout(limits.handshake, futures_lite::AsyncReadExt::read(&mut reader, &mut buf)).await {
            Some(Ok(n)) if n > 0 => body.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    body.truncate(MAX_REFUSAL_BODY);
    Ok(Answer::Refused { status, fields, body })
}

/// Reads the final answer head of an upstream stream (interim 1xx heads
/// skipped), within the handshake timeout: the head, the stream's parser
/// past it, and the bytes read after it.
async fn answer_head(
    core: &CoreCtx,
    t: &Tunnel,
    recv: &mut quic::RecvStream,
    limits: Deadlines,
) -> Result<(crate::message::ResponseHead, RequestStream, bytes::Bytes), Rejection> {
    let bad = |reason: String| Rejection::UpstreamBadAnswer(reason);
    let mut frames = RequestStream::new(core.edge.max_head_bytes as u64);
    let read = async {
        loop {
            let mut raw = match recv.chunk(64 * 1024).await {
                Ok(Some(b)) => b,
                Ok(None) => return Err(bad("h3 upstream ended the stream before its answer".into())),
                Err(e) => return Err(bad(format!("h3 upstream: {e}"))),
            };
            while !raw.is_empty() {
                let (used, event) = frames.read(&raw).map_err(|e| bad(format!("h3 upstream: {e}")))?;
                let fields = match event {
                    Some(StreamEvent::Head(fields)) => Some(fields),
                    _ => None,
                };
                bytes::Buf::advance(&mut raw, used);
                if let Some(fields) = fields {
                    let head = crate::codec::h3::response_head(&fields).map_err(|e| bad(format!("h3 upstream answer: {e}")))?;
                    if head.status < 200 {
                        frames.interim_head();
                        continue;
                    }
                    return Ok((head, raw));
                }
            }
        }
    };
    match with_timeout(limits.handshake, read).await {
        Some(r) => r.map(|(head, rest)| (head, frames, rest)),
        None => Err(Rejection::UpstreamTimeout { addr: t.config.upstream.clone(), after: limits.handshake }),
    }
}

/// An ordinary request on `t`'s h3 upstream: a stream of the pooled
/// connection with the request's HEADERS sent (`:authority` from Host; the
/// client's `content-length` kept, which the upstream checks against the
/// DATA), ended at once when there is no body. Returns the stream's sending
/// half, for the body, and its answer to come.
pub async fn send_request(
    core: &Rc<CoreCtx>,
    t: &Tunnel,
    head: &RequestHead,
    body: &super::request::Body,
    limits: Deadlines,
) -> Result<(quic::SendStream, PendingAnswer), Rejection> {
    let up = core.h3.connection(core, t, limits).await?;
    let bad = |reason: String| Rejection::UpstreamBadAnswer(reason);
    let mut headers = vec![Header { name: "host".into(), value: head.host().unwrap_or_default().as_bytes().to_vec() }];
    headers.extend(crate::policy::request_fields(head).into_iter().map(|(name, value)| Header { name, value }));
    if let super::request::Body::Length(n) = body {
        headers.push(Header { name: "content-length".into(), value: n.clone() });
    }
    let request = RequestHead { method: head.method.clone(), target: head.target.clone(), minor_version: 1, headers };
    let (mut send, recv) = up.quic.open_bi().await.map_err(|e| bad(format!("h3: {e}")))?;
    let mut out = Vec::new();
    crate::codec::h3::encode_request(&request, None, &mut out);
    send.write_all(&out).await.map_err(|e| bad(format!("h3: {e}")))?;
    if *body == super::request::Body::None {
        send.finish().map_err(|e| bad(format!("h3: {e}")))?;
    }
    Ok((send, PendingAnswer { conn: up.quic.clone(), recv }))
}

/// The answer to a request of [`send_request`], still to come.
pub struct PendingAnswer {
    conn: quic::Connection,
    recv: quic::RecvStream,
}

impl PendingAnswer {
    /// The answer's final head, and a reader of its body (DATA payloads;
    /// EOF at the stream's FIN, an error on a reset).
    pub async fn head(mut self, core: &CoreCtx, t: &Tunnel, limits: Deadlines) -> Result<(crate::message::ResponseHead, H3Reader), Rejection> {
        let (head, frames, rest) = answer_head(core, t, &mut self.recv, limits).await?;
        Ok((head, H3Reader::body(self.conn, self.recv, frames, rest)))
    }
}

/// The client config of an h3 upstream: TLS 1.3, ALPN h3, the tunnel's
/// certificate check.
pub fn client_config(tls: &UpstreamTls, idle: Duration, max_udp_payload: u16) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?;
    let mut cfg = if tls.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let pem = match (&tls.ca_pem, &tls.ca) {
            (Some(pem), _) => Some((pem.as_bytes().to_vec(), "upstream_tls.ca_pem".to_owned())),
            (None, Some(path)) => {
                let what = format!("upstream_tls.ca {}", path.display());
                Some((std::fs::read(path).map_err(|e| format!("{what}: {e}"))?, what))
            }
            (None, None) => None,
        };
        match pem {
            Some((pem, what)) => {
                for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                    let cert = cert.map_err(|e| format!("{what}: {e}"))?;
                    roots.add(cert).map_err(|e| format!("{what}: {e}"))?;
                }
                if roots.is_empty() {
                    return Err(format!("{what}: no certificate"));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err("no system root certificates (set upstream_tls.ca)".into());
                }
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    cfg.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn_proto::crypto::rustls::QuicClientConfig::try_from(cfg).map_err(|e| e.to_string())?;
    let mut client = ClientConfig::new(Arc::new(crypto));
    let mut transport = TransportConfig::default();
    transport
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(4 * STREAM_WINDOW))
        // control, QPACK and WebTransport streams; server-initiated bidi
        // streams are WebTransport's only
        .max_concurrent_uni_streams(VarInt::from_u32(quic::MAX_UNI_STREAMS))
        .max_concurrent_bidi_streams(VarInt::from_u32(quic::MAX_UNI_STREAMS))
        .max_idle_timeout(IdleTimeout::try_from(idle).ok())
        .datagram_receive_buffer_size(Some(quic::DATAGRAM_RECEIVE_BUFFER));
    quic::probe_mtu_up_to(&mut transport, max_udp_payload);
    client.transport_config(Arc::new(transport));
    Ok(client)
}

/// `upstream_tls.insecure`: every certificate is accepted (its signature
/// over the handshake is still checked, so the key is the certificate's).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
