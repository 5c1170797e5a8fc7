//! Ring records from shared memory: decoding never panics, and a decoded
//! record re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shmring::Record;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Record::decode(data) {
        let again = r.to_bytes().expect("a decoded record encodes");
        assert_eq!(again, data);
    }
});
