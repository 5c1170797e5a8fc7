//! The only place with `unsafe`: thin wrappers over Linux system calls that no
//! safe crate exposes in the shape the relay needs (splice(2) between two
//! sockets through a pipe, `F_SETPIPE_SZ`, socket options (a reuseport
//! group's BPF program among them), the open-files
//! limit, the CPU affinity mask).
//!
//! Each block states why it is sound. Callers get `io::Result` and owned fds.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A non-blocking pipe used as the in-kernel buffer of one splice direction.
#[derive(Debug)]
pub struct Pipe {
    /// Read end (spliced into the destination socket).
    pub read: OwnedFd,
    /// Write end (filled from the source socket).
    pub write: OwnedFd,
}

impl Pipe {
    /// Creates a pipe with O_NONBLOCK|O_CLOEXEC and tries to grow it to `size`
    /// bytes (F_SETPIPE_SZ; failure to grow is not an error, the default 64 KiB
    /// pipe still works).
    pub fn new(size: usize) -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid, writable array of two c_ints, as pipe2 requires.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        if size > 0 {
            let size = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
            // SAFETY: fcntl on an fd we own; F_SETPIPE_SZ takes an int argument.
            let _ = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
        }
        Ok(Pipe { read, write })
    }
}

/// Moves up to `len` bytes from `from` to `to` with splice(2), never blocking.
///
/// Returns `Ok(0)` at end of input (socket → pipe) and `ErrorKind::WouldBlock`
/// when the kernel has nothing to move right now.
pub fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: splice only reads the two descriptors and the flags; null offsets
    // are required for pipes and sockets. Invalid fds yield EBADF, not UB.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `recv(MSG_DONTWAIT)` on a socket: `Ok(0)` at end of stream,
/// `ErrorKind::WouldBlock` when nothing is queued.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// [`recv`] into the spare capacity of `buf` (appended to its bytes), so a
/// fresh buffer is not zeroed first only to be overwritten.
pub fn recv_into_spare(fd: RawFd, buf: &mut bytes::BytesMut) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    // SAFETY: `spare` is valid for writes of `spare.len()` bytes for the
    // whole call; recv(2) writes at most that many.
    let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel initialised the first `n` bytes of the spare
    // capacity (`n <= spare.len()`), right after the buffer's length.
    unsafe { buf.set_len(buf.len() + n as usize) };
    Ok(n as usize)
}

/// `send(MSG_DONTWAIT|MSG_NOSIGNAL)`: never blocks, never raises SIGPIPE.
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole call.
    let n = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Puts a socket in non-blocking mode (splice needs it; glommio's io_uring
/// operations work either way).
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor; an invalid fd gives EBADF.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Wraps a bound, listening socket in glommio's listener type.
pub fn glommio_listener(sock: socket2::Socket) -> glommio::net::TcpListener {
    use std::os::fd::IntoRawFd;
    // SAFETY: `sock` is a bound, listening TCP socket we own; ownership moves.
    unsafe { glommio::net::TcpListener::from_raw_fd(sock.into_raw_fd()) }
}

/// Arms SO_LINGER with a zero timeout so that closing the socket sends RST:
/// how a reset received on one leg is propagated to the other.
pub fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    // SAFETY: borrows the fd only for the call; `forget` keeps it open after.
    let sock = unsafe { socket2::Socket::from_raw_fd(fd) };
    let r = sock.set_linger(Some(std::time::Duration::ZERO));
    std::mem::forget(sock);
    r
}

/// Fixes the kernel send buffer of a socket at `bytes` (the kernel doubles
/// it for bookkeeping) instead of letting it autotune up to `tcp_wmem`'s
/// maximum: what bounds the kernel memory a stalled upstream can pin.
pub fn set_send_buffer(fd: RawFd, bytes: usize) -> io::Result<()> {
    // SAFETY: borrows the fd only for the call; `forget` keeps it open after.
    let sock = unsafe { socket2::Socket::from_raw_fd(fd) };
    let r = sock.set_send_buffer_size(bytes);
    std::mem::forget(sock);
    r
}

/// Attaches a classic BPF program to the SO_REUSEPORT group of `sock`
/// (SO_ATTACH_REUSEPORT_CBPF): the kernel runs it on each datagram for the
/// group and delivers it to the socket whose index it returns (or hashes,
/// past the last socket).
pub fn attach_reuseport_cbpf(sock: &socket2::Socket, prog: &[crate::quic::steer::Insn]) -> io::Result<()> {
    let mut filters: Vec<libc::sock_filter> = prog
        .iter()
        .map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k })
        .collect();
    let len = u16::try_from(filters.len()).map_err(|_| io::Error::other("BPF program too long"))?;
    let fprog = libc::sock_fprog { len, filter: filters.as_mut_ptr() };
    // SAFETY: setsockopt reads `fprog` and the `len` instructions it points
    // to; both live until the call returns, and the kernel copies them.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `shutdown(fd, SHUT_WR)`: sends FIN, keeps reading possible (half-close).
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: shutdown(2) only reads its integer arguments.
    if unsafe { libc::shutdown(fd, libc::SHUT_WR) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises the soft limit of open files to the hard limit; returns the
/// soft limit now in force.
pub fn raise_nofile() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(raised.rlim_cur);
        }
    }
    Ok(lim.rlim_cur)
}

/// The CPUs this process may run on (respects `taskset`).
/// Gives the allocator's free pages back to the kernel (glibc
/// `malloc_trim(0)`: whole free pages inside the heaps, not only at their
/// top). Returns whether memory was released.
pub fn trim_heap() -> bool {
    // SAFETY: malloc_trim takes no pointers and is thread-safe (it locks
    // each arena while it walks it).
    unsafe { libc::malloc_trim(0) == 1 }
}

pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set, and
    // sched_getaffinity writes at most size_of::<cpu_set_t>() bytes into it.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        set
    };
    // SAFETY: CPU_ISSET reads the set we own for indexes below CPU_SETSIZE.
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn splice_moves_bytes_between_sockets_through_a_pipe() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l2.local_addr().unwrap()).unwrap();
        let (mut d, _) = l2.accept().unwrap();
        a.write_all(b"hello splice").unwrap();
        let pipe = Pipe::new(1 << 16).unwrap();
        let mut moved = 0;
        for _ in 0..1000 {
            match splice(b.as_raw_fd(), pipe.write.as_raw_fd(), 1 << 16) {
                Ok(n) => {
                    moved += n;
                    if moved == 12 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(
            splice(pipe.read.as_raw_fd(), c.as_raw_fd(), 1 << 16).unwrap(),
            12
        );
        let mut got = [0u8; 12];
        d.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello splice");
        assert!(!allowed_cpus().unwrap().is_empty());
    }
}
