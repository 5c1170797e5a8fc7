//! PROXY v1/v2 headers: never panic; a complete header never claims more
//! bytes than it was given; feeding a prefix never yields a different answer.
#![no_main]
use dataplane::proxy_protocol::{parse, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Parsed::Complete { len, source }) = parse(data) {
        assert!(len <= data.len());
        assert_eq!(parse(&data[..len]), Ok(Parsed::Complete { len, source }));
    }
});
