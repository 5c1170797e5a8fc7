//! The Capsule Protocol (RFC 9297 §3): type-length-value records carried in
//! the DATA of an extended CONNECT stream (`capsule-protocol: ?1`). A sans-IO
//! reader that takes the stream's DATA bytes as they arrive and returns whole
//! capsules, and the encoder. Relays pass unknown and GREASE capsules on
//! unchanged, so the reader keeps every type.

use super::error::{Code, H3Error};
use super::varint;

/// Capsule types the edge looks at.
pub mod ty {
    /// RFC 9297 §3.5: an HTTP datagram sent on the stream.
    pub const DATAGRAM: u64 = 0x00;
    /// RFC 9484 §4.7.1.
    pub const ADDRESS_ASSIGN: u64 = 0x01;
    /// RFC 9484 §4.7.2.
    pub const ADDRESS_REQUEST: u64 = 0x02;
    /// RFC 9484 §4.7.3.
    pub const ROUTE_ADVERTISEMENT: u64 = 0x03;
    /// WebTransport over HTTP/3: WT_CLOSE_SESSION.
    pub const WT_CLOSE_SESSION: u64 = 0x2843;
    /// WebTransport over HTTP/3: WT_DRAIN_SESSION.
    pub const WT_DRAIN_SESSION: u64 = 0x78ae;
}

/// One capsule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capsule {
    pub capsule_type: u64,
    pub value: Vec<u8>,
}

impl Capsule {
    /// Appends the capsule's wire form.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), varint::TooLarge> {
        varint::encode(self.capsule_type, out)?;
        varint::encode(self.value.len() as u64, out)?;
        out.extend_from_slice(&self.value);
        Ok(())
    }
}

/// Reads the capsules of one stream's DATA.
#[derive(Debug)]
pub struct CapsuleReader {
    /// Bytes of a capsule not yet complete.
    pending: Vec<u8>,
    max_len: usize,
}

impl CapsuleReader {
    /// `max_len`: the longest capsule value buffered; a longer one is a
    /// stream error (H3_EXCESSIVE_LOAD).
    pub fn new(max_len: usize) -> CapsuleReader {
        CapsuleReader { pending: Vec::new(), max_len }
    }

    /// Takes the next DATA bytes; appends every capsule they complete.
    pub fn read(&mut self, data: &[u8], out: &mut Vec<Capsule>) -> Result<(), H3Error> {
        self.pending.extend_from_slice(data);
        let mut at = 0;
        loop {
            let rest = &self.pending[at..];
            let Some((capsule_type, a)) = varint::decode(rest) else { break };
            let Some((len, b)) = varint::decode(&rest[a..]) else { break };
            if len > self.max_len as u64 {
                return Err(H3Error::stream(Code::EXCESSIVE_LOAD, "capsule longer than the limit"));
            }
            let len = len as usize;
            let Some(value) = rest.get(a + b..a + b + len) else { break };
            out.push(Capsule { capsule_type, value: value.to_vec() });
            at += a + b + len;
        }
        self.pending.drain(..at);
        Ok(())
    }

    /// The stream ended: an unfinished capsule makes the message malformed
    /// (RFC 9297 §3.3).
    pub fn finish(&self) -> Result<(), H3Error> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(H3Error::stream(Code::MESSAGE_ERROR, "stream ended inside a capsule"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capsules_split_anywhere_read_the_same() {
        let capsules = vec![
            Capsule { capsule_type: ty::DATAGRAM, value: b"\x00udp payload".to_vec() },
            Capsule { capsule_type: 0x29 * 0x1f + 0x17, value: vec![] }, // GREASE-like, empty
            Capsule { capsule_type: ty::ADDRESS_ASSIGN, value: vec![7; 300] },
        ];
        let mut wire = Vec::new();
        for c in &capsules {
            c.encode(&mut wire).unwrap();
        }
        for step in 1..=wire.len() {
            let mut reader = CapsuleReader::new(1024);
            let mut got = Vec::new();
            for piece in wire.chunks(step) {
                reader.read(piece, &mut got).unwrap();
            }
            reader.finish().unwrap();
            assert_eq!(got, capsules, "step {step}");
        }
    }

    #[test]
    fn an_oversized_or_truncated_capsule_is_a_stream_error() {
        let mut wire = Vec::new();
        Capsule { capsule_type: ty::DATAGRAM, value: vec![0; 2000] }.encode(&mut wire).unwrap();
        let err = CapsuleReader::new(1024).read(&wire[..4], &mut Vec::new()).unwrap_err();
        assert_eq!(err.code, Code::EXCESSIVE_LOAD);
        let mut reader = CapsuleReader::new(4096);
        reader.read(&wire[..100], &mut Vec::new()).unwrap();
        assert_eq!(reader.finish().unwrap_err().code, Code::MESSAGE_ERROR);
    }
}
