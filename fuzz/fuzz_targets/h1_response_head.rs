//! Upstream answer heads and body framing: never panic, never over-consume.
#![no_main]
use dataplane::codec::h1::parse_response;
use dataplane::message::BodyFraming;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((head, len))) = parse_response(data, 16 * 1024) {
        let mut framing = BodyFraming::of_response("GET", &head);
        let rest = &data[len..];
        let mid = rest.len() / 2;
        let (a, done) = framing.advance(&rest[..mid]);
        assert!(a <= mid);
        if !done {
            let (b, _) = framing.advance(&rest[mid..]);
            assert!(b <= rest.len() - mid);
        }
    }
});
