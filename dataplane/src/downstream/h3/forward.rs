//! Ordinary (non-upgrade) requests on an h3 stream, forwarded to the
//! tunnel's upstream over HTTP/1.1 (one request per connection), a pooled
//! h2c connection, or a stream of the pooled h3 connection — the h2
//! path's shape (`downstream::h2::forward`) with the stream read and
//! written as DATA frames ([`crate::relay::h3`]).
//!
//! The request body streams up as the client sends it (toward HTTP/1.1 with
//! the client's `content-length`, else chunked), alongside the exchange,
//! because an upstream may answer before it read everything; quinn-proto's
//! stream credit goes back only as bytes are taken, so a stalled upstream
//! stalls the client. The response streams back within the client's credit.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{refuse, response, unless_cancelled, Conn, Opening};
use crate::config::UpstreamVersion;
use crate::error::Rejection;
use crate::h3::error::Code;
use crate::message::{BodyFraming, Field, HeadError, Headers, RequestHead};
use crate::policy::answer_fields;
use crate::relay::h2::send_all;
use crate::quic::SendStream;
use crate::relay::h3::{send_data, H3Reader};
use crate::timeout::with_timeout;
use crate::tunnel::Tunnel;
use crate::upstream::request::{send_h1, send_h2c, Body};
use crate::upstream::session::Deadlines;

/// Forwards one request and streams the response back.
pub(super) async fn request(conn: &Conn, t: &Rc<Tunnel>, head: RequestHead, mut open: Opening) {
    let result = match t.config.http_version {
        UpstreamVersion::Http1 => via_h1(conn, t, &head, &mut open).await,
        UpstreamVersion::H2c => via_h2c(conn, t, &head, &mut open).await,
        UpstreamVersion::H3 => via_h3(conn, t, &head, &mut open).await,
    };
    match result {
        Ok(Some(parts)) => stream_answer(conn, parts, open.send).await,
        Ok(None) => {}
        Err(rej) => refuse(conn, &mut open, rej, Some(&head), Some(t)),
    }
}

/// Where the answer's body comes from, once its head was sent.
type Back<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;
/// Makes the answer's body future from the stream's sending half.
type BackFn<'a> = Box<dyn FnOnce(SendStream) -> Back<'a> + 'a>;

/// The client's side of the body failed (reset, malformed, idle).
#[derive(Debug)]
struct ClientGone(String);

/// The body pump's future.
type PumpFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ClientGone>> + 'a>>;

/// The request body on its way up, polled alongside the exchange.
struct Pump<'a>(Option<PumpFuture<'a>>);

impl<'a> Pump<'a> {
    async fn alongside<T>(&mut self, work: impl Future<Output = T>) -> Result<T, ClientGone> {
        let mut work = std::pin::pin!(work);
        std::future::poll_fn(|cx| {
            if let Some(f) = self.0.as_mut() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(Ok(())) => self.0 = None,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            work.as_mut().poll(cx).map(Ok)
        })
        .await
    }
}

async fn next_chunk(body: &mut H3Reader, buf: &mut [u8], idle: Duration) -> Result<usize, ClientGone> {
    match with_timeout(idle, body.read(buf)).await {
        None => Err(ClientGone(format!("request body idle for {idle:?}"))),
        Some(Ok(n)) => Ok(n),
        Some(Err(e)) => Err(ClientGone(format!("request body: {e}"))),
    }
}

/// Holds a body to its `content-length`: never a byte more goes up, and
/// a body that ends short or runs long is malformed (a stream error
/// H3_MESSAGE_ERROR to the client; the caller resets the upstream, which
/// must not act on it).
struct Limit {
    declared: Option<u64>,
    seen: u64,
}

impl Limit {
    fn take(&mut self, body: &H3Reader, n: usize) -> Result<(), ClientGone> {
        self.seen += n as u64;
        match self.declared {
            Some(l) if self.seen > l => Err(ClientGone(body.malformed("body longer than its content-length").to_string())),
            _ => Ok(()),
        }
    }

    fn end(&self, body: &H3Reader) -> Result<(), ClientGone> {
        match self.declared {
            Some(l) if self.seen < l => Err(ClientGone(body.malformed("body shorter than its content-length").to_string())),
            _ => Ok(()),
        }
    }

