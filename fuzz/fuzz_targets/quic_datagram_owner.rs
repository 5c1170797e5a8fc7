//! What every core reads from each QUIC datagram it receives
//! (quic::handover, quic::cid): the destination connection id, the core it
//! names (the kernel steering program's mix) and its owner (the HMAC tag
//! checked). Never a panic; an id that passes its tag names its owner; the
//! ids a core issues name that core.
#![no_main]
use std::sync::OnceLock;

use dataplane::quic::cid::{named_core, owner, CidKey, CoreCids, CID_LEN};
use dataplane::quic::handover::destination_cid;
use libfuzzer_sys::fuzz_target;
use quinn_proto::ConnectionIdGenerator;

fn key() -> &'static CidKey {
    static KEY: OnceLock<CidKey> = OnceLock::new();
    KEY.get_or_init(CidKey::random)
}

fuzz_target!(|data: &[u8]| {
    let key = key();
    if let Some(dcid) = destination_cid(data) {
        assert_eq!(dcid.len(), CID_LEN);
        let named = named_core(key, dcid);
        if let Some(core) = owner(key, dcid) {
            assert_eq!(named, Some(core), "an id that passes its tag names its owner");
        }
    }
    if let Some(&core) = data.first() {
        let id = CoreCids::new(key.clone(), core).generate_cid();
        assert_eq!(named_core(key, &id), Some(core));
        assert_eq!(owner(key, &id), Some(core));
    }
});
