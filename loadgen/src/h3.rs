//! HTTP/3 client side of `ws-h3`, `connect-h3`, `wt` and `connect-udp`:
//! many streams over few QUIC connections (`--streams-per-conn`), each
//! stream an extended CONNECT (`:protocol websocket`, RFC 9220;
//! `webtransport` draft-02; `connect-udp`, RFC 9298) or a plain CONNECT,
//! then bytes in DATA frames, on a WebTransport stream, or in HTTP
//! datagrams.
//!
//! The QUIC driver and the HTTP/3 framing are the edge's own
//! (`dataplane::quic`, `dataplane::h3`, `dataplane::relay::h3`): glommio has
//! no other QUIC stack, and the load generator must run on the same engine
//! it measures. Interop with third-party HTTP/3 stacks is the integration
//! tests' job (aioquic), not the load generator's.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use dataplane::h3::connection::{self as h3conn, Side};
use dataplane::h3::error::Code;
use dataplane::h3::settings::{id, Settings};
use dataplane::h3::stream::{RequestStream, StreamEvent};
use dataplane::h3::webtransport as wt;
use dataplane::http3::sessions::Sessions;
use dataplane::message::{Header, RequestHead};
use dataplane::quic::{self, RecvStream, SendStream};
use dataplane::relay::h3::{H3Reader, H3Reset, H3Stream, H3Writer};
use futures_lite::io::{AsyncRead, AsyncWrite};

use crate::session::Failure;

/// Receive window per stream (the connection gets 4×): large enough that a
/// bulk stream is not window-bound on loopback.
const STREAM_WINDOW: u32 = 4 << 20;

/// One HTTP/3 connection of a group.
pub struct Client {
    /// The QUIC connection (its datagrams are read by `connect-udp`).
    pub quic: quic::Connection,
    sessions: Rc<Sessions>,
    h3: Rc<RefCell<h3conn::Connection>>,
    _own: Vec<SendStream>,
}

struct Group {
    lock: Rc<glommio::sync::Semaphore>,
    client: Option<Rc<Client>>,
}

thread_local! {
    // Per core (glommio is thread-per-core): the client endpoints (IPv4,
    // IPv6) and the connection groups by index.
    static ENDPOINTS: RefCell<[Option<quic::Endpoint>; 2]> = const { RefCell::new([None, None]) };
    static GROUPS: RefCell<HashMap<usize, Group>> = RefCell::new(HashMap::new());
}

fn endpoint(v6: bool) -> Result<quic::Endpoint, Failure> {
    if let Some(ep) = ENDPOINTS.with(|e| e.borrow()[usize::from(v6)].clone()) {
        return Ok(ep);
    }
    let bind: SocketAddr = if v6 { "[::]:0" } else { "0.0.0.0:0" }
        .parse()
        .expect("literal address");
    // SWITCHYARD_QUIC_NO_GSO: one datagram per send (the GSO on/off bench);
    // SWITCHYARD_QUIC_MAX_UDP: probe for larger datagrams (loopback bench).
    let gso = std::env::var_os("SWITCHYARD_QUIC_NO_GSO").is_none();
    let limits = quic::endpoint::Limits {
        handshakes_before_retry: usize::MAX,
        gso,
    };
    let mut cfg = quinn_proto::EndpointConfig::default();
    if let Some(v) = std::env::var("SWITCHYARD_QUIC_MAX_UDP")
        .ok()
        .and_then(|v| v.parse::<u16>().ok())
    {
        let _ = cfg.max_udp_payload_size(v.max(1472));
    }
    let ep = quic::Endpoint::bind(bind, Arc::new(cfg), None, limits, Code::REQUEST_CANCELLED.0)
        .map_err(|e| Failure::Connect(format!("udp bind: {e}")))?;
    glommio::spawn_local(ep.clone().run(None, |_| {}, None)).detach();
    ENDPOINTS.with(|e| e.borrow_mut()[usize::from(v6)] = Some(ep.clone()));
    Ok(ep)
}

fn client_config(tls: &rustls::ClientConfig) -> Result<quinn_proto::ClientConfig, Failure> {
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn_proto::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| Failure::Tls(e.to_string()))?;
    let mut c = quinn_proto::ClientConfig::new(Arc::new(crypto));
    let mut t = quinn_proto::TransportConfig::default();
    t.stream_receive_window(quinn_proto::VarInt::from_u32(STREAM_WINDOW))
        .receive_window(quinn_proto::VarInt::from_u32(4 * STREAM_WINDOW))
        .max_concurrent_bidi_streams(quinn_proto::VarInt::from_u32(0))
        .max_idle_timeout(quinn_proto::IdleTimeout::try_from(Duration::from_secs(60)).ok());
    if let Some(v) = std::env::var("SWITCHYARD_QUIC_MAX_UDP")
        .ok()
        .and_then(|v| v.parse::<u16>().ok())
    {
        dataplane::quic::probe_mtu_up_to(&mut t, v);
    }
    c.transport_config(Arc::new(t));
    Ok(c)
}

