//! HTTP/3 bytes from the network: a stream's frames (split where the input
//! says), the field sections of its HEADERS, the capsules of its DATA; never
//! panic, and a decoded field section re-encodes to one that decodes the
//! same.
#![no_main]
use dataplane::h3::capsule::CapsuleReader;
use dataplane::h3::frame::{Frame, FrameReader};
use dataplane::h3::qpack;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the stream is cut into reads.
    let Some((&step, wire)) = data.split_first() else { return };
    let step = usize::from(step).max(1);
    let mut frames = FrameReader::new(16 * 1024);
    let mut capsules = CapsuleReader::new(4096);
    let mut found = Vec::new();
    for piece in wire.chunks(step) {
        let mut rest = piece;
        while !rest.is_empty() {
            let Ok((n, frame)) = frames.read(rest) else { return };
            assert!(n > 0 && n <= rest.len(), "a read must make progress");
            match frame {
                Some(Frame::Headers(block)) => {
                    if let Ok(fields) = qpack::decode(&block, 16 * 1024) {
                        let mut again = Vec::new();
                        qpack::encode(fields.iter().map(|(n, v)| (&n[..], &v[..])), &mut again);
                        assert_eq!(qpack::decode(&again, 1 << 20).ok(), Some(fields));
                    }
                }
                Some(Frame::Data(bytes)) => {
                    if capsules.read(bytes, &mut found).is_err() {
                        return;
                    }
                    found.clear();
                }
                _ => {}
            }
            rest = &rest[n..];
        }
    }
});
