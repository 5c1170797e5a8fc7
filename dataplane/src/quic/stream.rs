//! The two halves of a QUIC stream as async calls over the shared
//! connection state: a read takes the next chunk quinn-proto has in order
//! (flow credit goes back as the caller takes bytes), a write copies into
//! quinn-proto's send buffer within the peer's credit. A half dropped before
//! its end stops (receive) or resets (send) the stream with the
//! connection's drop code, so a peer never waits on a stream nobody serves.

use std::io;
use std::task::{Context, Poll};

use bytes::Bytes;
use quinn_proto::{ConnectionError, FinishError, ReadError, ReadableError, StreamId, VarInt, WriteError};

use super::connection::Connection;

/// Why a stream operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamError {
    /// The peer reset its sending half (RESET_STREAM) or asked us to stop
    /// sending (STOP_SENDING), with this application code.
    #[error("stream reset by the peer (code {0:#x})")]
    Reset(u64),
    /// The connection ended.
    #[error("connection lost: {0}")]
    ConnectionLost(ConnectionError),
    /// This side already ended the stream.
    #[error("stream already closed")]
    Closed,
}

impl From<StreamError> for io::Error {
    fn from(e: StreamError) -> io::Error {
        let kind = match e {
            StreamError::Reset(_) => io::ErrorKind::ConnectionReset,
            StreamError::ConnectionLost(_) => io::ErrorKind::ConnectionAborted,
            StreamError::Closed => io::ErrorKind::BrokenPipe,
        };
        io::Error::new(kind, e)
    }
}

fn code(v: u64) -> VarInt {
    VarInt::from_u64(v).unwrap_or(VarInt::MAX)
}

/// The receiving half of a stream.
pub struct RecvStream {
    conn: Connection,
    id: StreamId,
    /// FIN read, reset received, or stopped: nothing to do on drop.
    ended: bool,
}

impl RecvStream {
    pub(crate) fn new(conn: Connection, id: StreamId) -> RecvStream {
        RecvStream { conn, id, ended: false }
    }

    /// The stream's id.
    pub fn id(&self) -> u64 {
        self.id.into()
    }

