//! Establishing one upgraded stream: transport, then the handshake of the
//! chosen protocol. Every failure is classified for the error report.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};

use crate::httpupgrade::{self, DialConfig, ResponseReader};
use crate::net::{self, ProxyVersion, Stream};
use crate::ws;

/// Which handshake opens the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Via {
    /// No handshake: plain TCP (the direct baseline).
    Raw,
    /// WebSocket (RFC 6455) opening handshake; messages are framed.
    Ws,
    /// Xray-compatible HTTPUpgrade; raw bytes after the 101.
    Httpupgrade,
    /// Plain CONNECT to `--connect-target`; raw bytes after the 2xx.
    Connect,
    /// One plain `GET` with `Connection: close` per connection (setup mode
    /// only): the scenario of `wrk -H 'Connection: close'`, to check the
    /// generator against a known tool on the same server.
    Http,
    /// WebSocket over HTTP/2 extended CONNECT (RFC 8441); messages framed.
    #[value(name = "ws-h2")]
    WsH2,
    /// Plain CONNECT over HTTP/2 to `--connect-target`.
    #[value(name = "connect-h2")]
    ConnectH2,
    /// WebSocket over HTTP/3 extended CONNECT (RFC 9220); messages framed.
    #[value(name = "ws-h3")]
    WsH3,
    /// Plain CONNECT over HTTP/3 to `--connect-target`.
    #[value(name = "connect-h3")]
    ConnectH3,
    /// A WebTransport (draft-02) session and one bidirectional stream of
    /// it; raw bytes.
    Wt,
    /// CONNECT-UDP (RFC 9298): HTTP datagrams (datagram modes only).
    #[value(name = "connect-udp")]
    ConnectUdp,
    /// CONNECT-IP (RFC 9484): IP packets in HTTP datagrams (datagram modes only).
    #[value(name = "connect-ip")]
    ConnectIp,
}

impl Via {
    /// Whether the stream runs over a shared HTTP/2 connection.
    pub fn is_h2(self) -> bool {
        matches!(self, Via::WsH2 | Via::ConnectH2)
    }
    /// Whether the stream runs over a shared HTTP/3 (QUIC) connection.
    pub fn is_h3(self) -> bool {
        matches!(
            self,
            Via::WsH3 | Via::ConnectH3 | Via::Wt | Via::ConnectUdp | Via::ConnectIp
        )
    }
    /// Whether messages are WebSocket-framed.
    pub fn framed(self) -> bool {
        matches!(self, Via::Ws | Via::WsH2 | Via::WsH3)
    }
}

/// Connection settings shared by all modes.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where to connect.
    pub addr: std::net::SocketAddr,
    /// TLS client config, if TLS.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// SNI (defaults to `host`).
    pub sni: String,
    /// Host header.
    pub host: String,
    /// Request path.
    pub path: String,
    /// Bearer token.
    pub token: Option<String>,
    /// PROXY header to send.
    pub proxy: Option<ProxyVersion>,
    /// CONNECT target.
    pub connect_target: String,
    /// HTTPUpgrade early-data mode.
    pub ed: bool,
    /// Bound on connect + handshake.
    pub timeout: Duration,
    /// HTTP/2 vias: streams that share one connection.
    pub streams_per_conn: usize,
}

/// An established stream.
pub struct Session {
    /// The stream.
    pub stream: Stream,
    /// Bytes received after the handshake head (belong to the payload).
    pub leftover: Vec<u8>,
    /// In `ed` mode the 101 is still to be read.
    pub pending: Option<ResponseReader>,
    /// Read buffer (heap: large futures must not carry it on the stack).
    pub buf: SessionBuf,
}

/// Read buffer size of a session.
const BUF: usize = 64 * 1024;

thread_local! {
    // Per core: buffers of ended sessions. A fresh zeroed 64 KiB per
    // connection cost the setup mode a fifth of its CPU in memset and page
    // faults.
    static BUFS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A session's read buffer, back to this core's pool when dropped.
pub struct SessionBuf(Vec<u8>);

impl SessionBuf {
    fn take() -> SessionBuf {
        SessionBuf(
            BUFS.with(|b| b.borrow_mut().pop())
                .unwrap_or_else(|| vec![0; BUF]),
        )
    }
}

impl std::ops::Deref for SessionBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::DerefMut for SessionBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl Drop for SessionBuf {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        BUFS.with(|b| {
            let mut b = b.borrow_mut();
            if b.len() < 4096 {
                b.push(buf);
            }
        });
    }
}

