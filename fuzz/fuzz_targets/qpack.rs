//! QPACK field sections (h3::qpack, dynamic table capacity 0): any input
//! decodes or fails cleanly within its size limit, and what decodes
//! re-encodes to a section that decodes to the same fields in order.
#![no_main]
use dataplane::h3::qpack;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(fields) = qpack::decode(data, 64 * 1024) else { return };
    let size: usize = fields.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
    assert!(size <= 64 * 1024, "the decoded size limit holds");
    let mut again = Vec::new();
    qpack::encode(fields.iter().map(|(n, v)| (&n[..], &v[..])), &mut again);
    assert_eq!(qpack::decode(&again, 1 << 20).ok(), Some(fields));
});
