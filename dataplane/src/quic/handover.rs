//! Datagrams that reached the wrong core go to the core that owns their
//! connection.
//!
//! The kernel's steering program ([`super::steer`]) sends a listener's
//! datagrams to the socket of the core that owns their connection. What
//! still lands on another core comes here: datagrams when the kernel
//! refused the program or `edge.quic_steering` is off (the kernel then
//! hashes the 4-tuple, right until a client's address or port changes).
//! Every core reads the owner from the
//! destination connection id ([`super::cid`]) and hands a datagram that is
//! not its own to the owner through a bounded cross-core channel (one
//! copy). The owner handles it as if it had read it.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::channels::shared_channel::{self, ConnectedSender, SharedReceiver, SharedSender};

use super::cid::{self, CidKey, CID_LEN};

/// Datagrams a core may have in flight to one other core; more are dropped
/// (QUIC recovers them as loss).
const QUEUE: usize = 1024;

/// A datagram for another core, with what its receive said.
#[derive(Debug)]
pub struct Misrouted {
    pub data: Vec<u8>,
    pub remote: SocketAddr,
    pub dst_ip: Option<IpAddr>,
    pub ecn: Option<u8>,
}

/// One core's ends of the cross-core channels of one listener.
pub struct Mesh {
    to: Vec<Option<SharedSender<Misrouted>>>,
    from: Vec<SharedReceiver<Misrouted>>,
}

/// The channels between `cores` cores: `mesh(n)[i]` is core i's part.
pub fn mesh(cores: usize) -> Vec<Mesh> {
    let mut parts: Vec<Mesh> = (0..cores).map(|_| Mesh { to: (0..cores).map(|_| None).collect(), from: Vec::new() }).collect();
    for i in 0..cores {
        for j in 0..cores {
            if i != j {
                let (tx, rx) = shared_channel::new_bounded(QUEUE);
                parts[i].to[j] = Some(tx);
                parts[j].from.push(rx);
            }
        }
    }
    parts
}

/// One core's side of the handover, connected.
pub struct Handover {
    key: CidKey,
    me: usize,
    to: Vec<Option<ConnectedSender<Misrouted>>>,
    /// Datagrams handed to other cores, and dropped because a queue was full.
    pub handed: Cell<u64>,
    pub dropped: Cell<u64>,
}

impl Handover {
    /// Connects this core's channels (the other cores connect theirs at the
    /// same time); returns the handover and the queue of datagrams other
    /// cores hand to this one.
    pub async fn connect(mesh: Mesh, key: CidKey, me: usize) -> (Handover, LocalReceiver<Misrouted>) {
        let (local_tx, local_rx): (LocalSender<Misrouted>, _) = local_channel::new_bounded(QUEUE);
        let local_tx = std::rc::Rc::new(local_tx);
        for rx in mesh.from {
            let local_tx = local_tx.clone();
            glommio::spawn_local(async move {
                let rx = rx.connect().await;
                while let Some(m) = rx.recv().await {
                    if local_tx.send(m).await.is_err() {
                        return;
                    }
                }
            })
            .detach();
        }
        let mut to = Vec::with_capacity(mesh.to.len());
        for tx in mesh.to {
            to.push(match tx {
                Some(tx) => Some(tx.connect().await),
                None => None,
            });
        }
        (Handover { key, me, to, handed: Cell::new(0), dropped: Cell::new(0) }, local_rx)
    }

    /// The other core that owns `datagram`'s connection, if any. Runs on
    /// every datagram: the core the id names is read first (a few
    /// multiplies), and only an id that names another core has its tag
    /// checked (an HMAC), so the datagrams the kernel steered here cost no
    /// HMAC; a random id that names another core fails its tag and stays.
    pub fn owner(&self, datagram: &[u8]) -> Option<usize> {
        let dcid = destination_cid(datagram)?;
        let named = usize::from(cid::named_core(&self.key, dcid)?);
        if named == self.me || named >= self.to.len() {
            return None;
        }
        let core = usize::from(cid::owner(&self.key, dcid)?);
        (core != self.me && core < self.to.len()).then_some(core)
    }

    /// Hands `m` to `core`; `false` if its queue is full (dropped).
    pub fn forward(&self, core: usize, m: Misrouted) -> bool {
        let sent = self.to[core].as_ref().is_some_and(|tx| tx.try_send(m).is_ok());
        if sent {
            self.handed.set(self.handed.get() + 1);
        } else {
            self.dropped.set(self.dropped.get() + 1);
        }
        sent
    }
}

/// The destination connection id of a QUIC packet, if it has one of our
/// length (short header: right after the first byte; long header: after
/// the version and its length byte).
pub fn destination_cid(datagram: &[u8]) -> Option<&[u8]> {
    let first = *datagram.first()?;
    if first & 0x80 == 0 {
        return datagram.get(1..1 + CID_LEN);
    }
    let len = usize::from(*datagram.get(5)?);
    if len != CID_LEN {
        return None;
    }
    datagram.get(6..6 + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn_proto::ConnectionIdGenerator;

    #[test]
    fn the_destination_id_is_found_in_short_and_long_headers() {
        let id = [1, 2, 3, 4, 5, 6, 7, 8];
        let mut short = vec![0x40];
        short.extend_from_slice(&id);
        short.extend_from_slice(&[0; 20]);
        assert_eq!(destination_cid(&short), Some(&id[..]));
        let mut long = vec![0xc0, 0, 0, 0, 1, 8];
        long.extend_from_slice(&id);
        long.extend_from_slice(&[0; 20]);
        assert_eq!(destination_cid(&long), Some(&id[..]));
        let mut client_initial = vec![0xc0, 0, 0, 0, 1, 20];
        client_initial.extend_from_slice(&[9; 40]);
        assert_eq!(destination_cid(&client_initial), None);
        assert_eq!(destination_cid(&[0x40, 1, 2]), None);
    }

    #[test]
    fn a_datagram_for_another_core_names_that_core() {
        let key = CidKey::random();
        let mut core1 = cid::CoreCids::new(key.clone(), 1);
        let id = core1.generate_cid();
        let mut datagram = vec![0x40];
        datagram.extend_from_slice(&id);
        let h = Handover { key, me: 0, to: vec![None, None], handed: Cell::new(0), dropped: Cell::new(0) };
        assert_eq!(h.owner(&datagram), Some(1));
        let own = Handover { me: 1, ..h };
        assert_eq!(own.owner(&datagram), None, "its own datagrams stay");
    }
}
