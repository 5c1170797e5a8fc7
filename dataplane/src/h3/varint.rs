//! QUIC variable-length integers (RFC 9000 §16): the length prefix of every
//! HTTP/3 frame, setting, stream type and capsule.
//!
//! quinn-proto has a `VarInt`, but its codec is not public; the encoding is
//! a two-bit length tag and 6, 14, 30 or 62 bits of value.

/// The largest value a variable-length integer holds: 2^62 − 1.
pub const MAX: u64 = (1 << 62) - 1;

/// A value above [`MAX`] cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} does not fit in a QUIC variable-length integer")]
pub struct TooLarge(pub u64);

/// Bytes that `value` takes on the wire.
pub fn encoded_len(value: u64) -> usize {
    match value {
        0..=63 => 1,
        64..=16_383 => 2,
        16_384..=1_073_741_823 => 4,
        _ => 8,
    }
}

/// Appends `value` in its shortest form.
pub fn encode(value: u64, out: &mut Vec<u8>) -> Result<(), TooLarge> {
    if value > MAX {
        return Err(TooLarge(value));
    }
    match encoded_len(value) {
        1 => out.push(value as u8),
        2 => out.extend_from_slice(&(value as u16 | 0x4000).to_be_bytes()),
        4 => out.extend_from_slice(&(value as u32 | 0x8000_0000).to_be_bytes()),
        _ => out.extend_from_slice(&(value | 0xc000_0000_0000_0000).to_be_bytes()),
    }
    Ok(())
}

/// Reads one integer from the front of `buf`: its value and the bytes it
/// took, or `None` when `buf` ends inside it (read more and try again).
/// Non-shortest encodings are valid (RFC 9000 §16) and accepted.
pub fn decode(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(..len)?;
    let mut value = u64::from(first & 0x3f);
    for b in &bytes[1..] {
        value = (value << 8) | u64::from(*b);
    }
    Some((value, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_9000_examples_decode() {
        // RFC 9000 Appendix A.1.
        let cases: [(&[u8], u64); 4] = [
            (&[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c], 151_288_809_941_952_652),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (wire, value) in cases {
            assert_eq!(decode(wire), Some((value, wire.len())));
        }
        // Two-byte encoding of 37: not the shortest, still valid.
        assert_eq!(decode(&[0x40, 0x25]), Some((37, 2)));
    }

    #[test]
    fn every_length_round_trips_at_its_edges() {
        for value in [0, 63, 64, 16_383, 16_384, 1_073_741_823, 1_073_741_824, MAX] {
            let mut out = Vec::new();
            encode(value, &mut out).unwrap();
            assert_eq!(out.len(), encoded_len(value));
            assert_eq!(decode(&out), Some((value, out.len())));
        }
        assert_eq!(encode(MAX + 1, &mut Vec::new()), Err(TooLarge(MAX + 1)));
    }

    #[test]
    fn a_truncated_integer_asks_for_more() {
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0x7b]), None);
        assert_eq!(decode(&[0xc2, 0x19, 0x7c]), None);
    }
}
