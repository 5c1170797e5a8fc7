//! HTTP/3 frames of one stream (h3::frame::FrameReader), cut into reads
//! where the first input byte says: never panic, always make progress,
//! and a DATA payload comes out no longer than the bytes that carried it.
#![no_main]
use dataplane::h3::frame::{Frame, FrameReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, wire)) = data.split_first() else { return };
    let step = usize::from(step).max(1);
    let mut reader = FrameReader::new(16 * 1024);
    for piece in wire.chunks(step) {
        let mut rest = piece;
        while !rest.is_empty() {
            let Ok((n, frame)) = reader.read(rest) else { return };
            assert!(n > 0 && n <= rest.len(), "a read must make progress");
            if let Some(Frame::Data(d)) = frame {
                assert!(d.len() <= n);
            }
            rest = &rest[n..];
        }
    }
    let _ = reader.at_frame_boundary();
});
