//! HTTP/2 client side of `ws-h2` and `connect-h2`: many streams over few
//! connections (`--streams-per-conn`), each stream an extended CONNECT
//! (`:protocol websocket`, RFC 8441) or a plain CONNECT, then bytes in DATA
//! frames. The `h2` crate does the protocol; this module shares connections
//! per core and turns a stream into the byte stream the modes use.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_lite::io::{AsyncRead, AsyncWrite};
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::net::Stream;
use crate::session::Failure;

/// Window granted per stream (the connection gets 4×): large enough that a
/// bulk stream is not window-bound on loopback.
const STREAM_WINDOW: u32 = 4 << 20;

struct Group {
    lock: Rc<glommio::sync::Semaphore>,
    send: Option<SendRequest<Bytes>>,
}

thread_local! {
    // Per core (glommio is thread-per-core): connection groups by index.
    static GROUPS: RefCell<HashMap<usize, Group>> = RefCell::new(HashMap::new());
}

/// The h2 connection of `group` on this core, dialled by `dial` the first
/// time (one dial per group even when its streams start together).
pub async fn connection<F, Fut>(group: usize, dial: F) -> Result<SendRequest<Bytes>, Failure>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Stream, Failure>>,
{
    let lock = GROUPS.with(|g| {
        g.borrow_mut()
            .entry(group)
            .or_insert_with(|| Group {
                lock: Rc::new(glommio::sync::Semaphore::new(1)),
                send: None,
            })
            .lock
            .clone()
    });
    let _permit = lock
        .acquire_permit(1)
        .await
        .map_err(|e| Failure::Connect(e.to_string()))?;
    if let Some(send) = GROUPS.with(|g| g.borrow().get(&group).and_then(|x| x.send.clone())) {
        return Ok(send);
    }
    let stream = dial().await?;
    let (send, mut conn) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(4 * STREAM_WINDOW)
        .max_frame_size(256 * 1024)
        .handshake::<_, Bytes>(stream.compat())
        .await
        .map_err(|e| Failure::Handshake(format!("h2: {e}")))?;
    let mut ping = conn.ping_pong();
    glommio::spawn_local(async move {
        let _ = conn.await;
        GROUPS.with(|g| {
            if let Some(x) = g.borrow_mut().get_mut(&group) {
                x.send = None;
            }
        });
    })
    .detach();
    // The server's SETTINGS precede its PING ACK: after this round trip the
    // extended-CONNECT setting is known.
    if let Some(p) = ping.as_mut() {
        p.ping(h2::Ping::opaque())
            .await
            .map_err(|e| Failure::Handshake(format!("h2 ping: {e}")))?;
    }
    GROUPS.with(|g| {
        if let Some(x) = g.borrow_mut().get_mut(&group) {
            x.send = Some(send.clone());
        }
    });
    Ok(send)
}

/// Opens one stream: `protocol` set = extended CONNECT to `uri`, else plain
/// CONNECT to the authority `uri`.
pub async fn open(
    send: SendRequest<Bytes>,
    uri: &str,
    protocol: Option<&'static str>,
    headers: &[(String, String)],
) -> Result<H2Io, Failure> {
    if protocol.is_some() && !send.is_extended_connect_protocol_enabled() {
        return Err(Failure::Handshake(
            "server did not enable extended CONNECT".into(),
        ));
    }
    let mut send = send
        .ready()
        .await
        .map_err(|e| Failure::Handshake(format!("h2: {e}")))?;
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(uri);
    if let Some(p) = protocol {
        req = req
            .extension(h2::ext::Protocol::from_static(p))
            .header("sec-websocket-version", "13");
    }
    for (k, v) in headers {
        req = req.header(k.to_ascii_lowercase(), v.as_str());
    }
    let req = req
        .body(())
        .map_err(|e| Failure::Handshake(format!("request: {e}")))?;
    let (response, stream) = send
        .send_request(req, false)
        .map_err(|e| Failure::Handshake(format!("h2: {e}")))?;
    let response = response
        .await
        .map_err(|e| Failure::Handshake(format!("h2: {e}")))?;
    let status = response.status().as_u16();
    let ok = match protocol {
        Some(_) => status == 200,
        None => (200..300).contains(&status),
    };
    if !ok {
        return Err(Failure::Handshake(format!("status {status}")));
    }
    Ok(H2Io {
        send: stream,
        recv: response.into_body(),
        pending: Bytes::new(),
    })
}

/// One stream as a byte stream: DATA in, DATA out, END_STREAM on close.
pub struct H2Io {
    send: SendStream<Bytes>,
    recv: RecvStream,
    pending: Bytes,
}

fn io_err(e: h2::Error) -> io::Error {
    io::Error::other(e)
}

impl AsyncRead for H2Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = buf.len().min(this.pending.len());
                buf[..n].copy_from_slice(&this.pending[..n]);
                this.pending.advance(n);
                let _ = this.recv.flow_control().release_capacity(n);
                return Poll::Ready(Ok(n));
            }
            match ready!(this.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(0)),
                Some(Ok(b)) => this.pending = b,
                Some(Err(e)) => return Poll::Ready(Err(io_err(e))),
            }
        }
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        this.send.reserve_capacity(buf.len().min(1 << 16));
        while this.send.capacity() == 0 {
            match ready!(this.send.poll_capacity(cx)) {
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Some(Err(e)) => return Poll::Ready(Err(io_err(e))),
                Some(Ok(_)) => {}
            }
        }
        let n = this.send.capacity().min(buf.len());
        this.send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(io_err)?;
        Poll::Ready(Ok(n))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        Poll::Ready(this.send.send_data(Bytes::new(), true).map_err(io_err))
    }
}
