//! The QUIC endpoint of one core: its UDP socket, its quinn-proto
//! `Endpoint`, and the connections it owns.
//!
//! The receive loop reads batches (GRO: many datagrams per system call),
//! cuts them by their stride and hands each to quinn-proto, which routes it
//! to a connection, asks to admit a new one, or answers statelessly. New
//! connections are admitted here, where the limits live:
//!
//! - over `max_connections` on this core (TCP and QUIC together): refused
//!   with CONNECTION_REFUSED;
//! - more than [`Limits::handshakes_before_retry`] handshakes in flight and
//!   the client's address not validated yet: a Retry (RFC 9000 §8.1), so a
//!   spoofed flood costs one stateless packet each;
//! - while shutting down: refused.
//!
//! Sending goes through one buffer per core: quinn-proto writes a batch of
//! packets into it and the socket takes them in one `sendmsg` (GSO), so a
//! connection holds no transmit buffer of its own.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use quinn_proto::{ClientConfig, ConnectionHandle, DatagramEvent, EndpointConfig, Incoming, ServerConfig, Transmit, VarInt};
use quinn_udp::RecvMeta;

use futures_lite::FutureExt;
use glommio::channels::local_channel::LocalReceiver;

use super::connection::{drive, Connection};
use super::handover::{Handover, Misrouted};
use crate::core::CoreCtx;
use crate::stats;
use crate::udp::UdpEndpoint;

/// Receive slots per system call; each holds one GRO batch (≤ 64 KiB).
const RECV_SLOTS: usize = 8;
const SLOT_BYTES: usize = 64 * 1024;
/// Datagrams in one GSO send (quinn-udp reports what the kernel allows;
/// the driver also keeps a send under 64 KiB). Measured (h3 bulk, loopback,
/// 1452-byte datagrams): 32 → 0.31–0.35 GB/s; 64 → 0.035 GB/s, every send
/// over 64 KiB failing whole.
const MAX_GSO: usize = 32;

/// What woke the receive loop.
enum Input {
    Socket(io::Result<usize>),
    Handed(Option<Misrouted>),
}

/// Admission limits of one core's endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Handshakes in flight on this core beyond which unvalidated clients
    /// get a Retry first.
    pub handshakes_before_retry: usize,
    /// Send several datagrams per system call (GSO) where the kernel can.
    pub gso: bool,
}

/// What the receive loop and every connection driver of one endpoint share.
pub(crate) struct Shared {
    pub(crate) socket: UdpEndpoint,
    pub(crate) endpoint: RefCell<quinn_proto::Endpoint>,
    conns: RefCell<HashMap<ConnectionHandle, Connection>>,
    pub(crate) tx_buf: RefCell<Vec<u8>>,
    pub(crate) max_datagrams: Cell<usize>,
    /// Server connections accepted whose handshake has not completed.
    pub(crate) handshaking: Cell<usize>,
    limits: Limits,
    drop_code: VarInt,
}

impl Shared {
    /// Sends a transmit built in `buf` now; if the socket buffer is full,
    /// returns a copy to send once it drains (the core's buffer is reused
    /// by the next driver meanwhile).
    pub(crate) fn try_send(&self, t: &Transmit, buf: &[u8]) -> Option<(Transmit, Vec<u8>)> {
        match self.socket.try_send(&udp_transmit(t, &buf[..t.size])) {
            Ok(()) => None,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some((
                Transmit { destination: t.destination, ecn: t.ecn, size: t.size, segment_size: t.segment_size, src_ip: t.src_ip },
                buf[..t.size].to_vec(),
            )),
            Err(e) => {
                tracing::debug!(to = %t.destination, "quic send failed: {e}");
                None
            }
        }
    }

    /// Sends a transmit that found the socket buffer full, once it drains.
    pub(crate) async fn send_owned(&self, t: &Transmit, buf: &[u8]) {
        if let Err(e) = self.socket.send(&udp_transmit(t, buf)).await {
            tracing::debug!(to = %t.destination, "quic send failed: {e}");
        }
    }

    /// Drops a drained connection.
    pub(crate) fn forget(&self, handle: ConnectionHandle) {
        self.conns.borrow_mut().remove(&handle);
    }

    fn adopt(self: &Rc<Self>, handle: ConnectionHandle, inner: quinn_proto::Connection, server: bool) -> Connection {
        let conn = Connection::new(inner, handle, self.drop_code);
        if server {
            conn.0.borrow_mut().counted_handshake = true;
            self.handshaking.set(self.handshaking.get() + 1);
        }
        self.conns.borrow_mut().insert(handle, conn.clone());
        glommio::spawn_local(drive(conn.clone(), self.clone())).detach();
        conn
    }
}

