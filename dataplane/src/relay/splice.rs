//! Splice path: cleartext TCP ↔ cleartext TCP without copying to user space.
//!
//! Recipe (DESIGN §3): both sockets non-blocking, one `pipe2(O_NONBLOCK)`
//! per direction while bytes are in flight, synchronous
//! `splice(SPLICE_F_MOVE|SPLICE_F_NONBLOCK)` socket → pipe → socket, and
//! readiness from io_uring (`readable()` / `writable()`, one `POLL_ADD`
//! each, our glommio patch):
//! * nothing to read: await `readable()` on the source, then read;
//! * destination full: await `writable()` on it, then write again.
//!
//! Readiness takes `&self`, so the two directions wait on the same two
//! sockets: a relayed pair holds two descriptors, no `dup`s.
//! Each burst starts with one `recv` into a pooled buffer: a small message
//! (the common WebSocket case) then costs recv + send instead of a pipe and
//! three splice calls; only a read that fills [`COPY_FIRST`] bytes switches
//! the rest of the burst to splice (the idea of HAProxy's `splice-auto`).
//! Pipes come from a per-core pool only while bytes are in flight and go
//! back as soon as the pipe is empty, so an idle relay holds two fds (its
//! sockets), no pipe and no buffer.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use glommio::net::TcpStream;

use super::{is_reset, Activity, DirEnd, Moved};
use crate::sys;

/// Pipe capacity per direction; also the most one splice call moves.
const PIPE_SIZE: usize = 256 * 1024;

/// Bytes copied at the start of each burst before splicing takes over.
pub const COPY_FIRST: usize = 4096;

/// Both sockets of a relay.
#[derive(Debug)]
pub struct Pair {
    down: TcpStream,
    up: TcpStream,
}

thread_local! {
    static PIPES: RefCell<Vec<sys::Pipe>> = const { RefCell::new(Vec::new()) };
}

/// Spare pipes kept per core.
const MAX_SPARE_PIPES: usize = 128;

/// A pipe from this core's pool; goes back when dropped (only ever dropped
/// empty: a direction drains its pipe before letting go of it).
struct PooledPipe(Option<sys::Pipe>);

impl PooledPipe {
    fn take() -> io::Result<PooledPipe> {
        let spare = PIPES.with(|p| p.borrow_mut().pop());
        Ok(PooledPipe(Some(match spare {
            Some(p) => p,
            None => sys::Pipe::new(PIPE_SIZE)?,
        })))
    }
    fn fds(&self) -> (RawFd, RawFd) {
        match &self.0 {
            Some(p) => (p.read.as_raw_fd(), p.write.as_raw_fd()),
            None => (-1, -1),
        }
    }
    /// A pipe that still holds bytes (the relay aborted) is closed instead.
    fn discard(mut self) {
        self.0 = None;
    }
}

impl Drop for PooledPipe {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            PIPES.with(|pool| {
                let mut pool = pool.borrow_mut();
                if pool.len() < MAX_SPARE_PIPES {
                    pool.push(p);
                }
            });
        }
    }
}

impl Pair {
    /// Prepares a splice relay between two connected sockets.
    pub fn new(down: TcpStream, up: TcpStream) -> io::Result<Pair> {
        sys::set_nonblocking(down.as_raw_fd())?;
        sys::set_nonblocking(up.as_raw_fd())?;
        Ok(Pair { down, up })
    }

    /// Downstream → upstream.
    pub async fn d2u(&self, activity: &Activity, moved: &Moved) -> DirEnd {
        direction(&self.down, &self.up, activity, moved).await
    }

    /// Upstream → downstream.
    pub async fn u2d(&self, activity: &Activity, moved: &Moved) -> DirEnd {
        direction(&self.up, &self.down, activity, moved).await
    }
}

async fn direction(src: &TcpStream, dst: &TcpStream, activity: &Activity, moved: &Moved) -> DirEnd {
    let (src_fd, dst_fd) = (src.as_raw_fd(), dst.as_raw_fd());
    loop {
        // Idle: hold no pipe and no buffer, park until the source has a
        // byte, EOF or an error.
        if let Err(e) = src.readable().await {
            return DirEnd::SourceReset(e.into());
        }
        // Copy the first bytes: for a small message that is all of it.
        let mut buf = super::buffers::take();
        let n = match sys::recv(src_fd, &mut buf[..COPY_FIRST]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return DirEnd::SourceReset(e),
        };
        if n == 0 {
            return match sys::shutdown_write(dst_fd) {
                Err(e) if is_reset(&e) => DirEnd::DestinationGone(e),
                _ => DirEnd::Eof,
            };
        }
        if let Err(e) = send_all(dst, dst_fd, &buf[..n]).await {
            return DirEnd::DestinationGone(e);
        }
        moved.add_copied(n);
        drop(buf);
        activity.touch();
        if n < COPY_FIRST {
            continue;
        }
        let pipe = match PooledPipe::take() {
            Ok(p) => p,
            Err(e) => return DirEnd::SourceReset(e),
        };
        let (pipe_r, pipe_w) = pipe.fds();
        // Busy: move bytes until the source runs dry (pipe empty again).
        loop {
            let mut in_pipe = match sys::splice(src_fd, pipe_w, PIPE_SIZE) {
                Ok(0) => {
                    drop(pipe);
                    return match sys::shutdown_write(dst_fd) {
                        Err(e) if is_reset(&e) => DirEnd::DestinationGone(e),
                        _ => DirEnd::Eof,
                    };
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    drop(pipe);
                    return DirEnd::SourceReset(e);
                }
            };
            while in_pipe > 0 {
                let r = match sys::splice(pipe_r, dst_fd, in_pipe) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        match dst.writable().await {
                            Ok(()) => continue,
                            Err(e) => Err(e.into()),
                        }
                    }
                    other => other,
                };
                match r {
                    Ok(n) => {
                        in_pipe -= n;
                        moved.add(n);
                    }
                    Err(e) => {
                        pipe.discard();
                        return DirEnd::DestinationGone(e);
                    }
                }
            }
            activity.touch();
        }
    }
}

/// Sends `data` without blocking the core: directly while the socket takes
/// it, waiting for writability (io_uring) when it does not.
pub(super) async fn send_all(dst: &TcpStream, dst_fd: RawFd, data: &[u8]) -> io::Result<()> {
    let mut sent = 0;
    while sent < data.len() {
        match sys::send(dst_fd, &data[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
