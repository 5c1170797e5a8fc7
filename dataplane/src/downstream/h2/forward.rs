//! Ordinary (non-upgrade) requests on an h2 stream, forwarded to the
//! tunnel's upstream over HTTP/1.1 (one request per connection, as on the h1
//! path), over a pooled h2c connection, or on a stream of the pooled h3
//! connection.
//!
//! The request body streams: each DATA chunk is written upstream, and only
//! then is its window credit released to the client, so a stalled upstream
//! stalls the client instead of growing a buffer here (toward HTTP/1.1 the
//! body keeps the client's `content-length`, which h2 checks against the
//! DATA received, or goes chunked: `upstream::request`). The body is pumped
//! alongside the
//! exchange, because an upstream may answer before it read everything. The
//! response body streams back within the client's window.
//!
//! ```text
//! dial ─► head ─► ┬─ pump body (credit back as bytes leave) ─────────────┐
//!                 └─ answer head ─► response head ─► response body ───────┴─► done
//! (a client RST_STREAM before the answer cancels the dial and the exchange)
//! ```

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};

use super::{refuse, respond_with, unless_reset, Conn};
use crate::config::UpstreamVersion;
use crate::error::Rejection;
use crate::message::Field;
use crate::message::{BodyFraming, RequestHead};
use crate::policy::answer_fields;
use crate::relay::h2::{io_error, send_all};
use crate::timeout::with_timeout;
use crate::tunnel::Tunnel;
use crate::upstream::request::{send_h1, send_h2c, Body};
use crate::upstream::session::Deadlines;

/// Forwards one request and streams the response back.
pub(super) async fn request(
    conn: &Conn,
    t: &Rc<Tunnel>,
    head: RequestHead,
    body: RecvStream,
    mut respond: SendResponse<Bytes>,
) {
    let result = match t.config.http_version {
        UpstreamVersion::Http1 => via_h1(conn, t, &head, body, &mut respond).await,
        UpstreamVersion::H2c => via_h2c(conn, t, &head, body, &mut respond).await,
        UpstreamVersion::H3 => via_h3(conn, t, &head, body, &mut respond).await,
    };
    if let Err(rej) = result {
        refuse(conn, respond, rej, Some(&head), Some(t));
    }
}

/// The request body on its way up, polled alongside the exchange.
struct Pump<'a> {
    fut: Option<PumpFuture<'a>>,
}

type PumpFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ClientGone>> + 'a>>;

/// The client's side of the body failed (reset, malformed, idle): the
/// exchange is abandoned.
#[derive(Debug)]
struct ClientGone(String);

impl<'a> Pump<'a> {
    fn new(f: impl Future<Output = Result<(), ClientGone>> + 'a) -> Pump<'a> {
        Pump {
            fut: Some(Box::pin(f)),
        }
    }

    fn none() -> Pump<'a> {
        Pump { fut: None }
    }

    /// Runs `work` while the body keeps pumping; `Err` if the client's side
    /// of the body failed first.
    async fn alongside<T>(&mut self, work: impl Future<Output = T>) -> Result<T, ClientGone> {
        let mut work = std::pin::pin!(work);
        std::future::poll_fn(|cx| {
            if let Some(f) = self.fut.as_mut() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(Ok(())) => self.fut = None,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            work.as_mut().poll(cx).map(Ok)
        })
        .await
    }
}

/// Next DATA chunk of the request body (`None` at END_STREAM).
async fn next_chunk(body: &mut RecvStream, idle: Duration) -> Result<Option<Bytes>, ClientGone> {
    match with_timeout(idle, body.data()).await {
        None => Err(ClientGone(format!("request body idle for {idle:?}"))),
        Some(None) => Ok(None),
        Some(Some(Ok(b))) => Ok(Some(b)),
        Some(Some(Err(e))) => Err(ClientGone(format!("request body: {}", io_error(e)))),
    }
}

