//! The relay's pass-through capsule scanner (h3::capsule::CapsuleScanner):
//! for each session protocol, the bytes of a request stream cut into reads
//! where the first input byte says give the same verdict and the same
//! events as one read of the whole; never a panic.
#![no_main]
use dataplane::h3::capsule::{CapsuleScanner, Protocol};
use libfuzzer_sys::fuzz_target;

fn scan(protocol: Protocol, wire: &[u8], step: usize) -> (Result<(), u64>, Vec<dataplane::h3::capsule::Seen>) {
    let mut scanner = CapsuleScanner::new(protocol);
    let mut seen = Vec::new();
    for piece in wire.chunks(step) {
        if let Err(e) = scanner.scan(piece, &mut seen) {
            return (Err(e.code.0), seen);
        }
    }
    (scanner.finish().map_err(|e| e.code.0), seen)
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, wire)) = data.split_first() else { return };
    let step = usize::from(step).max(1);
    for protocol in [Protocol::WebTransport, Protocol::ConnectUdp, Protocol::ConnectIp] {
        let whole = scan(protocol, wire, wire.len().max(1));
        let pieces = scan(protocol, wire, step);
        assert_eq!(whole, pieces, "{protocol:?} step {step}");
    }
});
