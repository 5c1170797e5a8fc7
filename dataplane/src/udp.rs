//! UDP for the per-core QUIC endpoints: one socket per core (SO_REUSEPORT),
//! driven with `recvmsg`/`sendmsg` and control messages, so that one system
//! call moves many datagrams: GSO on send (`UDP_SEGMENT`: one buffer, cut
//! into `segment_size` datagrams by the kernel), GRO on receive (`UDP_GRO`:
//! coalesced datagrams and their stride), and the destination address of
//! each datagram (`IP_PKTINFO`), which a server on a wildcard address needs
//! to answer from the address it was reached on.
//!
//! The control-message work is quinn-udp's (the crate quinn itself uses);
//! waiting is glommio's reactor (our patches): receiving reads until
//! `WouldBlock` and then waits on a multishot io_uring `POLL_ADD` armed once
//! per socket (`glommio::net::Readiness`: no submission per wait, and its
//! edge-triggered reports suit a loop that always drains), sending waits on
//! a one-shot `writable` only when the socket buffer is full. A quiet socket
//! holds no buffer and no task wakes for nothing.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use glommio::net::Readiness;
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

use crate::quic::steer::SteerKey;

/// Socket buffer asked for each way (capped by the kernel's maximum).
const UDP_BUFFER: usize = 4 << 20;

/// A UDP socket of one core with its offload state.
#[derive(Debug)]
pub struct UdpEndpoint {
    // dropped first: cancels the poll before the socket closes
    readable: Readiness,
    socket: Socket,
    state: UdpSocketState,
}

/// Binds `addr` with SO_REUSEPORT (every core binds the same port), non
/// blocking, with large socket buffers. Plain socket calls: any thread may
/// bind; [`UdpEndpoint::from_socket`] then runs it on a core.
pub fn bind_socket(addr: SocketAddr) -> io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    // Room for bursts: a core that is busy for a moment must not drop
    // datagrams (each drop is a loss that halves the sender's window).
    // The kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// The sockets of one QUIC listener, one per core, bound in core order:
/// socket `i` of the reuseport group is core `i`'s, which is what
/// [`steer_group`]'s program returns.
pub fn bind_group(addr: SocketAddr, cores: usize) -> io::Result<Vec<Socket>> {
    let mut group: Vec<Socket> = Vec::with_capacity(cores);
    for _ in 0..cores {
        // A port 0 listener: every core on the port the first one got.
        let at = match group.first() {
            Some(first) => first.local_addr()?.as_socket().unwrap_or(addr),
            None => addr,
        };
        group.push(bind_socket(at)?);
    }
    Ok(group)
}

/// Attaches the steering program ([`crate::quic::steer`]) to a group of
/// [`bind_group`]: each datagram goes to the socket of the core its
/// connection id names.
pub fn steer_group(group: &[Socket], key: &SteerKey) -> io::Result<()> {
    match group.first() {
        Some(first) => crate::sys::attach_reuseport_cbpf(first, &key.program(group.len())),
        None => Ok(()),
    }
}

impl UdpEndpoint {
    #[cfg(test)]
    /// Binds `addr` ([`bind_socket`]) and enables GRO and
    /// destination-address reporting.
    pub fn bind(addr: SocketAddr) -> io::Result<UdpEndpoint> {
        UdpEndpoint::from_socket(bind_socket(addr)?)
    }

    /// Runs a socket of [`bind_socket`] on this thread's reactor, with GRO
    /// and destination-address reporting enabled.
    pub fn from_socket(socket: Socket) -> io::Result<UdpEndpoint> {
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        let readable = Readiness::read(&socket);
        Ok(UdpEndpoint {
            readable,
            socket,
            state,
        })
    }

