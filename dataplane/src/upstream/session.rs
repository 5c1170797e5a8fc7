//! Opening a tunnel session on the upstream, whatever HTTP version either
//! side speaks: the translation point of DESIGN §1.
//!
//! ```text
//! Ask (WebSocket | CONNECT, version-neutral)
//!   ├─ http/1.1 upstream: GET + Upgrade: websocket + fresh Sec-WebSocket-Key (accept verified)
//!   │                     CONNECT host:port HTTP/1.1
//!   └─ h2c upstream:      extended CONNECT :protocol websocket (only if the peer enabled it)
//!                         CONNECT :authority host:port
//! → Opened::Open (a relay leg + the fields the downstream answer carries)
//! | Opened::Refused (the upstream's status, fields and a bounded body)
//! ```
//!
//! Only the handshake is translated: WebSocket frames pass through untouched.

use std::time::Duration;

use base64::Engine;
use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;

use crate::config::UpstreamVersion;
use crate::error::Rejection;
use crate::message::{BodyFraming, Headers};
use crate::policy::{answer_fields, session_answer_fields};
use crate::relay::h2::{io_error, H2Stream};
use crate::relay::Leg;
use crate::resolve::Resolver;
use crate::timeout::with_timeout;
use crate::tunnel::Tunnel;
use crate::websocket::accept_key;

use super::h2c::H2cPool;

/// Largest refusal body passed back to the downstream.
const MAX_REFUSAL_BODY: usize = 64 * 1024;

pub use crate::message::Field;

/// What to open on the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AskKind {
    /// A WebSocket session.
    WebSocket,
    /// A CONNECT tunnel to `authority` through the upstream proxy.
    Connect {
        /// `host:port`, forwarded as given.
        authority: String,
    },
}

/// A version-neutral upstream request.
#[derive(Debug, Clone)]
pub struct Ask {
    /// What to open.
    pub kind: AskKind,
    /// `Host` / `:authority` for a WebSocket.
    pub authority: String,
    /// Request path for a WebSocket.
    pub path: String,
    /// End-to-end fields to forward (no pseudo-headers, no hop-by-hop
    /// fields, no `Sec-WebSocket-Key`/`-Accept`/`-Version`).
    pub fields: Vec<Field>,
}

/// What the upstream said.
pub enum Opened {
    /// Accepted: relay from here.
    Open {
        /// The upstream end of the relay.
        leg: Leg,
        /// Bytes the upstream sent right after its answer (h1 only).
        early: Vec<u8>,
        /// Fields for the downstream answer (for a WebSocket only
        /// `Sec-WebSocket-Protocol` / `-Extensions`).
        fields: Vec<Field>,
    },
    /// Refused: this answer goes back to the downstream as is.
    Refused {
        /// Upstream status.
        status: u16,
        /// Its end-to-end fields.
        fields: Vec<Field>,
        /// Its body, at most [`MAX_REFUSAL_BODY`] bytes.
        body: Vec<u8>,
    },
}

/// Timeouts for one upstream handshake.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// TCP connect.
    pub connect: Duration,
    /// Upstream answer (and h2c handshake).
    pub handshake: Duration,
}

/// Opens the session `ask` on `t`'s upstream.
pub async fn open(
    core: &std::rc::Rc<crate::core::CoreCtx>,
    t: &Tunnel,
    ask: Ask,
    limits: Deadlines,
) -> Result<Opened, Rejection> {
    let (resolver, pool, max_head) = (&core.resolver, &core.h2c, core.edge.max_head_bytes);
    match t.config.http_version {
        UpstreamVersion::Http1 => {
            let up = super::dial(resolver, t, limits.connect).await?;
            open_h1(up, t, ask, limits.handshake, max_head).await
        }
        UpstreamVersion::H2c => open_h2c(resolver, pool, t, ask, limits).await,
        UpstreamVersion::H3 => super::h3::open(core, t, ask, limits).await,
    }
}

fn websocket_key() -> String {
    let mut nonce = [0u8; 16];
    if getrandom::getrandom(&mut nonce).is_err() {
        // The key is a nonce against caching intermediaries, not a secret.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        nonce = t.to_le_bytes();
    }
    base64::engine::general_purpose::STANDARD.encode(nonce)
}

