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

/// The extended CONNECT a capsule stream belongs to: it decides what a
/// relay checks as the capsules pass through it unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// WebTransport: WT_CLOSE_SESSION is checked, and ends the stream.
    WebTransport,
    /// RFC 9298: a DATAGRAM capsule's UDP payload (context 0) is at most
    /// 65,527 bytes.
    ConnectUdp,
    /// RFC 9484: ADDRESS_ASSIGN, ADDRESS_REQUEST, ROUTE_ADVERTISEMENT and
    /// everything else pass as they are.
    ConnectIp,
}

impl Protocol {
    /// The `:protocol` token (the ones of RFC 9298, RFC 9484 and
    /// WebTransport's draft-02, which Chromium and aioquic send).
    pub fn token(self) -> &'static str {
        match self {
            Protocol::WebTransport => "webtransport",
            Protocol::ConnectUdp => "connect-udp",
            Protocol::ConnectIp => "connect-ip",
        }
    }

    /// The protocol a `:protocol` token names (tokens are case-sensitive
    /// in RFC 8441, compared as sent).
    /// `webtransport-h3` (WebTransport draft-15+, which the edge
    /// advertises too) is WebTransport.
    pub fn from_token(token: &str) -> Option<Protocol> {
        if super::webtransport::Draft::from_token(token).is_some() {
            return Some(Protocol::WebTransport);
        }
        [Protocol::ConnectUdp, Protocol::ConnectIp].into_iter().find(|p| p.token() == token)
    }
}

/// What a scan saw that the relay acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// WT_CLOSE_SESSION with its code: the session ends.
    CloseSession(u32),
    /// WT_DRAIN_SESSION.
    DrainSession,
}

/// The largest UDP payload (RFC 9298 §5: 65,535 − 8).
pub const MAX_UDP_PAYLOAD: u64 = 65_527;

/// Follows the capsules of a stream a relay passes on unchanged, byte for
/// byte and without buffering them (only a capsule it must check whole,
/// at most 1,028 bytes, is held). A rule broken is a stream error that
/// aborts the request stream (H3_MESSAGE_ERROR; an oversized UDP payload
/// H3_DATAGRAM_ERROR).
#[derive(Debug)]
pub struct CapsuleScanner {
    protocol: Protocol,
    /// Type and length bytes of the next capsule, not complete yet.
    head: Vec<u8>,
    /// A capsule being held for its check: type, length, value so far.
    held: Option<(u64, usize, Vec<u8>)>,
    /// Value bytes still to pass unchecked.
    skip: u64,
    closed: bool,
}

impl CapsuleScanner {
    pub fn new(protocol: Protocol) -> CapsuleScanner {
        CapsuleScanner { protocol, head: Vec::new(), held: None, skip: 0, closed: false }
    }

    /// Bytes of the value to hold for a check (0: pass unchecked).
    fn hold(&self, capsule_type: u64, len: u64) -> Result<usize, H3Error> {
        let malformed = |why| Err(H3Error::stream(Code::MESSAGE_ERROR, why));
        match (self.protocol, capsule_type) {
            (Protocol::WebTransport, ty::WT_CLOSE_SESSION) => {
                if len < 4 {
                    return malformed("WT_CLOSE_SESSION shorter than its 32-bit code");
                }
                if len > 4 + super::webtransport::MAX_CLOSE_REASON as u64 {
                    return malformed("WT_CLOSE_SESSION reason longer than 1024 bytes");
                }
                Ok(len as usize)
            }
            // Only its context id (a varint, at most 8 bytes) is needed.
            (Protocol::ConnectUdp, ty::DATAGRAM) if len == 0 => malformed("DATAGRAM capsule without a context id"),
            (Protocol::ConnectUdp, ty::DATAGRAM) => Ok(len.min(8) as usize),
            _ => Ok(0),
        }
    }