/// Body → HTTP/1.1 upstream, raw (content-length) or chunked. An upstream
/// that stops reading ends the pump quietly: its answer decides.
async fn pump_h1<W: AsyncWrite + Unpin>(
    mut body: RecvStream,
    mut up: W,
    chunked: bool,
    idle: Duration,
) -> Result<(), ClientGone> {
    while let Some(data) = next_chunk(&mut body, idle).await? {
        let n = data.len();
        let written = if chunked && n > 0 {
            let mut framed = format!("{n:x}\r\n").into_bytes();
            framed.extend_from_slice(&data);
            framed.extend_from_slice(b"\r\n");
            up.write_all(&framed).await
        } else {
            up.write_all(&data).await
        };
        if written.is_err() {
            return Ok(());
        }
        let _ = body.flow_control().release_capacity(n);
    }
    if chunked {
        let _ = up.write_all(b"0\r\n\r\n").await;
    }
    Ok(())
}

/// Body → h2c upstream stream, within the upstream's window.
async fn pump_h2(
    mut body: RecvStream,
    mut up: SendStream<Bytes>,
    idle: Duration,
) -> Result<(), ClientGone> {
    loop {
        match next_chunk(&mut body, idle).await {
            Ok(Some(data)) => {
                let n = data.len();
                if send_all(&mut up, data).await.is_err() {
                    return Ok(());
                }
                let _ = body.flow_control().release_capacity(n);
            }
            Ok(None) => {
                let _ = up.send_data(Bytes::new(), true);
                return Ok(());
            }
            Err(e) => {
                up.send_reset(h2::Reason::CANCEL);
                return Err(e);
            }
        }
    }
}

async fn via_h1(
    conn: &Conn,
    t: &Tunnel,
    head: &RequestHead,
    body: RecvStream,
    respond: &mut SendResponse<Bytes>,
) -> Result<(), Rejection> {
    let edge = &conn.core.edge;
    let shape = Body::of(head, body.is_end_stream());
    let send = send_h1(
        &conn.core.resolver,
        t,
        head,
        &shape,
        edge.upstream_connect_timeout,
    );
    let Some(up) = unless_reset(conn, respond, send).await else {
        return Ok(());
    };
    let up = up?;
    let up_fd = std::os::fd::AsRawFd::as_raw_fd(&up);
    let (mut ur, uw) = futures_util::io::AsyncReadExt::split(up);
    let no_body = shape == Body::None;
    let chunked = shape == Body::Streamed;
    let mut pump = if no_body {
        Pump::none()
    } else {
        Pump::new(pump_h1(body, uw, chunked, edge.idle_timeout))
    };
    let read = crate::upstream::read_answer(
        &mut ur,
        &t.config.upstream,
        edge.max_head_bytes,
        edge.upstream_handshake_timeout,
    );
    let answer = match unless_reset(conn, respond, pump.alongside(read)).await {
        None => return Ok(()),
        Some(Err(gone)) => return abandon(conn, up_fd, gone),
        Some(Ok(answer)) => answer?,
    };
    let fields = answer_fields(answer.head.fields_iter(), true);
    let mut framing = BodyFraming::of_response(&head.method, &answer.head);
    let (take, done) = framing.advance(&answer.raw[answer.head_len..]);
    let first = Bytes::copy_from_slice(&answer.raw[answer.head_len..answer.head_len + take]);
    let response = answer_head(conn, answer.head.status, &fields)?;
    let no_answer_body = done && first.is_empty();
    let Ok(mut send) = respond.send_response(response, no_answer_body) else {
        return Ok(());
    };
    if no_answer_body {
        return Ok(());
    }
    let idle = edge.idle_timeout;
    let stream_back = async {
        send_all(&mut send, first).await?;
        let mut finished = done;
        let mut buf = vec![0u8; 32 * 1024];
        while !finished {
            let n = match with_timeout(idle, ur.read(&mut buf)).await {
                Some(Ok(n)) if n > 0 => n,
                // A close-delimited body ends at EOF; anything else cut short
                // resets the stream so the client does not take it as complete.
                Some(Ok(_)) if framing == BodyFraming::UntilClose => break,
                _ => {
                    send.send_reset(h2::Reason::INTERNAL_ERROR);
                    return Ok(());
                }
            };
            let (take, end) = framing.advance(&buf[..n]);
            send_all(&mut send, Bytes::copy_from_slice(&buf[..take])).await?;
            finished = end;
        }
        send.send_data(Bytes::new(), true).map_err(io_error)
    };
    match pump.alongside(stream_back).await {
        Err(gone) => abandon(conn, up_fd, gone),
        Ok(_) => Ok(()),
    }
}

