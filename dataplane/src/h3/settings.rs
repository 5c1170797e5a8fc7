//! HTTP/3 SETTINGS (RFC 9114 §7.2.4): every pair kept in the order the
//! peer sent it (the WebTransport relay regenerates settings per hop and
//! needs the unknown ones too), with the checks the RFCs require on receipt.

use super::error::{Code, H3Error};
use super::varint;

/// Setting identifiers the edge reads or sends.
pub mod id {
    /// RFC 9204 §5.
    pub const QPACK_MAX_TABLE_CAPACITY: u64 = 0x1;
    /// RFC 9114 §7.2.4.1.
    pub const MAX_FIELD_SECTION_SIZE: u64 = 0x6;
    /// RFC 9204 §5.
    pub const QPACK_BLOCKED_STREAMS: u64 = 0x7;
    /// RFC 9220 §3: extended CONNECT.
    pub const ENABLE_CONNECT_PROTOCOL: u64 = 0x8;
    /// RFC 9297 §2.1.1: HTTP datagrams.
    pub const H3_DATAGRAM: u64 = 0x33;
}

/// HTTP/2 setting identifiers with no HTTP/3 meaning (RFC 9114 §7.2.4.1):
/// receiving one is H3_SETTINGS_ERROR.
fn is_http2_only(setting: u64) -> bool {
    matches!(setting, 0x0 | 0x2 | 0x3 | 0x4 | 0x5)
}

/// Settings whose value must be 0 or 1.
fn is_boolean(setting: u64) -> bool {
    matches!(setting, id::ENABLE_CONNECT_PROTOCOL | id::H3_DATAGRAM)
}

/// One endpoint's SETTINGS, in wire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pairs: Vec<(u64, u64)>,
}

impl Settings {
    /// Parses a SETTINGS payload. Errors are connection errors:
    /// H3_SETTINGS_ERROR for a duplicate, an HTTP/2 identifier or a
    /// boolean setting above 1; H3_FRAME_ERROR for a truncated pair.
    pub fn decode(mut payload: &[u8]) -> Result<Settings, H3Error> {
        let mut pairs: Vec<(u64, u64)> = Vec::new();
        while !payload.is_empty() {
            let truncated = || H3Error::connection(Code::FRAME_ERROR, "truncated SETTINGS pair");
            let (setting, a) = varint::decode(payload).ok_or_else(truncated)?;
            let (value, b) = varint::decode(&payload[a..]).ok_or_else(truncated)?;
            payload = &payload[a + b..];
            if is_http2_only(setting) {
                return Err(H3Error::connection(Code::SETTINGS_ERROR, "HTTP/2 setting in SETTINGS"));
            }
            if is_boolean(setting) && value > 1 {
                return Err(H3Error::connection(Code::SETTINGS_ERROR, "boolean setting above 1"));
            }
            if pairs.iter().any(|(s, _)| *s == setting) {
                return Err(H3Error::connection(Code::SETTINGS_ERROR, "duplicate setting"));
            }
            pairs.push((setting, value));
        }
        Ok(Settings { pairs })
    }

    /// Adds or replaces a setting (its first place is kept).
    pub fn set(&mut self, setting: u64, value: u64) {
        match self.pairs.iter_mut().find(|(s, _)| *s == setting) {
            Some(pair) => pair.1 = value,
            None => self.pairs.push((setting, value)),
        }
    }

    /// A setting's value, if the peer sent it.
    pub fn get(&self, setting: u64) -> Option<u64> {
        self.pairs.iter().find(|(s, _)| *s == setting).map(|(_, v)| *v)
    }

    /// Every pair in wire order (GREASE and unknown ones included).
    pub fn pairs(&self) -> &[(u64, u64)] {
        &self.pairs
    }

    /// The peer accepts extended CONNECT (RFC 9220).
    pub fn extended_connect(&self) -> bool {
        self.get(id::ENABLE_CONNECT_PROTOCOL) == Some(1)
    }

    /// The peer accepts HTTP datagrams (RFC 9297).
    pub fn h3_datagram(&self) -> bool {
        self.get(id::H3_DATAGRAM) == Some(1)
    }

    /// The largest field section the peer accepts (unlimited by default).
    pub fn max_field_section_size(&self) -> u64 {
        self.get(id::MAX_FIELD_SECTION_SIZE).unwrap_or(u64::MAX)
    }

    /// Appends the SETTINGS frame.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), varint::TooLarge> {
        let mut payload = Vec::with_capacity(self.pairs.len() * 4);
        for (setting, value) in &self.pairs {
            varint::encode(*setting, &mut payload)?;
            varint::encode(*value, &mut payload)?;
        }
        super::frame::encode_head(super::frame::ty::SETTINGS, payload.len() as u64, out);
        out.extend_from_slice(&payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h3::frame::{Frame, FrameReader};

    #[test]
    fn settings_round_trip_in_wire_order_with_unknown_ones() {
        let mut s = Settings::default();
        s.set(id::H3_DATAGRAM, 1);
        s.set(0x2b60_3742, 1); // WebTransport draft-02
        s.set(id::ENABLE_CONNECT_PROTOCOL, 1);
        s.set(0x1f * 3 + 0x21, 77); // GREASE
        s.set(id::QPACK_MAX_TABLE_CAPACITY, 0);
        let mut wire = Vec::new();
        s.encode(&mut wire).unwrap();
        let mut reader = FrameReader::new(1024);
        let (n, frame) = reader.read(&wire[..2]).unwrap();
        assert_eq!((n, &frame), (2, &None));
        let (_, frame) = reader.read(&wire[2..]).unwrap();
        assert_eq!(frame, Some(Frame::Settings(s.clone())));
        assert!(s.extended_connect() && s.h3_datagram());
        assert_eq!(s.pairs()[1], (0x2b60_3742, 1));
        assert_eq!(s.max_field_section_size(), u64::MAX);
    }

    #[test]
    fn receipt_checks_are_settings_errors() {
        let pair = |a: u64, b: u64| {
            let mut p = Vec::new();
            varint::encode(a, &mut p).unwrap();
            varint::encode(b, &mut p).unwrap();
            p
        };
        for (payload, why) in [
            ([pair(0x6, 1), pair(0x6, 2)].concat(), "duplicate setting"),
            (pair(0x4, 65535), "HTTP/2 setting in SETTINGS"),
            (pair(id::ENABLE_CONNECT_PROTOCOL, 2), "boolean setting above 1"),
            (pair(id::H3_DATAGRAM, 5), "boolean setting above 1"),
        ] {
            assert_eq!(Settings::decode(&payload), Err(H3Error::connection(Code::SETTINGS_ERROR, why)));
        }
        let err = Settings::decode(&[0x06]).unwrap_err();
        assert_eq!(err.code, Code::FRAME_ERROR);
    }
}
