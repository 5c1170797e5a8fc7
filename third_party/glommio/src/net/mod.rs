// Unless explicitly stated otherwise all files in this repository are licensed
// under the MIT/Apache-2.0 License, at your convenience
//
// This product includes software developed at Datadog (https://www.datadoghq.com/). Copyright 2020 Datadog, Inc.
//
//! This module provides glommio's networking support.
use crate::sys;
use nix::sys::socket::{MsgFlags, SockaddrLike};
use std::{
    io,
    os::unix::io::{AsRawFd, RawFd},
};

fn yolo_accept(fd: RawFd) -> Option<io::Result<RawFd>> {
    let flags =
        nix::fcntl::OFlag::from_bits(nix::fcntl::fcntl(fd, nix::fcntl::F_GETFL).unwrap()).unwrap();
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::F_SETFL(flags | nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let r = sys::accept_syscall(fd);
    nix::fcntl::fcntl(fd, nix::fcntl::F_SETFL(flags)).unwrap();
    match r {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

fn yolo_send(fd: RawFd, buf: &[u8]) -> Option<io::Result<usize>> {
    match sys::send_syscall(fd, buf.as_ptr(), buf.len(), MsgFlags::MSG_DONTWAIT.bits()) {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

fn yolo_peek(fd: RawFd, buf: &mut [u8]) -> Option<io::Result<usize>> {
    match sys::recv_syscall(
        fd,
        buf.as_mut_ptr(),
        buf.len(),
        (MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_PEEK).bits(),
    ) {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

fn yolo_recv(fd: RawFd, buf: &mut [u8]) -> Option<io::Result<usize>> {
    match sys::recv_syscall(
        fd,
        buf.as_mut_ptr(),
        buf.len(),
        MsgFlags::MSG_DONTWAIT.bits(),
    ) {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

fn yolo_recvmsg<T: SockaddrLike>(
    fd: RawFd,
    buf: &mut [u8],
    flags: MsgFlags,
) -> Option<io::Result<(usize, T)>> {
    match sys::recvmsg_syscall(
        fd,
        buf.as_mut_ptr(),
        buf.len(),
        (flags | MsgFlags::MSG_DONTWAIT).bits(),
    ) {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

fn yolo_sendmsg(
    fd: RawFd,
    buf: &[u8],
    addr: &impl nix::sys::socket::SockaddrLike,
) -> Option<io::Result<usize>> {
    match sys::sendmsg_syscall(
        fd,
        buf.as_ptr(),
        buf.len(),
        addr,
        MsgFlags::MSG_DONTWAIT.bits(),
    ) {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

/// [switchyard patch] Waits until `fd` has something to read (data, end of
/// stream or an error): one io_uring `POLL_ADD` through this executor's
/// reactor, no buffer. For descriptors glommio does not own (a UDP socket
/// driven with `recvmsg`/`sendmsg` and control messages, say).
pub async fn readable(fd: &impl AsRawFd) -> io::Result<()> {
    let source = crate::executor().reactor().poll_read_ready(fd.as_raw_fd());
    source.collect_rw().await.map(|_| ())
}

/// [switchyard patch] Waits until `fd` can take more bytes (or has an
/// error), like [`readable`].
pub async fn writable(fd: &impl AsRawFd) -> io::Result<()> {
    let source = crate::executor().reactor().poll_write_ready(fd.as_raw_fd());
    source.collect_rw().await.map(|_| ())
}

/// [switchyard patch] Readiness of one descriptor in one direction, from a
/// multishot io_uring `POLL_ADD` that is armed on the first wait and stays
/// armed: each readiness event posts one completion (events that arrive
/// before they are awaited are coalesced into one), so a loop that reads until
/// `WouldBlock` and then awaits [`Readiness::ready`] costs no submission per
/// wait. As with edge-triggered epoll, a wait may return when the descriptor
/// is no longer ready (an event consumed by an earlier read), and an event is
/// reported once: a caller that stops reading before `WouldBlock` (a short
/// read) must look at the returned poll mask, which tells whether end of
/// stream or an error came with the data. Dropping it cancels the poll.
#[derive(Debug)]
pub struct Readiness {
    fd: std::os::unix::io::RawFd,
    write: bool,
    source: std::cell::RefCell<Option<sys::Source>>,
}

impl Readiness {
    /// Something to read: data, end of stream, or an error.
    pub fn read(fd: &impl AsRawFd) -> Readiness {
        Readiness { fd: fd.as_raw_fd(), write: false, source: Default::default() }
    }

    /// Room to write, or an error.
    pub fn write(fd: &impl AsRawFd) -> Readiness {
        Readiness { fd: fd.as_raw_fd(), write: true, source: Default::default() }
    }

    /// Waits for the next readiness event (or one that arrived since the
    /// last wait); returns its poll mask (`libc::POLLIN`, `POLLRDHUP`, ...).
    pub async fn ready(&self) -> io::Result<i16> {
        futures_lite::future::poll_fn(|cx| self.poll_ready(cx)).await
    }

    fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<i16>> {
        let mut slot = self.source.borrow_mut();
        if let Some(source) = slot.as_ref() {
            if let Some(result) = source.take_result() {
                return std::task::Poll::Ready(result.map(|mask| mask as i16));
            }
            if source.in_flight() {
                source.add_waiter_single(cx.waker());
                return std::task::Poll::Pending;
            }
        }
        // First wait, or the kernel ended the multishot request: arm it.
        let source = crate::executor()
            .reactor()
            .poll_ready_multishot(self.fd, self.write);
        source.add_waiter_single(cx.waker());
        *slot = Some(source);
        std::task::Poll::Pending
    }
}

mod datagram;
mod stream;
mod tcp_socket;
mod udp_socket;
mod unix;
pub use self::{
    stream::{Buffered, Preallocated},
    tcp_socket::{AcceptedTcpStream, TcpListener, TcpStream},
    udp_socket::UdpSocket,
    unix::{AcceptedUnixStream, UnixDatagram, UnixListener, UnixStream},
};