    /// The next chunk (at most `max` bytes), `None` at the end of the stream.
    pub fn poll_chunk(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<Result<Option<Bytes>, StreamError>> {
        if self.ended {
            return Poll::Ready(Ok(None));
        }
        let mut guard = self.conn.0.borrow_mut();
        let st = &mut *guard;
        let mut stream = st.inner.recv_stream(self.id);
        let mut chunks = match stream.read(true) {
            Ok(c) => c,
            Err(ReadableError::ClosedStream) => {
                self.ended = true;
                return Poll::Ready(match &st.lost {
                    Some(e) => Err(StreamError::ConnectionLost(e.clone())),
                    None => Err(StreamError::Closed),
                });
            }
            Err(ReadableError::IllegalOrderedRead) => return Poll::Ready(Err(StreamError::Closed)),
        };
        let next = chunks.next(max);
        let credit = chunks.finalize();
        if credit.should_transmit() {
            st.wake_driver();
        }
        match next {
            Ok(Some(chunk)) => Poll::Ready(Ok(Some(chunk.bytes))),
            Ok(None) => {
                self.ended = true;
                Poll::Ready(Ok(None))
            }
            Err(ReadError::Reset(c)) => {
                self.ended = true;
                Poll::Ready(Err(StreamError::Reset(c.into_inner())))
            }
            Err(ReadError::Blocked) => {
                if let Some(e) = &st.lost {
                    return Poll::Ready(Err(StreamError::ConnectionLost(e.clone())));
                }
                st.readers.insert(self.id, cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// The next chunk (at most `max` bytes), `None` at the end of the stream.
    pub async fn chunk(&mut self, max: usize) -> Result<Option<Bytes>, StreamError> {
        std::future::poll_fn(|cx| self.poll_chunk(cx, max)).await
    }

    /// Asks the peer to stop sending (STOP_SENDING with `code`).
    pub fn stop(&mut self, code_: u64) {
        if self.ended {
            return;
        }
        self.ended = true;
        let mut st = self.conn.0.borrow_mut();
        let _ = st.inner.recv_stream(self.id).stop(code(code_));
        st.readers.remove(&self.id);
        st.wake_driver();
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        if !self.ended {
            let c = self.conn.0.borrow().drop_code.into_inner();
            self.stop(c);
        }
    }
}

/// The sending half of a stream.
pub struct SendStream {
    conn: Connection,
    id: StreamId,
    /// Finished or reset: nothing to do on drop.
    ended: bool,
}

impl SendStream {
    pub(crate) fn new(conn: Connection, id: StreamId) -> SendStream {
        SendStream { conn, id, ended: false }
    }

    /// The stream's id.
    pub fn id(&self) -> u64 {
        self.id.into()
    }

    /// Writes some of `buf` (at least one byte unless `buf` is empty).
    pub fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<Result<usize, StreamError>> {
        self.poll_send(cx, |s| s.write(buf))
    }

    /// Writes some of `chunks` without copying them (quinn-proto keeps the
    /// `Bytes`); each chunk is advanced past what was taken. Returns the
    /// bytes written (at least one unless all are empty).
    pub fn poll_write_chunks(&mut self, cx: &mut Context<'_>, chunks: &mut [Bytes]) -> Poll<Result<usize, StreamError>> {
        self.poll_send(cx, |s| s.write_chunks(chunks).map(|w| w.bytes))
    }

    /// One write into quinn-proto's stream (`write`): wakes the driver
    /// when bytes went in, waits for credit when blocked, ends the half
    /// when the peer stopped it or it is closed.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(&mut quinn_proto::SendStream<'_>) -> Result<usize, WriteError>,
    ) -> Poll<Result<usize, StreamError>> {
        if self.ended {
            return Poll::Ready(Err(StreamError::Closed));
        }
        let mut guard = self.conn.0.borrow_mut();
        let st = &mut *guard;
        if let Some(e) = &st.lost {
            return Poll::Ready(Err(StreamError::ConnectionLost(e.clone())));
        }
        match write(&mut st.inner.send_stream(self.id)) {
            Ok(n) => {
                st.wake_driver();
                Poll::Ready(Ok(n))
            }
            Err(WriteError::Blocked) => {
                st.writers.insert(self.id, cx.waker().clone());
                Poll::Pending
            }
            Err(WriteError::Stopped(c)) => {
                self.ended = true;
                Poll::Ready(Err(StreamError::Reset(c.into_inner())))
            }
            Err(WriteError::ClosedStream) => {
                self.ended = true;
                Poll::Ready(Err(StreamError::Closed))
            }
        }
    }

    /// Writes all of `buf`.
    pub async fn write_all(&mut self, mut buf: &[u8]) -> Result<(), StreamError> {
        while !buf.is_empty() {
            let n = std::future::poll_fn(|cx| self.poll_write(cx, buf)).await?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Ends the stream (FIN after the bytes written).
    pub fn finish(&mut self) -> Result<(), StreamError> {
        if self.ended {
            return Err(StreamError::Closed);
        }
        self.ended = true;
        let mut st = self.conn.0.borrow_mut();
        let r = st.inner.send_stream(self.id).finish();
        st.wake_driver();
        match r {
            Ok(()) => Ok(()),
            Err(FinishError::Stopped(c)) => Err(StreamError::Reset(c.into_inner())),
            Err(FinishError::ClosedStream) => Err(StreamError::Closed),
        }
    }

    /// Abandons the stream (RESET_STREAM with `code`).
    pub fn reset(&mut self, code_: u64) {
        if self.ended {
            return;
        }
        self.ended = true;
        let mut st = self.conn.0.borrow_mut();
        let _ = st.inner.send_stream(self.id).reset(code(code_));
        st.writers.remove(&self.id);
        st.wake_driver();
    }

    /// Waits until the peer asks us to stop sending (`Some(code)`), or the
    /// stream or connection ends (`None`).
    pub fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<Option<u64>> {
        let mut st = self.conn.0.borrow_mut();
        if st.lost.is_some() {
            return Poll::Ready(None);
        }
        match st.inner.send_stream(self.id).stopped() {
            Ok(Some(c)) => Poll::Ready(Some(c.into_inner())),
            Ok(None) => {
                st.writers.insert(self.id, cx.waker().clone());
                Poll::Pending
            }
            Err(_) => Poll::Ready(None),
        }
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        if !self.ended {
            let c = self.conn.0.borrow().drop_code.into_inner();
            self.reset(c);
        }
    }
}
