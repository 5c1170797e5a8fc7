//! One HTTP/3 request stream as a byte-stream leg of a relay: after an
//! extended CONNECT (RFC 9220) or a plain CONNECT (RFC 9114 §4.4) the
//! stream's DATA frames carry the tunnel's bytes.
//!
//! Reading parses the stream's frames with [`crate::h3::stream`] (unknown
//! frames skipped, trailers ignored) and yields DATA payloads; the stream's
//! FIN is EOF (checked to fall between frames). Writing wraps the bytes in
//! DATA frames within quinn-proto's stream credit, so flow control is end to
//! end. A relay abort resets the stream with H3_CONNECT_ERROR (RFC 9114
//! §4.4) and stops its receiving half; a received RESET_STREAM surfaces as a
//! reset error that the relay propagates to the other leg.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_lite::io::{AsyncRead, AsyncWrite};

use crate::h3::capsule::{CapsuleScanner, Protocol};
use crate::h3::error::{Code, H3Error, Scope};
use crate::http3::sessions::Injection;
use crate::h3::frame;
use crate::h3::stream::{RequestStream, StreamEvent};
use crate::quic::{Connection, RecvStream, SendStream};

/// Largest DATA frame written at once.
const MAX_FRAME: usize = 64 * 1024;
/// DATA frames up to this size are written with their head in one piece.
const SMALL_FRAME: usize = 4 * 1024;

/// An open request stream in both directions, after its head.
pub struct H3Stream {
    pub conn: Connection,
    /// The sessions of the stream's connection (datagrams, WebTransport).
    pub sessions: std::rc::Rc<crate::http3::sessions::Sessions>,
    pub send: SendStream,
    pub recv: RecvStream,
    /// The parser, past the request's HEADERS.
    pub frames: RequestStream,
    /// Stream bytes read with the head but not parsed yet.
    pub rest: Bytes,
    /// A session's capsules: their rules, checked on what is read, and the
    /// edge's own put in.
    pub capsules: Option<SessionCapsules>,
}

/// What a session's request stream does with the capsules it reads.
pub struct SessionCapsules {
    scanner: CapsuleScanner,
    inject: Rc<Injection>,
    /// One of the edge's capsules is part way out.
    injecting: bool,
}

impl H3Stream {
    /// The stream of a session: its DATA is a capsule stream whose rules
    /// (`protocol`'s) are checked as it passes.
    pub fn with_capsules(mut self, protocol: Protocol) -> H3Stream {
        self.capsules = Some(SessionCapsules { scanner: CapsuleScanner::new(protocol), inject: Rc::default(), injecting: false });
        self
    }

    /// Where capsules of the edge's own go into what this stream reads
    /// (after [`H3Stream::with_capsules`]).
    pub fn injection(&self) -> Option<Rc<Injection>> {
        self.capsules.as_ref().map(|c| c.inject.clone())
    }

    /// Reader, writer, and a handle that resets the stream.
    pub fn split(self) -> (H3Reader, H3Writer, H3Reset) {
        let send = Rc::new(RefCell::new(self.send));
        let recv = Rc::new(RefCell::new(self.recv));
        (
            H3Reader { conn: self.conn, recv: recv.clone(), frames: self.frames, raw: self.rest, send: Some(send.clone()), end: None, capsules: self.capsules },
            H3Writer { send: send.clone(), head: Vec::new(), frame_left: 0 },
            H3Reset { send, recv },
        )
    }
}

/// Answers a protocol error found on a request stream: a connection error
/// closes the connection with its code; a stream error resets the stream
/// (its sending half too, where this side holds it).
pub fn fail(conn: &Connection, send: Option<&mut SendStream>, recv: &mut RecvStream, e: &H3Error) -> io::Error {
    match e.scope {
        Scope::Connection => conn.close(e.code.0, e.reason.as_bytes()),
        Scope::Stream => {
            if let Some(send) = send {
                send.reset(e.code.0);
            }
            recv.stop(e.code.0);
        }
    }
    io::Error::new(io::ErrorKind::InvalidData, format!("h3 {}: {}", e.code, e.reason))
}

/// Receiving half: DATA payloads as bytes; FIN as EOF.
pub struct H3Reader {
    conn: Connection,
    recv: Rc<RefCell<RecvStream>>,
    send: Option<Rc<RefCell<SendStream>>>,
    frames: RequestStream,
    raw: Bytes,
    /// How the stream ended, when that came after bytes still to deliver.
    end: Option<io::Result<usize>>,
    capsules: Option<SessionCapsules>,
}

impl H3Reader {
    /// A request body's reader: the stream's receiving half after its head
    /// (the sending half stays with the caller, who answers on it).
    pub fn body(conn: Connection, recv: RecvStream, frames: RequestStream, rest: Bytes) -> H3Reader {
        H3Reader { conn, recv: Rc::new(RefCell::new(recv)), send: None, frames, raw: rest, end: None, capsules: None }
    }