    /// The next piece of the body into `buf` (0 at its end), checked
    /// against the declared length.
    async fn read(&mut self, body: &mut H3Reader, buf: &mut [u8], idle: Duration) -> Result<usize, ClientGone> {
        let n = next_chunk(body, buf, idle).await?;
        if n == 0 {
            self.end(body)?;
        } else {
            self.take(body, n)?;
        }
        Ok(n)
    }
}

/// Body → HTTP/1.1 upstream, raw (content-length) or chunked. An upstream
/// that stops reading ends the pump quietly: its answer decides.
async fn pump_h1<W: AsyncWrite + Unpin>(
    mut body: H3Reader,
    mut up: W,
    chunked: bool,
    idle: Duration,
    declared: Option<u64>,
) -> Result<(), ClientGone> {
    let mut buf = vec![0u8; 32 * 1024];
    let mut limit = Limit { declared, seen: 0 };
    loop {
        let n = limit.read(&mut body, &mut buf, idle).await?;
        if n == 0 {
            break;
        }
        let written = if chunked {
            let mut framed = format!("{n:x}\r\n").into_bytes();
            framed.extend_from_slice(&buf[..n]);
            framed.extend_from_slice(b"\r\n");
            up.write_all(&framed).await
        } else {
            up.write_all(&buf[..n]).await
        };
        if written.is_err() {
            return Ok(());
        }
    }
    if chunked {
        let _ = up.write_all(b"0\r\n\r\n").await;
    }
    Ok(())
}

/// Body → h2c upstream stream, within the upstream's window.
async fn pump_h2(mut body: H3Reader, mut up: h2::SendStream<Bytes>, idle: Duration, declared: Option<u64>) -> Result<(), ClientGone> {
    let mut buf = vec![0u8; 32 * 1024];
    let mut limit = Limit { declared, seen: 0 };
    loop {
        let next = limit.read(&mut body, &mut buf, idle).await;
        match next {
            Ok(0) => {
                let _ = up.send_data(Bytes::new(), true);
                return Ok(());
            }
            Ok(n) => {
                if send_all(&mut up, Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    return Ok(());
                }
            }
            Err(e) => {
                up.send_reset(h2::Reason::CANCEL);
                return Err(e);
            }
        }
    }
}

/// Body → h3 upstream stream as DATA frames (held to its
/// `content-length`), then FIN.
async fn pump_h3(mut body: H3Reader, mut up: SendStream, idle: Duration, declared: Option<u64>) -> Result<(), ClientGone> {
    let mut buf = vec![0u8; 32 * 1024];
    let mut limit = Limit { declared, seen: 0 };
    loop {
        let next = limit.read(&mut body, &mut buf, idle).await;
        match next {
            Ok(0) => {
                let _ = up.finish();
                return Ok(());
            }
            Ok(n) => {
                if send_data(&mut up, &buf[..n]).await.is_err() {
                    return Ok(());
                }
            }
            Err(e) => {
                up.reset(Code::REQUEST_CANCELLED.0);
                return Err(e);
            }
        }
    }
}

/// What goes back: status, fields, and the body's source.
struct Parts<'a> {
    status: u16,
    fields: Vec<Field>,
    pump: Pump<'a>,
    back: BackFn<'a>,
}

/// The body's shape and its declared length; a request that ended with its
/// head but declared a body is malformed.
fn body_shape(head: &RequestHead, open: &Opening) -> Result<(Body, Option<u64>), Rejection> {
    let declared = crate::codec::h3::content_length(&head.headers)?;
    if open.ended && declared.is_some_and(|n| n > 0) {
        return Err(HeadError::Malformed("content-length but no body").into());
    }
    Ok((Body::of(head, open.ended || bodiless(head)), declared))
}

