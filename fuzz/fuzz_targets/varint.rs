//! QUIC variable-length integers (h3::varint): a decode reads the length
//! its first byte says, and encoding the value gives the shortest form,
//! which decodes back to the value.
#![no_main]
use dataplane::h3::varint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((value, n)) = varint::decode(data) else {
        assert!(data.is_empty() || data.len() < 1 << (data[0] >> 6), "only a short input fails");
        return;
    };
    assert_eq!(n, 1 << (data[0] >> 6));
    let mut out = Vec::new();
    varint::encode(value, &mut out).expect("a decoded value fits");
    assert_eq!(out.len(), varint::encoded_len(value));
    assert!(out.len() <= n);
    assert_eq!(varint::decode(&out), Some((value, out.len())));
});