    fn fail(&self, e: &H3Error) -> io::Error {
        tracing::info!(client = %self.conn.remote_address(), code = %e.code, "h3 stream refused: {}", e.reason);
        match &self.send {
            Some(s) => fail(&self.conn, Some(&mut s.borrow_mut()), &mut self.recv.borrow_mut(), e),
            None => {
                let id = self.recv.borrow().id();
                if e.scope == Scope::Stream {
                    self.conn.reset_send(id, e.code.0);
                }
                fail(&self.conn, None, &mut self.recv.borrow_mut(), e)
            }
        }
    }

    /// The body broke the message's rules (a length other than its
    /// `content-length`): a stream error H3_MESSAGE_ERROR on both halves.
    pub fn malformed(&self, reason: &'static str) -> io::Error {
        self.fail(&H3Error::stream(Code::MESSAGE_ERROR, reason))
    }
}

impl AsyncRead for H3Reader {
    /// The DATA bytes ready ([`H3Reader::poll_data`]); a session's capsule
    /// rules are checked on them before they go on, and a broken rule
    /// aborts the stream instead.
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(SessionCapsules { scanner, inject, injecting }) = this.capsules.as_mut() {
            // The edge's capsules start only between two of the peer's, and
            // once started go on (over as many reads as they take) before
            // any more of the peer's bytes.
            let mut queued = inject.queued();
            if !queued.is_empty() && this.end.is_none() && (*injecting || scanner.at_boundary()) {
                let n = queued.len().min(buf.len());
                buf[..n].copy_from_slice(&queued[..n]);
                queued.drain(..n);
                drop(queued);
                let checked = scanner.scan(&buf[..n], &mut Vec::new()).map(|()| n);
                *injecting = !scanner.at_boundary();
                return Poll::Ready(checked.map_err(|e| this.fail(&e)));
            }
            inject.wake_me(cx.waker());
        }
        let read = ready!(this.poll_data(cx, buf));
        let Some(SessionCapsules { scanner, .. }) = this.capsules.as_mut() else { return Poll::Ready(read) };
        let checked = match read {
            Ok(0) if !buf.is_empty() => scanner.finish().map(|()| 0),
            Ok(n) => scanner.scan(&buf[..n], &mut Vec::new()).map(|()| n),
            Err(e) => return Poll::Ready(Err(e)),
        };
        Poll::Ready(checked.map_err(|e| this.fail(&e)))
    }
}

impl H3Reader {
    /// Fills `buf` with every DATA byte that is ready (quinn-proto hands
    /// over one STREAM frame, ~1.4 KB, per chunk; gathering them makes one
    /// write to the other leg per buffer instead of one per packet); waits
    /// only when nothing is ready. An end or an error found after some
    /// bytes were copied is reported on the next call.
    fn poll_data(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if let Some(end) = this.end.take() {
            return Poll::Ready(end);
        }
        let mut filled = 0;
        loop {
            while !this.raw.is_empty() && filled < buf.len() {
                let room = &mut buf[filled..];
                // At most `room` bytes in: a DATA piece is never longer
                // than its input, so it fits.
                let take = this.raw.len().min(room.len());
                let (used, event) = match this.frames.read(&this.raw[..take]) {
                    Ok(x) => x,
                    Err(e) => {
                        let e = this.fail(&e);
                        return Poll::Ready(this.stop_at(filled, Err(e)));
                    }
                };
                match event {
                    Some(StreamEvent::Data(d)) => {
                        room[..d.len()].copy_from_slice(d);
                        filled += d.len();
                    }
                    // Trailers carry nothing for a tunnel or a forwarded
                    // body, but a malformed trailer section makes the
                    // message malformed (RFC 9114 §4.1.2).
                    Some(StreamEvent::Trailers(fields)) if crate::codec::h3::check_trailers(&fields).is_err() => {
                        let e = this.fail(&H3Error::stream(Code::MESSAGE_ERROR, "malformed trailers"));
                        return Poll::Ready(this.stop_at(filled, Err(e)));
                    }
                    _ => {}
                }
                this.raw.advance(used);
                if used == 0 {
                    break;
                }
            }
            if filled == buf.len() {
                return Poll::Ready(Ok(filled));
            }
            let next = match this.recv.borrow_mut().poll_chunk(cx, MAX_FRAME) {
                Poll::Pending if filled > 0 => return Poll::Ready(Ok(filled)),
                Poll::Pending => return Poll::Pending,
                Poll::Ready(next) => next,
            };
            match next {
                Ok(Some(chunk)) => this.raw = chunk,
                Ok(None) => {
                    let end = match this.frames.finish() {
                        Err(e) => Err(this.fail(&e)),
                        Ok(()) => Ok(0),
                    };
                    return Poll::Ready(this.stop_at(filled, end));
                }
                Err(e) => return Poll::Ready(this.stop_at(filled, Err(e.into()))),
            }
        }
    }
}