/// The h2 head of an upstream's answer: its status and end-to-end fields,
/// and the listener's Alt-Svc.
fn answer_head(conn: &Conn, status: u16, fields: &[Field]) -> Result<http::Response<()>, Rejection> {
    let mut builder = http::Response::builder().status(status);
    if let Some(v) = &conn.alt_svc {
        builder = builder.header("alt-svc", v.as_str());
    }
    for (name, value) in fields {
        builder = builder.header(name.as_str(), value.as_slice());
    }
    builder
        .body(())
        .map_err(|_| Rejection::UpstreamBadAnswer("response fields not valid in h2".into()))
}

/// The client's body failed mid-exchange: the upstream connection is reset
/// (it must not act on a truncated body), and there is no one to answer.
fn abandon(conn: &Conn, up_fd: i32, gone: ClientGone) -> Result<(), Rejection> {
    let _ = crate::sys::set_linger_zero(up_fd);
    tracing::debug!(client = %conn.client, "request abandoned: {}", gone.0);
    Ok(())
}

async fn via_h2c(
    conn: &Conn,
    t: &Tunnel,
    head: &RequestHead,
    body: RecvStream,
    respond: &mut SendResponse<Bytes>,
) -> Result<(), Rejection> {
    let edge = &conn.core.edge;
    let shape = Body::of(head, body.is_end_stream());
    let limits = Deadlines {
        connect: edge.upstream_connect_timeout,
        handshake: edge.upstream_handshake_timeout,
    };
    let send = send_h2c(&conn.core.resolver, &conn.core.h2c, t, head, &shape, limits);
    let Some(sent) = unless_reset(conn, respond, send).await else {
        return Ok(());
    };
    let (response, up_send) = sent?;
    let no_body = shape == Body::None;
    let mut pump = if no_body {
        Pump::none()
    } else {
        Pump::new(pump_h2(body, up_send, edge.idle_timeout))
    };
    let wait = with_timeout(edge.upstream_handshake_timeout, response);
    let response = match unless_reset(conn, respond, pump.alongside(wait)).await {
        None => return Ok(()),
        Some(Err(gone)) => {
            tracing::debug!(client = %conn.client, "request abandoned: {}", gone.0);
            return Ok(());
        }
        Some(Ok(None)) => {
            return Err(Rejection::UpstreamTimeout {
                addr: t.config.upstream.clone(),
                after: edge.upstream_handshake_timeout,
            })
        }
        Some(Ok(Some(r))) => r.map_err(|e| Rejection::UpstreamBadAnswer(format!("h2c: {e}")))?,
    };
    let (rparts, mut rbody) = response.into_parts();
    let fields: Vec<Field> = answer_fields(
        rparts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
        true,
    );
    if rbody.is_end_stream() {
        respond_with(
            respond,
            rparts.status.as_u16(),
            &fields,
            Vec::new(),
            conn.alt_svc.as_deref(),
        );
        return Ok(());
    }
    let answer = answer_head(conn, rparts.status.as_u16(), &fields)?;
    let Ok(mut down) = respond.send_response(answer, false) else {
        return Ok(());
    };
    let idle = edge.idle_timeout;
    let stream_back = async {
        loop {
            match with_timeout(idle, rbody.data()).await {
                Some(Some(Ok(b))) => {
                    let n = b.len();
                    send_all(&mut down, b).await?;
                    let _ = rbody.flow_control().release_capacity(n);
                }
                Some(None) => break,
                Some(Some(Err(e))) => {
                    tracing::debug!("h2c response cut short: {}", io_error(e));
                    down.send_reset(h2::Reason::INTERNAL_ERROR);
                    return Ok(());
                }
                None => {
                    down.send_reset(h2::Reason::CANCEL);
                    return Ok(());
                }
            }
        }
        down.send_data(Bytes::new(), true).map_err(io_error)
    };
    if let Err(gone) = pump.alongside(stream_back).await {
        tracing::debug!(client = %conn.client, "request abandoned: {}", gone.0);
    }
    Ok(())
}