async fn via_h1<'a>(conn: &'a Conn, t: &'a Tunnel, head: &RequestHead, open: &mut Opening) -> Result<Option<Parts<'a>>, Rejection> {
    let edge = &conn.core.edge;
    let (shape, declared) = body_shape(head, open)?;
    let send = send_h1(&conn.core.resolver, t, head, &shape, edge.upstream_connect_timeout);
    let Some(up) = unless_cancelled(&mut open.send, send).await else {
        return Ok(None);
    };
    let up = up?;
    let up_fd = std::os::fd::AsRawFd::as_raw_fd(&up);
    let (mut ur, uw) = futures_util::io::AsyncReadExt::split(up);
    let mut pump = match (shape.clone(), body_reader(conn, open)) {
        (Body::None, _) | (_, None) => Pump(None),
        (_, Some(reader)) => Pump(Some(Box::pin(pump_h1(reader, uw, shape == Body::Streamed, edge.idle_timeout, declared)))),
    };
    let read = crate::upstream::read_answer(&mut ur, &t.config.upstream, edge.max_head_bytes, edge.upstream_handshake_timeout);
    let answer = match pump.alongside(read).await {
        Err(gone) => return abandon(conn, up_fd, gone),
        Ok(answer) => answer?,
    };
    let fields = answer_fields(answer.head.fields_iter(), true);
    let mut framing = BodyFraming::of_response(&head.method, &answer.head);
    let (take, done) = framing.advance(&answer.raw[answer.head_len..]);
    let first = answer.raw[answer.head_len..answer.head_len + take].to_vec();
    let idle = edge.idle_timeout;
    let back = move |mut w: SendStream| -> Back<'a> {
        Box::pin(async move {
            if send_data(&mut w, &first).await.is_err() {
                return;
            }
            let mut finished = done;
            let mut buf = vec![0u8; 32 * 1024];
            while !finished {
                let n = match with_timeout(idle, ur.read(&mut buf)).await {
                    Some(Ok(n)) if n > 0 => n,
                    Some(Ok(_)) if framing == BodyFraming::UntilClose => break,
                    // Cut short: reset, so the client does not take it as complete.
                    _ => {
                        w.reset(Code::INTERNAL_ERROR.0);
                        return;
                    }
                };
                let (take, end) = framing.advance(&buf[..n]);
                if send_data(&mut w, &buf[..take]).await.is_err() {
                    return;
                }
                finished = end;
            }
            let _ = w.finish();
        })
    };
    Ok(Some(Parts { status: answer.head.status, fields, pump, back: Box::new(back) }))
}

async fn via_h2c<'a>(conn: &'a Conn, t: &'a Tunnel, head: &RequestHead, open: &mut Opening) -> Result<Option<Parts<'a>>, Rejection> {
    let edge = &conn.core.edge;
    let (shape, declared) = body_shape(head, open)?;
    let limits = Deadlines { connect: edge.upstream_connect_timeout, handshake: edge.upstream_handshake_timeout };
    let send = send_h2c(&conn.core.resolver, &conn.core.h2c, t, head, &shape, limits);
    let Some(sent) = unless_cancelled(&mut open.send, send).await else {
        return Ok(None);
    };
    let (response, up_send) = sent?;
    let mut pump = match (shape.clone(), body_reader(conn, open)) {
        (Body::None, _) | (_, None) => Pump(None),
        (_, Some(reader)) => Pump(Some(Box::pin(pump_h2(reader, up_send, edge.idle_timeout, declared)))),
    };
    let wait = with_timeout(edge.upstream_handshake_timeout, response);
    let response = match pump.alongside(wait).await {
        Err(gone) => {
            tracing::debug!(client = %conn.client, "request abandoned: {}", gone.0);
            return Ok(None);
        }
        Ok(None) => {
            return Err(Rejection::UpstreamTimeout { addr: t.config.upstream.clone(), after: edge.upstream_handshake_timeout })
        }
        Ok(Some(r)) => r.map_err(|e| Rejection::UpstreamBadAnswer(format!("h2c: {e}")))?,
    };
    let (rparts, mut rbody) = response.into_parts();
    let fields = answer_fields(rparts.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())), true);
    let idle = edge.idle_timeout;
    let back = move |mut w: SendStream| -> Back<'a> {
        Box::pin(async move {
            loop {
                match with_timeout(idle, rbody.data()).await {
                    Some(Some(Ok(b))) => {
                        let n = b.len();
                        if send_data(&mut w, &b).await.is_err() {
                            return;
                        }
                        let _ = rbody.flow_control().release_capacity(n);
                    }
                    Some(None) => break,
                    _ => {
                        w.reset(Code::INTERNAL_ERROR.0);
                        return;
                    }
                }
            }
            let _ = w.finish();
        })
    };
    Ok(Some(Parts { status: rparts.status.as_u16(), fields, pump, back: Box::new(back) }))
}