/// The HTTP/3 connection of `group` on this core, dialled the first time
/// (one dial per group even when its streams start together).
pub async fn connection(
    group: usize,
    addr: SocketAddr,
    sni: &str,
    tls: &rustls::ClientConfig,
) -> Result<Rc<Client>, Failure> {
    let lock = GROUPS.with(|g| {
        g.borrow_mut()
            .entry(group)
            .or_insert_with(|| Group {
                lock: Rc::new(glommio::sync::Semaphore::new(1)),
                client: None,
            })
            .lock
            .clone()
    });
    let _permit = lock
        .acquire_permit(1)
        .await
        .map_err(|e| Failure::Connect(e.to_string()))?;
    let existing = GROUPS.with(|g| g.borrow().get(&group).and_then(|x| x.client.clone()));
    if let Some(c) = existing.filter(|c| c.quic.close_reason().is_none()) {
        return Ok(c);
    }
    let conn = endpoint(addr.is_ipv6())?
        .connect(client_config(tls)?, addr, sni)
        .map_err(|e| Failure::Connect(e.to_string()))?;
    conn.connected()
        .await
        .map_err(|e| Failure::Tls(format!("quic: {e}")))?;
    let mut local = Settings::default();
    local.set(id::H3_DATAGRAM, 1);
    local.set(wt::setting::ENABLE_WEBTRANSPORT_DRAFT02, 1);
    let h3 = Rc::new(RefCell::new(h3conn::Connection::new(Side::Client, local)));
    let sessions = Sessions::new(Arc::new(dataplane::stats::CoreStats::default()));
    let preface = h3.borrow().control_preface();
    let own = dataplane::http3::own_streams(&conn, preface)
        .await
        .map_err(|e| Failure::Handshake(format!("h3: {e}")))?;
    glommio::spawn_local(dataplane::http3::peer_streams(
        conn.clone(),
        h3.clone(),
        sessions.clone(),
        usize::MAX,
    ))
    .detach();
    // The server's SETTINGS first: they say whether extended CONNECT is on.
    let deadline = Instant::now() + Duration::from_secs(10);
    while h3.borrow().peer_settings().is_none() {
        if Instant::now() > deadline || conn.close_reason().is_some() {
            return Err(Failure::Handshake("no SETTINGS from the server".into()));
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    let client = Rc::new(Client {
        quic: conn,
        sessions,
        h3,
        _own: own,
    });
    GROUPS.with(|g| {
        if let Some(x) = g.borrow_mut().get_mut(&group) {
            x.client = Some(client.clone());
        }
    });
    Ok(client)
}

/// Opens one stream: `protocol` set = extended CONNECT to `authority` +
/// `path`, else plain CONNECT to the authority.
pub async fn open(
    client: &Client,
    authority: &str,
    path: &str,
    protocol: Option<&str>,
    headers: &[(String, String)],
) -> Result<H3Io, Failure> {
    open_stream(client, authority, path, protocol, headers)
        .await
        .map(|(io, _)| io)
}

/// A WebTransport (draft-02) session to `authority` + `path`, and one
/// bidirectional stream of it: raw bytes both ways.
pub async fn open_webtransport(
    client: &Client,
    authority: &str,
    path: &str,
    headers: &[(String, String)],
) -> Result<WtIo, Failure> {
    let mut headers = headers.to_vec();
    headers.push(("sec-webtransport-http3-draft02".into(), "1".into()));
    headers.push(("origin".into(), format!("https://{authority}")));
    let (session, id) =
        open_stream(client, authority, path, Some("webtransport"), &headers).await?;
    let (mut send, recv) = client
        .quic
        .open_bi()
        .await
        .map_err(|e| Failure::Handshake(format!("h3: {e}")))?;
    let mut head = Vec::new();
    wt::stream_header(true, id, &mut head);
    send.write_all(&head)
        .await
        .map_err(|e| Failure::Io(e.to_string()))?;
    Ok(WtIo {
        _session: session,
        send,
        recv,
        pending: bytes::Bytes::new(),
    })
}

/// A session that carries HTTP datagrams: CONNECT-UDP (RFC 9298),
/// CONNECT-IP (RFC 9484) or WebTransport (draft-02), to `authority` +
/// `path`: its request stream (held open) and the quarter stream id its
/// datagrams carry.
pub async fn open_datagram_session(
    client: &Client,
    protocol: &str,
    authority: &str,
    path: &str,
    headers: &[(String, String)],
) -> Result<(H3Io, u64), Failure> {
    if !client
        .h3
        .borrow()
        .peer_settings()
        .is_some_and(|s| s.h3_datagram())
    {
        return Err(Failure::Handshake(
            "server did not enable H3_DATAGRAM".into(),
        ));
    }
    let mut headers = headers.to_vec();
    if protocol == "webtransport" {
        headers.push(("sec-webtransport-http3-draft02".into(), "1".into()));
        headers.push(("origin".into(), format!("https://{authority}")));
    } else {
        headers.push(("capsule-protocol".into(), "?1".into()));
    }
    let (io, id) = open_stream(client, authority, path, Some(protocol), &headers).await?;
    Ok((io, wt::quarter_id(id)))
}

async fn open_stream(
    client: &Client,
    authority: &str,
    path: &str,
    protocol: Option<&str>,
    headers: &[(String, String)],
) -> Result<(H3Io, u64), Failure> {
    let extended = client
        .h3
        .borrow()
        .peer_settings()
        .is_some_and(|s| s.extended_connect());
    if protocol.is_some() && !extended {
        return Err(Failure::Handshake(
            "server did not enable extended CONNECT".into(),
        ));
    }
    let (mut send, mut recv) = client
        .quic
        .open_bi()
        .await
        .map_err(|e| Failure::Handshake(format!("h3: {e}")))?;
    let mut fields = vec![Header {
        name: "host".into(),
        value: authority.as_bytes().to_vec(),
    }];
    if protocol == Some("websocket") {
        fields.push(Header {
            name: "sec-websocket-version".into(),
            value: b"13".to_vec(),
        });
    }
    fields.extend(headers.iter().map(|(k, v)| Header {
        name: k.to_ascii_lowercase(),
        value: v.as_bytes().to_vec(),
    }));
    let target = if protocol.is_some() { path } else { authority };
    let head = RequestHead {
        method: "CONNECT".into(),
        target: target.into(),
        minor_version: 1,
        headers: fields,
    };
    let mut out = Vec::new();
    dataplane::codec::h3::encode_request(&head, protocol, &mut out);
    send.write_all(&out)
        .await
        .map_err(|e| Failure::Io(e.to_string()))?;
    let mut frames = RequestStream::new(64 * 1024);
    let id = send.id();
    loop {
        let mut raw = match recv.chunk(64 * 1024).await {
            Ok(Some(b)) => b,
            Ok(None) => return Err(Failure::Handshake("stream ended before the answer".into())),
            Err(e) => return Err(Failure::Handshake(format!("h3: {e}"))),
        };
        while !raw.is_empty() {
            let (used, event) = frames
                .read(&raw)
                .map_err(|e| Failure::Handshake(format!("h3: {e}")))?;
            let fields = match event {
                Some(StreamEvent::Head(f)) => Some(f),
                _ => None,
            };
            bytes::Buf::advance(&mut raw, used);
            if let Some(fields) = fields {
                let answer = dataplane::codec::h3::response_head(&fields)
                    .map_err(|e| Failure::Handshake(format!("answer: {e}")))?;
                if !(200..300).contains(&answer.status) {
                    return Err(Failure::Handshake(format!("status {}", answer.status)));
                }
                let (r, w, reset) = H3Stream {
                    conn: client.quic.clone(),
                    sessions: client.sessions.clone(),
                    send,
                    recv,
                    frames,
                    rest: raw,
                    capsules: None,
                }
                .split();
                return Ok((
                    H3Io {
                        r,
                        w,
                        _reset: reset,
                    },
                    id,
                ));
            }
        }
    }
}

/// One stream as a byte stream: DATA in, DATA out, FIN on close.
pub struct H3Io {
    r: H3Reader,
    w: H3Writer,
    _reset: H3Reset,
}

impl H3Io {
    /// The stream's halves (and the handle that resets it on drop).
    pub fn into_parts(self) -> (H3Reader, H3Writer, H3Reset) {
        (self.r, self.w, self._reset)
    }
}

impl AsyncRead for H3Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().r).poll_read(cx, buf)
    }
}

impl AsyncWrite for H3Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().w).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().w).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().w).poll_close(cx)
    }
}

/// One bidirectional WebTransport stream as a byte stream (no HTTP/3
/// framing after its header); the session's CONNECT stream is held open
/// as long as it.
pub struct WtIo {
    _session: H3Io,
    send: SendStream,
    recv: RecvStream,
    pending: bytes::Bytes,
}

impl AsyncRead for WtIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_empty() {
            match std::task::ready!(this.recv.poll_chunk(cx, 64 * 1024)) {
                Ok(Some(b)) => this.pending = b,
                Ok(None) => return Poll::Ready(Ok(0)),
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
        let n = this.pending.len().min(buf.len());
        buf[..n].copy_from_slice(&this.pending[..n]);
        bytes::Buf::advance(&mut this.pending, n);
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for WtIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .send
            .poll_write(cx, buf)
            .map_err(io::Error::from)
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().send.finish().map_err(io::Error::from))
    }
}