fn udp_transmit<'a>(t: &Transmit, contents: &'a [u8]) -> quinn_udp::Transmit<'a> {
    quinn_udp::Transmit {
        destination: t.destination,
        ecn: t.ecn.and_then(|e| quinn_udp::EcnCodepoint::from_bits(e as u8)),
        contents,
        segment_size: t.segment_size,
        src_ip: t.src_ip,
    }
}

/// One core's QUIC endpoint.
#[derive(Clone)]
pub struct Endpoint {
    shared: Rc<Shared>,
}

impl Endpoint {
    /// Binds `addr` (SO_REUSEPORT: every core binds the same port) with
    /// this endpoint config (connection ids, reset key) and, for a server,
    /// its server config.
    pub fn bind(
        addr: SocketAddr,
        config: Arc<EndpointConfig>,
        server: Option<Arc<ServerConfig>>,
        limits: Limits,
        drop_code: u64,
    ) -> io::Result<Endpoint> {
        Endpoint::on_socket(crate::udp::bind_socket(addr)?, config, server, limits, drop_code)
    }

    /// [`Endpoint::bind`] on a socket already bound ([`crate::udp::bind_group`]).
    pub fn on_socket(
        socket: socket2::Socket,
        config: Arc<EndpointConfig>,
        server: Option<Arc<ServerConfig>>,
        limits: Limits,
        drop_code: u64,
    ) -> io::Result<Endpoint> {
        let socket = UdpEndpoint::from_socket(socket)?;
        let max_datagrams = if limits.gso { socket.max_gso_segments().clamp(1, MAX_GSO) } else { 1 };
        let endpoint = quinn_proto::Endpoint::new(config, server, true, None);
        Ok(Endpoint {
            shared: Rc::new(Shared {
                socket,
                endpoint: RefCell::new(endpoint),
                conns: RefCell::new(HashMap::new()),
                tx_buf: RefCell::new(Vec::with_capacity(MAX_GSO * 1500)),
                max_datagrams: Cell::new(max_datagrams),
                handshaking: Cell::new(0),
                limits,
                drop_code: VarInt::from_u64(drop_code).unwrap_or(VarInt::MAX),
            }),
        })
    }

    /// Opens a client connection to `remote` (its driver starts at once;
    /// await [`Connection::connected`]).
    pub fn connect(&self, config: ClientConfig, remote: SocketAddr, server_name: &str) -> Result<Connection, quinn_proto::ConnectError> {
        let (handle, inner) = self.shared.endpoint.borrow_mut().connect(Instant::now(), config, remote, server_name)?;
        Ok(self.shared.adopt(handle, inner, false))
    }

    /// Reads datagrams until the socket fails; `admit` gets every accepted
    /// server connection (a server endpoint runs with its `core`, whose
    /// limits and counters apply; a client endpoint without); `handover` passes datagrams of other cores'
    /// connections to them, and brings theirs for this core. Runs as the
    /// endpoint's task.
    pub async fn run(
        self,
        core: Option<Rc<CoreCtx>>,
        admit: impl Fn(Connection),
        handover: Option<(Handover, LocalReceiver<Misrouted>)>,
    ) {
        let sh = &self.shared;
        let (handover, mut inbox) = match handover {
            Some((h, rx)) => (Some(h), Some(rx)),
            None => (None, None),
        };
        let mut storage = vec![0u8; RECV_SLOTS * SLOT_BYTES];
        let mut metas = [RecvMeta::default(); RECV_SLOTS];
        let mut answer = Vec::new();
        loop {
            let input = {
                let socket = async {
                    let mut bufs: Vec<IoSliceMut<'_>> = storage.chunks_mut(SLOT_BYTES).map(IoSliceMut::new).collect();
                    Input::Socket(sh.socket.recv(&mut bufs, &mut metas).await)
                };
                match &inbox {
                    Some(rx) => socket.or(async { Input::Handed(rx.recv().await) }).await,
                    None => socket.await,
                }
            };
            let now = Instant::now();
            let n = match input {
                Input::Handed(Some(m)) => {
                    if let Some(core) = &core {
                        stats::add(&core.stats.quic_datagrams_taken_over, 1);
                    }
                    let ecn = m.ecn.and_then(quinn_proto::EcnCodepoint::from_bits);
                    let data = BytesMut::from(&m.data[..]);
                    self.datagram(core.as_deref(), &admit, now, (m.remote, m.dst_ip, ecn), data, &mut answer).await;
                    continue;
                }
                Input::Handed(None) => {
                    inbox = None;
                    continue;
                }
                Input::Socket(Ok(n)) => n,
                Input::Socket(Err(e)) => {
                    // ICMP errors (a peer's port closed) surface here once
                    // each: not fatal. The pause keeps an error that
                    // repeats from spinning the core.
                    tracing::debug!("quic receive error: {e}");
                    glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                    continue;
                }
            };
            for (meta, slot) in metas.iter().zip(storage.chunks(SLOT_BYTES)).take(n) {
                let mut data = BytesMut::from(&slot[..meta.len]);
                let stride = meta.stride.max(1);
                let ecn_bits = meta.ecn.map(|e| e as u8);
                let ecn = ecn_bits.and_then(quinn_proto::EcnCodepoint::from_bits);
                while !data.is_empty() {
                    let datagram = data.split_to(stride.min(data.len()));
                    if let Some(h) = &handover {
                        if let Some(owner) = h.owner(&datagram) {
                            let m = Misrouted { data: datagram.to_vec(), remote: meta.addr, dst_ip: meta.dst_ip, ecn: ecn_bits };
                            if let (true, Some(core)) = (h.forward(owner, m), &core) {
                                stats::add(&core.stats.quic_datagrams_handed_over, 1);
                            }
                            continue;
                        }
                    }
                    self.datagram(core.as_deref(), &admit, now, (meta.addr, meta.dst_ip, ecn), datagram, &mut answer).await;
                }
            }
        }
    }

