//! An h3 stream ↔ a cleartext TCP socket. The TCP side runs as on the
//! splice path: readiness from the engine (`readable()` / `writable()`, one
//! io_uring `POLL_ADD` each) and synchronous `recv` / `send`, instead of
//! glommio's io_uring reads and writes through `AsyncRead` / `AsyncWrite`
//! (ws 64 B over h3: 1.08x the messages per second over ten interleaved
//! pairs, ahead in seven; h3 bulk CPU per GB unchanged, 1.02x).
//!
//! * TCP → h3 ([`tcp_to_h3`]): `recv` into the spare capacity of a
//!   `BytesMut` (not zeroed), and a read of [`OWNED_FROM`] bytes or more goes
//!   to quinn-proto as owned `Bytes` ([`H3Writer::write_owned`]), which keeps
//!   them until the peer acknowledges them: quinn-proto's copy of written
//!   bytes was 3.7 % of the edge's time in the h3 bulk profile. Smaller reads
//!   (a WebSocket message) are written through that copy, so that a few
//!   bytes in flight never pin a whole block; the block is reused, and goes
//!   back to the core's pool while the socket is idle.
//! * h3 → TCP ([`stream_to_tcp`]): DATA payloads are gathered into a pooled
//!   buffer and sent with one `send`. Sending quinn-proto's chunks as they
//!   are (one `sendmsg` of up to 64 slices) removed that copy but cost more
//!   in the kernel's own copy than it saved: h3 bulk CPU per GB 1.30 against
//!   1.22 s in three interleaved pairs.
//!
//! h2 streams stay on the copy path: the same TCP side under an h2 stream
//! gave h2 bulk 0.65-0.78 against 0.93-1.14 GB/s (three interleaved pairs)
//! and no change in h2 ws 64 B.
//!
//! Same rules as [`super::copy::direction`]: EOF on the source ends the
//! destination for writing (TCP `shutdown`, stream FIN), a read error is a
//! source reset, a write error a gone destination.

use std::io;
use std::os::fd::AsRawFd;

use bytes::BytesMut;
use futures_lite::io::{AsyncRead, AsyncWriteExt};
use glommio::net::TcpStream;

use super::h3::H3Writer;
use super::splice::send_all;
use super::{is_reset, Activity, DirEnd, Moved};
use crate::sys;

/// Bytes read from TCP at most at once (one DATA frame).
const READ_BLOCK: usize = 64 * 1024;
/// Reads this large or larger are handed over without a copy.
const OWNED_FROM: usize = 4096;

/// TCP → h3, after writing `first` (bytes that came with the handshake).
pub async fn tcp_to_h3(src: &TcpStream, mut dst: H3Writer, first: Vec<u8>, activity: &Activity, moved: &Moved) -> DirEnd {
    if !first.is_empty() {
        if let Err(e) = dst.write_all(&first).await {
            return DirEnd::DestinationGone(e);
        }
        moved.add(first.len());
    }
    drop(first);
    let fd = src.as_raw_fd();
    let mut block = BytesMut::new();
    loop {
        let wait = src.readable();
        futures_lite::pin!(wait);
        let ready = match futures_lite::future::poll_once(wait.as_mut()).await {
            Some(r) => r,
            None => {
                // Idle: the block goes back to the core's pool meanwhile.
                put_block(std::mem::take(&mut block));
                wait.await
            }
        };
        if let Err(e) = ready {
            return DirEnd::SourceReset(e.into());
        }
        if block.capacity() < OWNED_FROM {
            // The last block went out owned, or went back: another one.
            block = take_block();
        }
        let n = match sys::recv_into_spare(fd, &mut block) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return DirEnd::SourceReset(e),
        };
        let written = if n >= OWNED_FROM {
            dst.write_owned(block.split().freeze()).await
        } else {
            let r = dst.write_all(&block).await;
            block.clear();
            r
        };
        if let Err(e) = written {
            return DirEnd::DestinationGone(e);
        }
        moved.add(n);
        activity.touch();
    }
    match dst.close().await {
        Err(e) if is_reset(&e) => DirEnd::DestinationGone(e),
        _ => DirEnd::Eof,
    }
}

/// An h3 stream (any reader) → TCP, after writing `first`.
pub async fn stream_to_tcp<R: AsyncRead + Unpin>(mut src: R, dst: &TcpStream, first: Vec<u8>, activity: &Activity, moved: &Moved) -> DirEnd {
    let fd = dst.as_raw_fd();
    if let Err(e) = send_all(dst, fd, &first).await {
        return DirEnd::DestinationGone(e);
    }
    moved.add(first.len());
    drop(first);
    let mut buf = super::buffers::take();
    loop {
        let n = match futures_lite::io::AsyncReadExt::read(&mut src, &mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return DirEnd::SourceReset(e),
        };
        if let Err(e) = send_all(dst, fd, &buf[..n]).await {
            return DirEnd::DestinationGone(e);
        }
        moved.add(n);
        activity.touch();
    }
    match sys::shutdown_write(fd) {
        Err(e) if is_reset(&e) => DirEnd::DestinationGone(e),
        _ => DirEnd::Eof,
    }
}

/// Spare read blocks kept per core.
const MAX_SPARE_BLOCKS: usize = 64;

thread_local! {
    static BLOCKS: std::cell::RefCell<Vec<BytesMut>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty read block with room for at least [`OWNED_FROM`] bytes.
fn take_block() -> BytesMut {
    BLOCKS.with(|b| b.borrow_mut().pop()).unwrap_or_else(|| BytesMut::with_capacity(READ_BLOCK))
}

/// Keeps `block` (emptied) for the next read on this core, if it still has
/// room worth keeping. The bytes already handed out as `Bytes` live on in
/// their own part of its allocation.
fn put_block(mut block: BytesMut) {
    block.clear();
    if block.capacity() >= OWNED_FROM {
        BLOCKS.with(|b| {
            let mut b = b.borrow_mut();
            if b.len() < MAX_SPARE_BLOCKS {
                b.push(block);
            }
        });
    }
}