impl Session {
    fn new(stream: Stream, leftover: Vec<u8>, pending: Option<ResponseReader>) -> Session {
        Session {
            stream,
            leftover,
            pending,
            buf: SessionBuf::take(),
        }
    }
}

/// Error kinds counted in reports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// TCP connect failed.
    Connect(String),
    /// TLS handshake failed.
    Tls(String),
    /// The upgrade/CONNECT answer was not the expected one.
    Handshake(String),
    /// Timed out.
    Timeout,
    /// I/O error after the handshake.
    Io(String),
    /// Echo returned different bytes.
    Mismatch,
}

impl Failure {
    /// Short label for reports.
    pub fn kind(&self) -> String {
        match self {
            Failure::Connect(e) => format!("connect: {e}"),
            Failure::Tls(e) => format!("tls: {e}"),
            Failure::Handshake(e) => format!("handshake: {e}"),
            Failure::Timeout => "timeout".into(),
            Failure::Io(e) => format!("io: {e}"),
            Failure::Mismatch => "echo mismatch".into(),
        }
    }
}

fn io_kind(e: &std::io::Error) -> String {
    format!("{:?}", e.kind())
}

/// Opens a stream and performs the handshake of `via`, within the timeout.
/// `conn` is the connection index (h2 vias group `--streams-per-conn` of them
/// onto one HTTP/2 connection).
pub async fn establish(
    t: &Target,
    via: Via,
    conn: usize,
    source: Option<IpAddr>,
    first_payload: &[u8],
) -> Result<Session, Failure> {
    if via.is_h2() {
        return crate::with_timeout(t.timeout, establish_h2(t, via, conn, source))
            .await
            .unwrap_or(Err(Failure::Timeout));
    }
    if via.is_h3() {
        return crate::with_timeout(t.timeout, establish_h3(t, via, conn))
            .await
            .unwrap_or(Err(Failure::Timeout));
    }
    let work = async {
        let mut stream = transport(t, source).await?;
        let auth: Vec<(String, String)> = t
            .token
            .iter()
            .map(|tok| ("Authorization".to_owned(), format!("Bearer {tok}")))
            .collect();
        match via {
            // h2 vias were handled above; Raw/Http have no handshake.
            Via::Raw
            | Via::Http
            | Via::WsH2
            | Via::ConnectH2
            | Via::WsH3
            | Via::ConnectH3
            | Via::Wt
            | Via::ConnectUdp
            | Via::ConnectIp => Ok(Session::new(stream, Vec::new(), None)),
            Via::Ws => {
                let (req, accept) = ws::handshake(&t.host, &t.path, &auth);
                stream
                    .write_all(&req)
                    .await
                    .map_err(|e| Failure::Io(io_kind(&e)))?;
                let (status, headers, leftover) = read_head(&mut stream).await?;
                if status != 101
                    || !headers.iter().any(|(k, v)| {
                        k.eq_ignore_ascii_case("sec-websocket-accept") && *v == accept
                    })
                {
                    return Err(Failure::Handshake(format!("status {status}")));
                }
                Ok(Session::new(stream, leftover, None))
            }
            Via::Httpupgrade => {
                let cfg = DialConfig {
                    host: t.host.clone(),
                    path: t.path.clone(),
                    headers: auth,
                };
                let mut req = httpupgrade::request(&cfg, Some(&t.sni), &t.addr.to_string());
                if t.ed {
                    req.extend_from_slice(first_payload);
                }
                stream
                    .write_all(&req)
                    .await
                    .map_err(|e| Failure::Io(io_kind(&e)))?;
                let mut reader = ResponseReader::default();
                if t.ed {
                    return Ok(Session::new(stream, Vec::new(), Some(reader)));
                }
                let mut buf = [0u8; 4096];
                loop {
                    let n = stream
                        .read(&mut buf)
                        .await
                        .map_err(|e| Failure::Io(io_kind(&e)))?;
                    if n == 0 {
                        return Err(Failure::Handshake("closed".into()));
                    }
                    if let Some(leftover) = reader
                        .feed(&buf[..n])
                        .map_err(|e| Failure::Handshake(e.to_string()))?
                    {
                        return Ok(Session::new(stream, leftover, None));
                    }
                }
            }
            Via::Connect => {
                let mut req = format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n", t.connect_target);
                for (k, v) in &auth {
                    req.push_str(&format!("{k}: {v}\r\n"));
                }
                req.push_str("\r\n");
                stream
                    .write_all(req.as_bytes())
                    .await
                    .map_err(|e| Failure::Io(io_kind(&e)))?;
                let (status, _, leftover) = read_head(&mut stream).await?;
                if !(200..300).contains(&status) {
                    return Err(Failure::Handshake(format!("status {status}")));
                }
                Ok(Session::new(stream, leftover, None))
            }
        }
    };
    crate::with_timeout(t.timeout, work)
        .await
        .unwrap_or(Err(Failure::Timeout))
}