async fn open_h1(
    mut up: TcpStream,
    t: &Tunnel,
    ask: Ask,
    timeout: Duration,
    max_head: usize,
) -> Result<Opened, Rejection> {
    let mut head = String::with_capacity(512);
    let key = websocket_key();
    match &ask.kind {
        AskKind::WebSocket => {
            head.push_str(&format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n",
                ask.path, ask.authority
            ));
        }
        AskKind::Connect { authority } => {
            head.push_str(&format!(
                "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
            ));
        }
    }
    let mut out = head.into_bytes();
    crate::codec::h1::write_fields(&mut out, &ask.fields);
    out.extend_from_slice(b"\r\n");
    super::send(&mut up, &out, t).await?;
    let answer = super::read_answer(&mut up, &t.config.upstream, max_head, timeout).await?;
    let status = answer.head.status;
    let accepted = match ask.kind {
        AskKind::WebSocket => status == 101,
        AskKind::Connect { .. } => (200..300).contains(&status),
    };
    let fields = answer_fields(answer.head.fields_iter(), false);
    if accepted {
        if ask.kind == AskKind::WebSocket {
            let want = accept_key(key.as_bytes());
            if answer.head.get("sec-websocket-accept") != Some(want.as_bytes()) {
                return Err(Rejection::UpstreamBadAnswer(
                    "101 without the matching Sec-WebSocket-Accept".into(),
                ));
            }
        }
        let early = answer.raw[answer.head_len..].to_vec();
        return Ok(Opened::Open {
            leg: Leg::Tcp(up),
            early,
            fields: session_answer_fields(fields, ask.kind == AskKind::WebSocket),
        });
    }
    let method = match ask.kind {
        AskKind::WebSocket => "GET",
        AskKind::Connect { .. } => "CONNECT",
    };
    let mut framing = BodyFraming::of_response(method, &answer.head);
    let (take, mut done) = framing.advance(&answer.raw[answer.head_len..]);
    let mut body = answer.raw[answer.head_len..answer.head_len + take].to_vec();
    let mut buf = vec![0u8; 16 * 1024];
    while !done && body.len() < MAX_REFUSAL_BODY {
        let n = match with_timeout(timeout, up.read(&mut buf)).await {
            Some(Ok(n)) if n > 0 => n,
            _ => break,
        };
        let (take, finished) = framing.advance(&buf[..n]);
        body.extend_from_slice(&buf[..take]);
        done = finished;
    }
    body.truncate(MAX_REFUSAL_BODY);
    Ok(Opened::Refused {
        status,
        fields,
        body,
    })
}

async fn open_h2c(
    resolver: &Resolver,
    pool: &H2cPool,
    t: &Tunnel,
    ask: Ask,
    limits: Deadlines,
) -> Result<Opened, Rejection> {
    let slot = pool
        .slot(resolver, t, limits.connect, limits.handshake)
        .await?;
    let mut send = slot.send;
    let mut req = http::Request::builder().method(http::Method::CONNECT);
    match &ask.kind {
        AskKind::WebSocket => {
            if !slot.extended_connect {
                return Err(Rejection::UpstreamBadAnswer(
                    "h2c upstream did not enable extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL)"
                        .into(),
                ));
            }
            req = req
                .uri(format!("http://{}{}", ask.authority, ask.path))
                .header("sec-websocket-version", "13")
                .extension(h2::ext::Protocol::from_static("websocket"));
        }
        AskKind::Connect { authority } => req = req.uri(authority.as_str()),
    }
    for (name, value) in &ask.fields {
        req = req.header(name.as_str(), value.as_slice());
    }
    let req = req
        .body(())
        .map_err(|e| Rejection::NotSupported(format!("cannot express the request in h2: {e}")))?;
    let (response, stream) = send
        .send_request(req, false)
        .map_err(|e| Rejection::UpstreamBadAnswer(format!("h2c: {e}")))?;
    let response = match with_timeout(limits.handshake, response).await {
        Some(Ok(r)) => r,
        Some(Err(e)) => return Err(Rejection::UpstreamBadAnswer(format!("h2c: {e}"))),
        None => {
            return Err(Rejection::UpstreamTimeout {
                addr: t.config.upstream.clone(),
                after: limits.handshake,
            })
        }
    };
    let status = response.status().as_u16();
    let fields = answer_fields(
        response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
        false,
    );
    let mut body = response.into_body();
    if (200..300).contains(&status) {
        return Ok(Opened::Open {
            leg: Leg::H2(H2Stream::new(stream, body)),
            early: Vec::new(),
            fields: session_answer_fields(fields, ask.kind == AskKind::WebSocket),
        });
    }
    let mut collected = Vec::new();
    while collected.len() < MAX_REFUSAL_BODY {
        match with_timeout(limits.handshake, body.data()).await {
            Some(Some(Ok(b))) => {
                let _ = body.flow_control().release_capacity(b.len());
                collected.extend_from_slice(&b);
            }
            Some(Some(Err(e))) => {
                tracing::debug!("h2c refusal body cut short: {}", io_error(e));
                break;
            }
            _ => break,
        }
    }
    collected.truncate(MAX_REFUSAL_BODY);
    drop(stream);
    Ok(Opened::Refused {
        status,
        fields,
        body: collected,
    })
}
