//! An ordinary (non-upgrade) request on the tunnel's upstream, whatever the
//! downstream spoke: the request-side twin of [`super::session`]. This opens
//! the upstream connection or stream and sends the head; the caller pumps
//! the body and reads the answer.
//!
//! ```text
//! http/1.1 upstream: fresh connection (fixed send buffer) ─► METHOD target HTTP/1.1, Host,
//!                    end-to-end fields, Content-Length | Transfer-Encoding: chunked, Connection: close
//! h2c upstream:      pooled connection ─► HEADERS (:authority from Host, content-length kept)
//! ```

use bytes::Bytes;
use glommio::net::TcpStream;

use super::h2c::H2cPool;
use super::session::Deadlines;
use crate::error::Rejection;
use crate::message::{Headers, RequestHead};
use crate::policy::request_fields;
use crate::resolve::Resolver;
use crate::tunnel::Tunnel;

/// Kernel send buffer of an upstream connection carrying a forwarded
/// request (fixed, not autotuned up to 4 MiB): one h2 client connection can
/// open 256 of these, and they pin at most 256 × 128 KiB of kernel memory
/// when the upstream stops reading.
pub const UPSTREAM_SNDBUF: usize = 64 * 1024;

/// How the request's body travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// No body (the request ended with its head).
    None,
    /// The client's `content-length`, forwarded (h2 checks the DATA
    /// received against it).
    Length(Vec<u8>),
    /// Length unknown: chunked toward HTTP/1.1, DATA frames toward h2c.
    Streamed,
}

impl Body {
    /// The body of `head`, whose stream `ended` with its head or not.
    pub fn of(head: &RequestHead, ended: bool) -> Body {
        match head.get("content-length") {
            _ if ended => Body::None,
            Some(n) => Body::Length(n.to_vec()),
            None => Body::Streamed,
        }
    }
}

/// HTTP/1.1 upstream: dials, fixes the send buffer, writes the head.
pub async fn send_h1(
    resolver: &Resolver,
    t: &Tunnel,
    head: &RequestHead,
    body: &Body,
    connect_timeout: std::time::Duration,
) -> Result<TcpStream, Rejection> {
    let mut up = super::dial(resolver, t, connect_timeout).await?;
    let _ = crate::sys::set_send_buffer(std::os::fd::AsRawFd::as_raw_fd(&up), UPSTREAM_SNDBUF);
    let mut out = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\n",
        head.method,
        head.target,
        head.host().unwrap_or_default()
    )
    .into_bytes();
    crate::codec::h1::write_fields(&mut out, &request_fields(head));
    match body {
        Body::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(n);
            out.extend_from_slice(b"\r\n");
        }
        Body::None if matches!(head.method.as_str(), "POST" | "PUT" | "PATCH") => {
            out.extend_from_slice(b"Content-Length: 0\r\n")
        }
        Body::None => {}
        Body::Streamed => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    super::send(&mut up, &out, t).await?;
    Ok(up)
}

/// The answer of an h2c upstream stream, and the stream's sending half.
pub type H2cExchange = (h2::client::ResponseFuture, h2::SendStream<Bytes>);

/// h2c upstream: a stream on a pooled connection, its HEADERS sent.
pub async fn send_h2c(
    resolver: &Resolver,
    pool: &H2cPool,
    t: &Tunnel,
    head: &RequestHead,
    body: &Body,
    limits: Deadlines,
) -> Result<H2cExchange, Rejection> {
    let slot = pool
        .slot(resolver, t, limits.connect, limits.handshake)
        .await?;
    let mut send = slot.send;
    let uri = format!("http://{}{}", head.host().unwrap_or_default(), head.target);
    let mut req = http::Request::builder()
        .method(head.method.as_str())
        .uri(uri);
    for (name, value) in request_fields(head) {
        req = req.header(name.as_str(), value.as_slice());
    }
    if let Body::Length(n) = body {
        req = req.header("content-length", n.as_slice());
    }
    let req = req
        .body(())
        .map_err(|_| Rejection::NotSupported("request not expressible in h2".into()))?;
    send.send_request(req, *body == Body::None)
        .map_err(|e| Rejection::UpstreamBadAnswer(format!("h2c: {e}")))
}