/// TCP (+ PROXY header) (+ TLS): the transport under every handshake.
async fn transport(t: &Target, source: Option<IpAddr>) -> Result<Stream, Failure> {
    let mut tcp = net::tcp(t.addr, source)
        .await
        .map_err(|e| Failure::Connect(io_kind(&e)))?;
    if let Some(v) = t.proxy {
        net::proxy_header(&mut tcp, v)
            .await
            .map_err(|e| Failure::Connect(io_kind(&e)))?;
    }
    Ok(match &t.tls {
        None => Stream::Plain(tcp),
        Some(cfg) => {
            let name = rustls::pki_types::ServerName::try_from(t.sni.clone())
                .map_err(|e| Failure::Tls(e.to_string()))?;
            let s = futures_rustls::TlsConnector::from(cfg.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| Failure::Tls(e.to_string()))?;
            Stream::Tls(Box::new(s))
        }
    })
}

/// A stream on this connection group's HTTP/2 connection.
async fn establish_h2(
    t: &Target,
    via: Via,
    conn: usize,
    source: Option<IpAddr>,
) -> Result<Session, Failure> {
    let group = conn / t.streams_per_conn.max(1);
    let send = crate::h2::connection(group, || transport(t, source)).await?;
    let auth: Vec<(String, String)> = t
        .token
        .iter()
        .map(|tok| ("authorization".to_owned(), format!("Bearer {tok}")))
        .collect();
    let io = match via {
        Via::WsH2 => {
            let scheme = if t.tls.is_some() { "https" } else { "http" };
            let uri = format!("{scheme}://{}{}", t.host, t.path);
            crate::h2::open(send, &uri, Some("websocket"), &auth).await?
        }
        _ => crate::h2::open(send, &t.connect_target, None, &auth).await?,
    };
    Ok(Session::new(Stream::H2(Box::new(io)), Vec::new(), None))
}

/// A stream on this connection group's HTTP/3 connection (QUIC to the
/// target's address; TLS is required).
async fn establish_h3(t: &Target, via: Via, conn: usize) -> Result<Session, Failure> {
    let Some(tls) = &t.tls else {
        return Err(Failure::Tls("HTTP/3 needs --tls".into()));
    };
    let group = conn / t.streams_per_conn.max(1);
    let client = crate::h3::connection(group, t.addr, &t.sni, tls).await?;
    let auth: Vec<(String, String)> = t
        .token
        .iter()
        .map(|tok| ("authorization".to_owned(), format!("Bearer {tok}")))
        .collect();
    let stream = match via {
        Via::WsH3 => Stream::H3(Box::new(
            crate::h3::open(&client, &t.host, &t.path, Some("websocket"), &auth).await?,
        )),
        Via::Wt => Stream::Wt(Box::new(
            crate::h3::open_webtransport(&client, &t.host, &t.path, &auth).await?,
        )),
        _ => Stream::H3(Box::new(
            crate::h3::open(&client, &t.connect_target, "", None, &auth).await?,
        )),
    };
    Ok(Session::new(stream, Vec::new(), None))
}

type Head = (u16, Vec<(String, String)>, Vec<u8>);

async fn read_head(s: &mut Stream) -> Result<Head, Failure> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| Failure::Io(io_kind(&e)))?;
        if n == 0 {
            return Err(Failure::Handshake("closed before answering".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hs);
        match r.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let headers = r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_owned(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let status = r.code.unwrap_or(0);
                return Ok((status, headers, buf.split_off(len)));
            }
            Ok(httparse::Status::Partial) if buf.len() < 16384 => continue,
            _ => return Err(Failure::Handshake("malformed answer".into())),
        }
    }
}
