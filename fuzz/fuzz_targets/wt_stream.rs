//! WebTransport stream headers and HTTP datagram quarter ids
//! (h3::webtransport): parsing never panics; a parsed header or datagram
//! re-encodes for another session id and reads back with the payload
//! untouched.
#![no_main]
use dataplane::h3::webtransport as wt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(head) = wt::datagram_head(data) {
        assert!(head.quarter_id <= wt::MAX_QUARTER_ID);
        let payload = &data[head.len..];
        let mut out = Vec::new();
        wt::readdress(payload, head.quarter_id ^ 0x2a, &mut out);
        let again = wt::datagram_head(&out).expect("a readdressed datagram parses");
        assert_eq!(again.quarter_id, (head.quarter_id ^ 0x2a).min(wt::MAX_QUARTER_ID));
        assert_eq!(&out[again.len..], payload);
    }
    if let Ok(Some(h)) = wt::session_id(data) {
        assert_eq!(h.session_id % 4, 0);
        for bidi in [true, false] {
            let mut out = Vec::new();
            wt::stream_header(bidi, h.session_id, &mut out);
            let (ty, n) = dataplane::h3::varint::decode(&out).expect("type");
            assert_eq!(ty, if bidi { wt::BIDI_SIGNAL } else { wt::UNI_TYPE });
            assert_eq!(wt::session_id(&out[n..]).unwrap().map(|s| s.session_id), Some(h.session_id));
        }
    }
    let _ = wt::check_close_session(data);
});