    /// Hands one datagram to quinn-proto and acts on what it says.
    async fn datagram(
        &self,
        core: Option<&CoreCtx>,
        admit: &impl Fn(Connection),
        now: Instant,
        (remote, dst_ip, ecn): (SocketAddr, Option<std::net::IpAddr>, Option<quinn_proto::EcnCodepoint>),
        datagram: BytesMut,
        answer: &mut Vec<u8>,
    ) {
        let sh = &self.shared;
        answer.clear();
        let event = sh.endpoint.borrow_mut().handle(now, remote, dst_ip, ecn, datagram, answer);
        match event {
            Some(DatagramEvent::ConnectionEvent(handle, ev)) => {
                let conn = sh.conns.borrow().get(&handle).cloned();
                if let Some(conn) = conn {
                    if let (true, Some(core)) = (conn.deliver(ev, remote), core) {
                        stats::add(&core.stats.quic_client_address_changes, 1);
                    }
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => match core {
                Some(core) => {
                    if let Some(conn) = self.admit(core, incoming, now, answer).await {
                        admit(conn);
                    }
                }
                // A server endpoint outside the edge (the load generator's
                // origin): no core limits to apply.
                None => {
                    let accepted = sh.endpoint.borrow_mut().accept(incoming, now, answer, None);
                    match accepted {
                        Ok((handle, inner)) => admit(sh.adopt(handle, inner, true)),
                        Err(e) => tracing::debug!(client = %remote, "quic handshake refused: {}", e.cause),
                    }
                }
            },
            Some(DatagramEvent::Response(t)) => {
                if let Some((t, owned)) = sh.try_send(&t, answer) {
                    sh.send_owned(&t, &owned).await;
                }
            }
            None => {}
        }
    }

    /// Accepts, retries or refuses a new connection (see the module doc).
    async fn admit(&self, core: &CoreCtx, incoming: Incoming, now: Instant, buf: &mut Vec<u8>) -> Option<Connection> {
        let sh = &self.shared;
        let remote = incoming.remote_address();
        let active = core.stats.connections_active.load(Ordering::Relaxed) as usize;
        let refuse = if core.stop.load(Ordering::Relaxed) {
            Some("shutting down")
        } else if active >= core.max_connections {
            stats::add(&core.stats.connections_refused, 1);
            Some("max_connections reached")
        } else {
            None
        };
        if let Some(why) = refuse {
            tracing::info!(core = core.core, client = %remote, "quic connection refused: {why}");
            let t = sh.endpoint.borrow_mut().refuse(incoming, buf);
            if let Some((t, owned)) = sh.try_send(&t, buf) {
                sh.send_owned(&t, &owned).await;
            }
            return None;
        }
        if !incoming.remote_address_validated() && sh.handshaking.get() >= sh.limits.handshakes_before_retry && incoming.may_retry() {
            stats::add(&core.stats.quic_retries, 1);
            // The borrow ends here: a send below may wait, and the
            // connections' drivers use the endpoint meanwhile.
            let retry = sh.endpoint.borrow_mut().retry(incoming, buf);
            match retry {
                Ok(t) => {
                    if let Some((t, owned)) = sh.try_send(&t, buf) {
                        sh.send_owned(&t, &owned).await;
                    }
                }
                Err(e) => sh.endpoint.borrow_mut().ignore(e.into_incoming()),
            }
            return None;
        }
        let accepted = sh.endpoint.borrow_mut().accept(incoming, now, buf, None);
        match accepted {
            Ok((handle, inner)) => {
                stats::add(&core.stats.quic_connections_total, 1);
                Some(sh.adopt(handle, inner, true))
            }
            Err(e) => {
                tracing::debug!(core = core.core, client = %remote, "quic handshake refused: {}", e.cause);
                if let Some(t) = e.response {
                    if let Some((t, owned)) = sh.try_send(&t, buf) {
                        sh.send_owned(&t, &owned).await;
                    }
                }
                None
            }
        }
    }
}