impl H3Reader {
    /// The stream ended (`end`: EOF or an error) after `filled` bytes of
    /// this read: those first, the end on the next call.
    fn stop_at(&mut self, filled: usize, end: io::Result<usize>) -> io::Result<usize> {
        if filled == 0 {
            return end;
        }
        self.end = Some(end);
        Ok(filled)
    }
}

/// Sending half: bytes as DATA frames; close sends FIN.
pub struct H3Writer {
    send: Rc<RefCell<SendStream>>,
    /// The current frame's header, not written yet.
    head: Vec<u8>,
    /// Payload bytes the current frame still owes.
    frame_left: usize,
}

impl AsyncWrite for H3Writer {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut send = this.send.borrow_mut();
        if this.frame_left == 0 {
            this.frame_left = buf.len().min(MAX_FRAME);
            this.head.clear();
            frame::encode_head(frame::ty::DATA, this.frame_left as u64, &mut this.head);
            if this.frame_left <= SMALL_FRAME {
                // A small frame goes to quinn-proto in one write (head and
                // payload): one stream write and one wake of the driver per
                // message instead of two.
                let head = this.head.len();
                this.head.extend_from_slice(&buf[..this.frame_left]);
                let n = ready!(send.poll_write(cx, &this.head))?;
                if n < head {
                    this.head.truncate(head);
                    this.head.drain(..n);
                } else {
                    this.head.clear();
                    let paid = n - head;
                    this.frame_left -= paid;
                    if paid > 0 {
                        return Poll::Ready(Ok(paid));
                    }
                }
            }
        }
        while !this.head.is_empty() {
            let n = ready!(send.poll_write(cx, &this.head))?;
            this.head.drain(..n);
        }
        let n = ready!(send.poll_write(cx, &buf[..buf.len().min(this.frame_left)]))?;
        this.frame_left -= n;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection's driver sends as soon as bytes are queued.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut send = this.send.borrow_mut();
        if this.frame_left > 0 || !this.head.is_empty() {
            // A frame cut short cannot end cleanly.
            send.reset(Code::CONNECT_ERROR.0);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "h3 DATA frame cut short")));
        }
        Poll::Ready(send.finish().map_err(io::Error::from))
    }
}

impl H3Writer {
    /// Writes `data` as DATA frames without copying it (quinn-proto keeps
    /// the `Bytes` until the peer acknowledges them): for senders that own
    /// their bytes (the load generator's bulk source, the TCP leg of
    /// [`super::tcp_leg`]).
    pub async fn write_owned(&mut self, mut data: Bytes) -> io::Result<()> {
        if self.frame_left > 0 || !self.head.is_empty() {
            // A frame written through `poll_write` is not finished yet.
            return futures_lite::io::AsyncWriteExt::write_all(self, &data).await;
        }
        while !data.is_empty() {
            let payload = data.split_to(data.len().min(MAX_FRAME));
            let mut head = Vec::with_capacity(9);
            frame::encode_head(frame::ty::DATA, payload.len() as u64, &mut head);
            // Owed until the whole frame is in: if this future is dropped
            // part way, closing resets the stream instead of ending it.
            self.frame_left = payload.len();
            let mut chunks = [Bytes::from(head), payload];
            while chunks.iter().any(|c| !c.is_empty()) {
                std::future::poll_fn(|cx| self.send.borrow_mut().poll_write_chunks(cx, &mut chunks)).await?;
            }
            self.frame_left = 0;
        }
        Ok(())
    }
}

/// Resets the stream (the relay's abort on this leg).
pub struct H3Reset {
    send: Rc<RefCell<SendStream>>,
    recv: Rc<RefCell<RecvStream>>,
}

impl H3Reset {
    /// RESET_STREAM and STOP_SENDING with H3_CONNECT_ERROR: RFC 9114 §4.4
    /// for a tunnel whose other end was reset.
    pub fn reset(&self) {
        self.send.borrow_mut().reset(Code::CONNECT_ERROR.0);
        self.recv.borrow_mut().stop(Code::CONNECT_ERROR.0);
    }
}

/// Writes `data` as one or more DATA frames (bodies outside a relay).
pub async fn send_data(send: &mut SendStream, data: &[u8]) -> Result<(), crate::quic::StreamError> {
    for piece in data.chunks(MAX_FRAME) {
        let mut head = Vec::with_capacity(9);
        frame::encode_head(frame::ty::DATA, piece.len() as u64, &mut head);
        send.write_all(&head).await?;
        send.write_all(piece).await?;
    }
    Ok(())
}