    /// Checks a held value (`len`: the capsule's whole value length).
    fn check(&mut self, capsule_type: u64, len: u64, value: &[u8], seen: &mut Vec<Seen>) -> Result<(), H3Error> {
        match capsule_type {
            ty::WT_CLOSE_SESSION => {
                let (code, _) = super::webtransport::check_close_session(value).map_err(|why| H3Error::stream(Code::MESSAGE_ERROR, why))?;
                self.closed = true;
                seen.push(Seen::CloseSession(code));
            }
            ty::DATAGRAM => {
                let Some((context, n)) = varint::decode(value) else {
                    return Err(H3Error::stream(Code::MESSAGE_ERROR, "DATAGRAM capsule context id cut short"));
                };
                if context == 0 && len - n as u64 > MAX_UDP_PAYLOAD {
                    return Err(H3Error::stream(Code::DATAGRAM_ERROR, "UDP payload longer than 65527 bytes"));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Follows `data`, the next bytes of the stream's DATA.
    pub fn scan(&mut self, mut data: &[u8], seen: &mut Vec<Seen>) -> Result<(), H3Error> {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = data.len().min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                self.skip -= n as u64;
                data = &data[n..];
                continue;
            }
            if let Some((capsule_type, len, mut value)) = self.held.take() {
                let want = self.hold(capsule_type, len as u64)? - value.len();
                let n = want.min(data.len());
                value.extend_from_slice(&data[..n]);
                data = &data[n..];
                if n < want {
                    self.held = Some((capsule_type, len, value));
                    continue;
                }
                self.check(capsule_type, len as u64, &value, seen)?;
                self.skip = (len - value.len()) as u64;
                continue;
            }
            if self.closed {
                return Err(H3Error::stream(Code::MESSAGE_ERROR, "data after WT_CLOSE_SESSION"));
            }
            if let Some((ty, len)) = self.head_from(&mut data) {
                if ty == ty::WT_DRAIN_SESSION && self.protocol == Protocol::WebTransport {
                    seen.push(Seen::DrainSession);
                }
                let hold = self.hold(ty, len)?;
                if hold == 0 {
                    self.skip = len;
                } else {
                    self.held = Some((ty, len as usize, Vec::with_capacity(hold)));
                }
            }
        }
        Ok(())
    }

    /// Takes a capsule's type and length from the front of `data` (with
    /// bytes kept from earlier calls); `None` when `data` ran out first.
    fn head_from(&mut self, data: &mut &[u8]) -> Option<(u64, u64)> {
        // A header is at most 16 bytes (two 8-byte varints).
        let had = self.head.len();
        let take = (16 - had).min(data.len());
        self.head.extend_from_slice(&data[..take]);
        let parsed = varint::decode(&self.head).and_then(|(t, a)| varint::decode(&self.head[a..]).map(|(l, b)| (t, l, a + b)));
        match parsed {
            Some((t, l, used)) => {
                *data = &data[used - had..];
                self.head.clear();
                Some((t, l))
            }
            None => {
                *data = &data[take..];
                None
            }
        }
    }

    /// Between two capsules (where the edge may put one of its own).
    pub fn at_boundary(&self) -> bool {
        self.head.is_empty() && self.held.is_none() && self.skip == 0
    }

    /// The stream ended: inside a capsule, the message is malformed
    /// (RFC 9297 §3.3).
    pub fn finish(&self) -> Result<(), H3Error> {
        if self.head.is_empty() && self.held.is_none() && self.skip == 0 {
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

    fn scan_all(protocol: Protocol, wire: &[u8], step: usize) -> Result<Vec<Seen>, H3Error> {
        let mut scanner = CapsuleScanner::new(protocol);
        let mut seen = Vec::new();
        for piece in wire.chunks(step) {
            scanner.scan(piece, &mut seen)?;
        }
        scanner.finish()?;
        Ok(seen)
    }

    #[test]
    fn the_scanner_follows_capsules_split_anywhere() {
        let mut wire = Vec::new();
        Capsule { capsule_type: 0x29 * 7 + 0x17, value: vec![1; 70] }.encode(&mut wire).unwrap();
        Capsule { capsule_type: ty::DATAGRAM, value: b"\x00udp".to_vec() }.encode(&mut wire).unwrap();
        Capsule { capsule_type: ty::WT_DRAIN_SESSION, value: vec![] }.encode(&mut wire).unwrap();
        Capsule { capsule_type: ty::WT_CLOSE_SESSION, value: b"\x00\x00\x01\x00done".to_vec() }.encode(&mut wire).unwrap();
        for step in 1..=wire.len() {
            assert_eq!(scan_all(Protocol::WebTransport, &wire, step).unwrap(), vec![Seen::DrainSession, Seen::CloseSession(256)], "step {step}");
            assert_eq!(scan_all(Protocol::ConnectUdp, &wire, step).unwrap(), vec![], "step {step}");
        }
        let cut = scan_all(Protocol::ConnectIp, &wire[..wire.len() - 1], 5).unwrap_err();
        assert_eq!(cut.code, Code::MESSAGE_ERROR);
    }

    #[test]
    fn the_scanner_enforces_each_protocols_rules() {
        let mut big = Vec::new();
        let mut value = vec![0x00];
        value.resize(1 + 65_528, 7);
        Capsule { capsule_type: ty::DATAGRAM, value: value.clone() }.encode(&mut big).unwrap();
        assert_eq!(scan_all(Protocol::ConnectUdp, &big, 1000).unwrap_err().code, Code::DATAGRAM_ERROR);
        assert!(scan_all(Protocol::ConnectIp, &big, 1000).is_ok());
        value.pop();
        let mut fits = Vec::new();
        Capsule { capsule_type: ty::DATAGRAM, value }.encode(&mut fits).unwrap();
        assert!(scan_all(Protocol::ConnectUdp, &fits, 1000).is_ok());
        for bad in [&b"\x00\x00"[..], b"\x00\x00\x00\x01\xff", &[b'a'; 1029]] {
            let mut wire = Vec::new();
            Capsule { capsule_type: ty::WT_CLOSE_SESSION, value: bad.to_vec() }.encode(&mut wire).unwrap();
            assert_eq!(scan_all(Protocol::WebTransport, &wire, 3).unwrap_err().code, Code::MESSAGE_ERROR);
        }
        let mut after = Vec::new();
        Capsule { capsule_type: ty::WT_CLOSE_SESSION, value: vec![0; 4] }.encode(&mut after).unwrap();
        after.push(0);
        assert_eq!(scan_all(Protocol::WebTransport, &after, 1).unwrap_err().code, Code::MESSAGE_ERROR);
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
