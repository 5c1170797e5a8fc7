//! The Capsule Protocol (h3::capsule, RFC 9297): bytes of an extended
//! CONNECT stream cut into reads where the first input byte says; never
//! panic, capsules above the limit fail cleanly, and every capsule read
//! re-encodes to bytes that read back to it.
#![no_main]
use dataplane::h3::capsule::CapsuleReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, wire)) = data.split_first() else { return };
    let step = usize::from(step).max(1);
    let mut reader = CapsuleReader::new(4096);
    let mut found = Vec::new();
    for piece in wire.chunks(step) {
        if reader.read(piece, &mut found).is_err() {
            return;
        }
    }
    for c in &found {
        assert!(c.value.len() <= 4096);
        let mut bytes = Vec::new();
        c.encode(&mut bytes).expect("a read capsule encodes");
        let mut again = Vec::new();
        CapsuleReader::new(4096).read(&bytes, &mut again).expect("re-encoded capsule reads");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].capsule_type, c.capsule_type);
        assert_eq!(again[0].value, c.value);
    }
});