async fn via_h3<'a>(conn: &'a Conn, t: &'a Tunnel, head: &RequestHead, open: &mut Opening) -> Result<Option<Parts<'a>>, Rejection> {
    let edge = &conn.core.edge;
    let (shape, declared) = body_shape(head, open)?;
    let limits = Deadlines { connect: edge.upstream_connect_timeout, handshake: edge.upstream_handshake_timeout };
    let send = crate::upstream::h3::send_request(&conn.core, t, head, &shape, limits);
    let Some(sent) = unless_cancelled(&mut open.send, send).await else {
        return Ok(None);
    };
    let (mut up_send, answer) = sent?;
    let mut pump = match (shape, body_reader(conn, open)) {
        (Body::None, _) => Pump(None),
        (_, None) => {
            let _ = up_send.finish();
            Pump(None)
        }
        (_, Some(reader)) => Pump(Some(Box::pin(pump_h3(reader, up_send, edge.idle_timeout, declared)))),
    };
    let wait = answer.head(&conn.core, t, limits);
    let (rhead, mut rbody) = match pump.alongside(wait).await {
        Err(gone) => {
            tracing::debug!(client = %conn.client, "request abandoned: {}", gone.0);
            return Ok(None);
        }
        Ok(answer) => answer?,
    };
    let fields = answer_fields(rhead.fields_iter(), true);
    let idle = edge.idle_timeout;
    let back = move |mut w: SendStream| -> Back<'a> {
        Box::pin(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match with_timeout(idle, rbody.read(&mut buf)).await {
                    Some(Ok(0)) => break,
                    Some(Ok(n)) => {
                        if send_data(&mut w, &buf[..n]).await.is_err() {
                            return;
                        }
                    }
                    // Reset or idle upstream: reset, so the client does not
                    // take a cut body as complete.
                    _ => {
                        w.reset(Code::INTERNAL_ERROR.0);
                        return;
                    }
                }
            }
            let _ = w.finish();
        })
    };
    Ok(Some(Parts { status: rhead.status, fields, pump, back: Box::new(back) }))
}

/// Sends the answer's head, then its body while the request body pumps.
async fn stream_answer(conn: &Conn, mut parts: Parts<'_>, mut send: SendStream) {
    let mut out = Vec::new();
    crate::codec::h3::encode_response(&response(parts.status, &parts.fields), &mut out);
    if send.write_all(&out).await.is_err() {
        return;
    }
    if let Err(gone) = parts.pump.alongside((parts.back)(send)).await {
        tracing::debug!(client = %conn.client, "request abandoned: {}", gone.0);
    }
}

/// Methods that carry no body unless they say so (a GET's FIN may come in
/// a later packet than its HEADERS).
fn bodiless(head: &RequestHead) -> bool {
    matches!(head.method.as_str(), "GET" | "HEAD" | "OPTIONS" | "DELETE" | "TRACE") && head.get("content-length").is_none()
}

/// The request body's reader (the stream's receiving half leaves `open`).
fn body_reader(conn: &Conn, open: &mut Opening) -> Option<H3Reader> {
    let recv = open.recv.take()?;
    let frames = std::mem::replace(&mut open.frames, crate::h3::stream::RequestStream::new(0));
    Some(H3Reader::body(conn.quic.clone(), recv, frames, std::mem::take(&mut open.rest)))
}

/// The client's body failed mid-exchange: the upstream connection is reset
/// (it must not act on a truncated body), and there is no one to answer.
fn abandon<'a>(conn: &Conn, up_fd: i32, gone: ClientGone) -> Result<Option<Parts<'a>>, Rejection> {
    let _ = crate::sys::set_linger_zero(up_fd);
    tracing::debug!(client = %conn.client, "request abandoned: {}", gone.0);
    Ok(None)
}
