//! A fleet's keys and values from etcd (a watch event or a range): the
//! classification and decoding never panic, whatever another writer put
//! under the prefix, and a decoded tunnel carries the key's name and the
//! revision it was read at.
#![no_main]
use controlplane::fleet::keys::Keys;
use controlplane::store::Change;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map(|b| *b as usize).unwrap_or(0).min(data.len());
    let (key, value) = data.split_at(split);
    let keys = Keys::new("/sy");
    let _ = keys.kind(key);
    for v in [Some(value), None] {
        if let Ok(Some(Change::PutTunnel(t))) = keys.decode(key, v, 77) {
            assert_eq!(t.version, 77);
            assert_eq!(keys.kind(key), Some(controlplane::fleet::keys::Kind::Tunnel(&t.name)));
        }
    }
});
