//! Request heads from the network: parse, classify, authorize; never panic,
//! and a parsed head re-encodes to bytes that parse to the same head.
#![no_main]
use dataplane::auth::{authorize_with, TokenSet};
use dataplane::codec::h1::parse_request;
use dataplane::intent::classify;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((mut head, len))) = parse_request(data, 16 * 1024) {
        assert!(len <= data.len());
        let mut again = Vec::new();
        dataplane::codec::h1::encode_request(&head, &mut again);
        let reparsed = parse_request(&again, 1 << 20).ok().flatten().map(|(h, _)| h);
        assert_eq!(reparsed.as_ref(), Some(&head));
        let _ = classify(&head);
        let _ = dataplane::target::host_key(head.host().unwrap_or(""));
        let tokens = TokenSet::from_plain(&["t".into()]);
        let _ = authorize_with(&mut head, "rstream.token", |t| tokens.accepts(t));
    }
});