/// Body → h3 upstream stream as DATA frames, then FIN; credit goes back to
/// the client as bytes leave.
async fn pump_h3(
    mut body: RecvStream,
    mut up: crate::quic::SendStream,
    idle: Duration,
) -> Result<(), ClientGone> {
    loop {
        match next_chunk(&mut body, idle).await {
            Ok(Some(data)) => {
                let n = data.len();
                if crate::relay::h3::send_data(&mut up, &data).await.is_err() {
                    return Ok(());
                }
                let _ = body.flow_control().release_capacity(n);
            }
            Ok(None) => {
                let _ = up.finish();
                return Ok(());
            }
            Err(e) => {
                up.reset(crate::h3::error::Code::REQUEST_CANCELLED.0);
                return Err(e);
            }
        }
    }
}

async fn via_h3(
    conn: &Conn,
    t: &Tunnel,
    head: &RequestHead,
    body: RecvStream,
    respond: &mut SendResponse<Bytes>,
) -> Result<(), Rejection> {
    let edge = &conn.core.edge;
    let shape = Body::of(head, body.is_end_stream());
    let limits = Deadlines {
        connect: edge.upstream_connect_timeout,
        handshake: edge.upstream_handshake_timeout,
    };
    let send = crate::upstream::h3::send_request(&conn.core, t, head, &shape, limits);
    let Some(sent) = unless_reset(conn, respond, send).await else {
        return Ok(());
    };
    let (up_send, answer) = sent?;
    let mut pump = if shape == Body::None {
        Pump::none()
    } else {
        Pump::new(pump_h3(body, up_send, edge.idle_timeout))
    };
    let wait = answer.head(&conn.core, t, limits);
    let (rhead, mut rbody) = match unless_reset(conn, respond, pump.alongside(wait)).await {
        None => return Ok(()),
        Some(Err(gone)) => {
            tracing::debug!(client = %conn.client, "request abandoned: {}", gone.0);
            return Ok(());
        }
        Some(Ok(answer)) => answer?,
    };
    let fields = answer_fields(rhead.fields_iter(), true);
    let answer = answer_head(conn, rhead.status, &fields)?;
    let Ok(mut down) = respond.send_response(answer, false) else {
        return Ok(());
    };
    let idle = edge.idle_timeout;
    let stream_back = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match with_timeout(idle, rbody.read(&mut buf)).await {
                Some(Ok(0)) => break,
                Some(Ok(n)) => send_all(&mut down, Bytes::copy_from_slice(&buf[..n])).await?,
                // Reset or idle upstream: reset, so the client does not take
                // a cut body as complete.
                Some(Err(e)) => {
                    tracing::debug!("h3 response cut short: {e}");
                    down.send_reset(h2::Reason::INTERNAL_ERROR);
                    return Ok(());
                }
                None => {
                    down.send_reset(h2::Reason::CANCEL);
                    return Ok(());
                }
            }
        }
        down.send_data(Bytes::new(), true).map_err(io_error)
    };
    if let Err(gone) = pump.alongside(stream_back).await {
        tracing::debug!(client = %conn.client, "request abandoned: {}", gone.0);
    }
    Ok(())
}