    /// The bound address.
    #[allow(dead_code)] // tests
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an inet socket"))
    }

    /// Datagrams one GSO send may carry (1 where the kernel has no GSO).
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    #[allow(dead_code)] // tests
    /// Datagrams one GRO receive may return coalesced (size receive
    /// buffers as this × the largest datagram).
    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    /// Receives into `bufs` (one `meta` each): waits on the reactor while
    /// nothing is queued. Returns how many buffers were filled; each `meta`
    /// says the source, the length, the GRO stride and the destination IP.
    pub async fn recv(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> io::Result<usize> {
        loop {
            match self.state.recv(UdpSockRef::from(&self.socket), bufs, meta) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable.ready().await?;
                }
                other => return other,
            }
        }
    }

    /// Sends `transmit` now, or fails with `WouldBlock` if the socket
    /// buffer is full.
    pub fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.state.send(UdpSockRef::from(&self.socket), transmit)
    }

    /// Sends `transmit` (one datagram, or `segment_size` pieces by GSO):
    /// waits on the reactor while the socket buffer is full.
    pub async fn send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        loop {
            match self.state.send(UdpSockRef::from(&self.socket), transmit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    glommio::net::writable(&self.socket).await?
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::IoSliceMut;

    fn run<T, F>(f: impl FnOnce() -> F + Send + 'static) -> T
    where
        F: std::future::Future<Output = T> + 'static,
        T: Send + 'static,
    {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(f)
            .expect("executor")
            .join()
            .expect("join")
    }

    #[test]
    fn gso_send_gro_receive_and_pktinfo_over_loopback() {
        let (datagrams, strides, dst_ip, gso) = run(|| async {
            let rx = UdpEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let tx = UdpEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let to = rx.local_addr().unwrap();
            // 8 datagrams of 1200 bytes (the last 700) in one GSO send.
            let mut payload = Vec::new();
            for i in 0..8u8 {
                let n = if i == 7 { 700 } else { 1200 };
                payload.extend(std::iter::repeat_n(i, n));
            }
            let gso = tx.max_gso_segments();
            let t = Transmit {
                destination: to,
                ecn: None,
                contents: &payload,
                segment_size: (gso > 1).then_some(1200),
                src_ip: None,
            };
            if gso > 1 {
                tx.send(&t).await.unwrap();
            } else {
                for chunk in payload.chunks(1200) {
                    let one = Transmit {
                        contents: chunk,
                        segment_size: None,
                        ..t.clone()
                    };
                    tx.send(&one).await.unwrap();
                }
            }
            // Receive until all 8 are in; GRO may coalesce them.
            let mut got: Vec<Vec<u8>> = Vec::new();
            let mut strides = Vec::new();
            let mut dst_ip = None;
            let mut storage = vec![0u8; 64 * 1024 * rx.gro_segments().max(1)];
            while got.len() < 8 {
                let mut meta = [RecvMeta::default()];
                let n = {
                    let mut bufs = [IoSliceMut::new(&mut storage)];
                    rx.recv(&mut bufs, &mut meta).await.unwrap()
                };
                assert_eq!(n, 1);
                let m = meta[0];
                strides.push((m.len, m.stride));
                dst_ip = m.dst_ip;
                for d in storage[..m.len].chunks(m.stride) {
                    got.push(d.to_vec());
                }
            }
            (got, strides, dst_ip, gso)
        });
        println!("max GSO segments {gso}; received (len, stride): {strides:?}");
        assert_eq!(datagrams.len(), 8);
        for (i, d) in datagrams.iter().enumerate() {
            let want = if i == 7 { 700 } else { 1200 };
            assert_eq!(d.len(), want, "datagram {i}");
            assert!(d.iter().all(|&b| b == i as u8), "datagram {i} content");
        }
        assert_eq!(dst_ip, Some("127.0.0.1".parse().unwrap()), "pktinfo");
    }

    #[test]
    fn a_receiver_waits_again_and_again_on_one_armed_poll() {
        // The sender pauses before each datagram, so the receiver drains the
        // socket and waits every time: each wait is one event of the same
        // multishot poll, and none is lost.
        let got = run(|| async {
            let rx = UdpEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let tx = UdpEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let to = rx.local_addr().unwrap();
            let sender = glommio::spawn_local(async move {
                for i in 0..50u8 {
                    glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                    let payload = [i; 100];
                    let t = Transmit {
                        destination: to,
                        ecn: None,
                        contents: &payload,
                        segment_size: None,
                        src_ip: None,
                    };
                    tx.send(&t).await.unwrap();
                }
            });
            let mut got = Vec::new();
            let mut storage = vec![0u8; 64 * 1024];
            while got.len() < 50 {
                let mut meta = [RecvMeta::default()];
                let mut bufs = [IoSliceMut::new(&mut storage)];
                rx.recv(&mut bufs, &mut meta).await.unwrap();
                let m = meta[0];
                for d in storage[..m.len].chunks(m.stride) {
                    got.push(d[0]);
                }
            }
            sender.await;
            got
        });
        assert_eq!(got, (0..50u8).collect::<Vec<_>>());
    }

    #[test]
    fn many_cores_bind_one_port() {
        let a = UdpEndpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = UdpEndpoint::bind(a.local_addr().unwrap()).unwrap();
        assert_eq!(a.local_addr().unwrap(), b.local_addr().unwrap());
    }

    /// The kernel runs the steering program: a datagram reaches the socket
    /// of the core its connection id names, from any source port; what
    /// names no core is spread by the kernel's hash.
    #[test]
    fn the_kernel_steers_datagrams_to_the_core_in_their_connection_id() {
        steered_over("127.0.0.1");
    }

    #[test]
    fn the_kernel_steers_ipv6_datagrams_too() {
        if std::net::UdpSocket::bind("[::1]:0").is_err() {
            eprintln!("no IPv6 loopback here: skipped");
            return;
        }
        steered_over("[::1]");
    }

    fn steered_over(ip: &str) {
        use crate::quic::cid::{CidKey, CoreCids};
        use quinn_proto::ConnectionIdGenerator;
        let key = CidKey::random();
        let group = bind_group(format!("{ip}:0").parse().unwrap(), 3).unwrap();
        steer_group(&group, key.steer()).unwrap();
        let group: Vec<std::net::UdpSocket> = group.into_iter().map(Into::into).collect();
        let to = group[0].local_addr().unwrap();
        for s in &group {
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        }
        let mut random_ids = [0usize; 3];
        for round in 0..30u8 {
            // A new source port each round, as after a NAT rebinding.
            let client = std::net::UdpSocket::bind(format!("{ip}:0")).unwrap();
            for core in 0..3u8 {
                let id = CoreCids::new(key.clone(), core).generate_cid();
                let mut short = vec![0x40 | (round % 4)];
                short.extend_from_slice(&id);
                short.extend_from_slice(&[round; 100]);
                client.send_to(&short, to).unwrap();
                let mut buf = [0u8; 2048];
                let n = group[usize::from(core)].recv(&mut buf).unwrap();
                assert_eq!(&buf[1..9], &id[..], "round {round}: core {core}'s socket got its datagram");
                assert_eq!(n, short.len());
            }
            // A client's first Initial: its random id names no core here
            // (or one, stably); either way it arrives once somewhere.
            let mut initial = vec![0xc0, 0, 0, 0, 1, 16];
            initial.extend_from_slice(&[round; 16]);
            initial.resize(1200, 0);
            client.send_to(&initial, to).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
            let got: Vec<usize> = (0..3)
                .filter(|&i| {
                    group[i].set_nonblocking(true).unwrap();
                    let got = group[i].recv(&mut [0u8; 2048]).is_ok();
                    group[i].set_nonblocking(false).unwrap();
                    got
                })
                .collect();
            assert_eq!(got.len(), 1, "round {round}: the Initial arrived once");
            random_ids[got[0]] += 1;
        }
        assert_eq!(random_ids.iter().sum::<usize>(), 30, "{random_ids:?}");
    }
}
