//! One HTTP/2 stream (h2's `SendStream` + `RecvStream`) as a byte-stream leg
//! of a relay: after an extended CONNECT or a plain CONNECT the stream's DATA
//! frames carry the tunnel's bytes (RFC 8441 §5, RFC 9113 §8.5).
//!
//! Flow control is end to end: received DATA is released to the peer's
//! window only as the relay copies it out, and we send only within the
//! capacity h2 assigns, so a slow reader on the far side stalls this stream's
//! sender instead of growing a buffer here. END_STREAM ↔ EOF; a relay abort
//! sends RST_STREAM(CONNECT_ERROR), and a received RST_STREAM surfaces as a
//! reset error that the relay propagates to the other leg.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_lite::io::{AsyncRead, AsyncWrite};
use h2::{Reason, RecvStream, SendStream};

/// Largest chunk handed to h2 in one `send_data` (one frame-sized slice of
/// the relay buffer; h2 splits further by the peer's max frame size).
const MAX_CHUNK: usize = 64 * 1024;

/// Maps an h2 error onto the I/O error kinds the relay understands.
pub fn io_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e
            .into_io()
            .unwrap_or_else(|| io::Error::other("h2 I/O error"));
    }
    let kind = if e.is_reset() {
        io::ErrorKind::ConnectionReset
    } else if e.is_go_away() {
        io::ErrorKind::ConnectionAborted
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, e)
}

/// An open stream in both directions.
pub struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
}

impl H2Stream {
    /// Wraps the two halves of one stream.
    pub fn new(send: SendStream<Bytes>, recv: RecvStream) -> H2Stream {
        H2Stream { send, recv }
    }

    /// Reader, writer, and a handle that resets the stream.
    pub fn split(self) -> (H2Reader, H2Writer, H2Reset) {
        let send = Rc::new(RefCell::new(self.send));
        (
            H2Reader {
                recv: self.recv,
                pending: Bytes::new(),
            },
            H2Writer { send: send.clone() },
            H2Reset(send),
        )
    }
}

/// Receiving half: DATA frames as bytes; END_STREAM as EOF.
pub struct H2Reader {
    recv: RecvStream,
    pending: Bytes,
}

impl AsyncRead for H2Reader {
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
                // Window credit goes back only for bytes the relay took.
                let _ = this.recv.flow_control().release_capacity(n);
                return Poll::Ready(Ok(n));
            }
            match ready!(this.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(0)),
                Some(Ok(b)) => this.pending = b,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
    }
}

/// Sending half: bytes as DATA frames within the granted capacity; close
/// sends END_STREAM.
pub struct H2Writer {
    send: Rc<RefCell<SendStream<Bytes>>>,
}

impl AsyncWrite for H2Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut send = self.send.borrow_mut();
        send.reserve_capacity(buf.len().min(MAX_CHUNK));
        while send.capacity() == 0 {
            match ready!(send.poll_capacity(cx)) {
                None => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "h2 stream closed",
                    )))
                }
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                Some(Ok(_)) => {}
            }
        }
        let n = send.capacity().min(buf.len());
        send.send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(io_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection task writes frames out as soon as they are queued.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut send = self.send.borrow_mut();
        send.reserve_capacity(0);
        Poll::Ready(send.send_data(Bytes::new(), true).map_err(io_error))
    }
}

/// Resets the stream (the relay's abort on this leg).
pub struct H2Reset(Rc<RefCell<SendStream<Bytes>>>);

impl H2Reset {
    /// Sends RST_STREAM(CONNECT_ERROR): RFC 9113 §8.5 for a tunnel whose
    /// other end was reset.
    pub fn reset(&self) {
        self.0.borrow_mut().send_reset(Reason::CONNECT_ERROR);
    }
}

/// Sends all of `data` on `send` as the peer's window allows (for bodies
/// outside a relay: forwarded requests and responses).
pub async fn send_all(send: &mut SendStream<Bytes>, mut data: Bytes) -> io::Result<()> {
    while !data.is_empty() {
        send.reserve_capacity(data.len().min(MAX_CHUNK));
        let granted = std::future::poll_fn(|cx| {
            if send.capacity() > 0 {
                return Poll::Ready(Ok(send.capacity()));
            }
            match ready!(send.poll_capacity(cx)) {
                None => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "h2 stream closed",
                ))),
                Some(Err(e)) => Poll::Ready(Err(io_error(e))),
                Some(Ok(_)) => Poll::Ready(Ok(send.capacity())),
            }
        })
        .await?;
        if granted == 0 {
            continue;
        }
        let chunk = data.split_to(granted.min(data.len()));
        send.send_data(chunk, false).map_err(io_error)?;
    }
    Ok(())
}
