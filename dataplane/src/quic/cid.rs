//! Connection ids that name their core without showing it.
//!
//! Every core's endpoint issues its own ids; a datagram must reach the core
//! that owns its connection, and no core may answer another core's
//! connection with a stateless reset (the reset key is shared, so such a
//! reset would be valid and kill the owner's connection). So each id carries
//! its core, and [`CoreCids::validate`] accepts only this core's ids.
//!
//! Layout (8 bytes, QUIC-LB style but simpler): a 5-byte random nonce, the
//! core index masked with a keyed mix of the nonce ([`super::steer`]: one
//! that the kernel's steering program can compute), and a 2-byte tag, an
//! HMAC of the nonce. Without the keys an observer sees random bytes (ids of
//! one connection are not linkable by their bytes, RFC 9000 §9.5); with
//! them, the kernel steers a datagram to its owner's socket, and any core
//! reads the owner of an id ([`owner`]) to hand over what still lands wrong.
//! A random id passes the tag with probability 2^-16.

use std::sync::Arc;
use std::time::Duration;

use quinn_proto::{ConnectionId, ConnectionIdGenerator, InvalidCid};
use ring::hmac;

use super::steer::SteerKey;

/// Length of the ids this edge issues.
pub const CID_LEN: usize = 8;
const NONCE: usize = 5;

/// Keys shared by every core (and every id they issue): the tag's HMAC key
/// and the core mask's mix key.
#[derive(Clone, Debug)]
pub struct CidKey {
    tag: Arc<hmac::Key>,
    steer: SteerKey,
}

impl CidKey {
    /// Fresh random keys (per process).
    pub fn random() -> CidKey {
        let mut k = [0u8; 32];
        // getrandom fails only without a kernel RNG: nothing would work then.
        getrandom::getrandom(&mut k).expect("kernel random numbers");
        CidKey { tag: Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &k)), steer: SteerKey::random() }
    }

    /// The key of the kernel's steering program.
    pub fn steer(&self) -> &SteerKey {
        &self.steer
    }

    /// The core byte's mask and the 2-byte tag of a nonce.
    fn mask(&self, nonce: &[u8; NONCE]) -> [u8; 3] {
        let tag = hmac::sign(&self.tag, nonce);
        let t = tag.as_ref();
        [self.steer.mask(nonce), t[1], t[2]]
    }
}

fn nonce(cid: &[u8]) -> Option<&[u8; NONCE]> {
    if cid.len() != CID_LEN {
        return None;
    }
    cid[..NONCE].try_into().ok()
}

/// The core that issued `cid`, if the id is one of ours (its tag checked:
/// an HMAC, some hundred nanoseconds).
pub fn owner(key: &CidKey, cid: &[u8]) -> Option<u8> {
    let m = key.mask(nonce(cid)?);
    (cid[NONCE + 1] == m[1] && cid[NONCE + 2] == m[2]).then_some(cid[NONCE] ^ m[0])
}

/// The core `cid` names if it is one of ours, tag not checked: what the
/// kernel's steering program reads, at the cost of a few multiplies. A
/// random id names some core too; [`owner`] tells them apart.
pub fn named_core(key: &CidKey, cid: &[u8]) -> Option<u8> {
    let mask = key.steer.mask(nonce(cid)?);
    Some(cid[NONCE] ^ mask)
}

/// The id generator of one core.
#[derive(Debug)]
pub struct CoreCids {
    key: CidKey,
    core: u8,
}

impl CoreCids {
    /// Ids of `core` (the edge runs at most 256 cores).
    pub fn new(key: CidKey, core: u8) -> CoreCids {
        CoreCids { key, core }
    }
}

impl ConnectionIdGenerator for CoreCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut id = [0u8; CID_LEN];
        getrandom::getrandom(&mut id[..NONCE]).expect("kernel random numbers");
        let nonce: [u8; NONCE] = [id[0], id[1], id[2], id[3], id[4]];
        let m = self.key.mask(&nonce);
        id[NONCE] = self.core ^ m[0];
        id[NONCE + 1] = m[1];
        id[NONCE + 2] = m[2];
        ConnectionId::new(&id)
    }

    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        match owner(&self.key, cid) {
            Some(core) if core == self.core => Ok(()),
            _ => Err(InvalidCid),
        }
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_core_and_only_it_validates_them() {
        let key = CidKey::random();
        let mut a = CoreCids::new(key.clone(), 0);
        let b = CoreCids::new(key.clone(), 1);
        for _ in 0..100 {
            let id = a.generate_cid();
            assert_eq!(owner(&key, &id), Some(0));
            assert!(a.validate(&id).is_ok());
            assert!(b.validate(&id).is_err(), "core 1 must not claim core 0's id");
        }
    }

    #[test]
    fn ids_of_one_core_do_not_repeat_the_core_byte_in_clear() {
        let key = CidKey::random();
        let mut a = CoreCids::new(key, 3);
        let bytes: std::collections::HashSet<u8> = (0..64).map(|_| a.generate_cid()[NONCE]).collect();
        assert!(bytes.len() > 16, "the core byte is masked per id");
    }

    #[test]
    fn the_named_core_is_the_owner_for_our_ids() {
        let key = CidKey::random();
        for core in 0..4u8 {
            let mut g = CoreCids::new(key.clone(), core);
            for _ in 0..50 {
                let id = g.generate_cid();
                assert_eq!(named_core(&key, &id), Some(core));
                assert_eq!(owner(&key, &id), Some(core));
            }
        }
        assert_eq!(named_core(&key, &[1, 2, 3]), None);
    }

    #[test]
    fn random_ids_and_other_keys_are_refused() {
        let key = CidKey::random();
        let a = CoreCids::new(key, 0);
        let mut other = CoreCids::new(CidKey::random(), 0);
        let refused = (0..200).filter(|_| a.validate(&other.generate_cid()).is_err()).count();
        assert!(refused >= 195, "{refused}/200 foreign ids refused");
        assert!(a.validate(&ConnectionId::new(&[1, 2, 3])).is_err());
    }
}
