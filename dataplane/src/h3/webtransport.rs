//! WebTransport over HTTP/3 and HTTP datagrams, the parts a relay reads
//! (sans-IO): the header of a WebTransport stream (bidirectional signal
//! 0x41 or unidirectional type 0x54, then the session id), the quarter
//! stream id in front of every HTTP datagram (RFC 9297 §2.1), and the
//! settings and error codes of the drafts the edge speaks.
//!
//! Versions (`../shared/RELAY-FACTS.md`): Chromium 156 and aioquic 1.7.2
//! speak draft-02 (setting 0x2b603742, `:protocol webtransport`,
//! `sec-webtransport-http3-draft02: 1`); draft-15 and later (setting
//! 0x2c7cf000, `:protocol webtransport-h3`, no draft header) is what
//! webtransport-go speaks. Each hop of a relay speaks the newest of the two
//! that hop enabled ([`Draft`]); stream bodies, reset codes and capsules
//! cross unchanged, and only the session ids (the CONNECT stream of each
//! hop), the `:protocol` token and the draft-02 headers are rewritten.
//!
//! Not relayed yet: draft-15's flow control. Toward a draft-15 upstream the
//! edge offers unbounded initial credit (so the upstream never waits for
//! it) but does not count the upstream's credit; an upstream that enforces
//! small limits may end the session with WT_FLOW_CONTROL_ERROR.

use super::varint;

/// Settings.
pub mod setting {
    /// draft-02: SETTINGS_ENABLE_WEBTRANSPORT = 1.
    pub const ENABLE_WEBTRANSPORT_DRAFT02: u64 = 0x2b60_3742;
    /// Chromium's draft-04 HTTP datagram setting (sent next to 0x33).
    pub const H3_DATAGRAM_DRAFT04: u64 = 0xff_d277;
    /// draft-07..12: SETTINGS_WEBTRANSPORT_MAX_SESSIONS.
    pub const MAX_SESSIONS_DRAFT07: u64 = 0xc671_706a;
    /// draft-13/14: SETTINGS_WT_MAX_SESSIONS.
    pub const WT_MAX_SESSIONS: u64 = 0x14e9_cd29;
    /// draft-15+: SETTINGS_WT_ENABLED.
    pub const WT_ENABLED: u64 = 0x2c7c_f000;
    /// draft-13+: SETTINGS_WT_INITIAL_MAX_DATA (session flow control).
    pub const WT_INITIAL_MAX_DATA: u64 = 0x2b61;
    /// draft-13+: SETTINGS_WT_INITIAL_MAX_STREAMS_UNI.
    pub const WT_INITIAL_MAX_STREAMS_UNI: u64 = 0x2b64;
    /// draft-13+: SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI.
    pub const WT_INITIAL_MAX_STREAMS_BIDI: u64 = 0x2b65;
}

/// The draft-02 request header (value `1`).
pub const DRAFT02_REQUEST_HEADER: &str = "sec-webtransport-http3-draft02";
/// The draft-02 answer header (value `draft02`).
pub const DRAFT02_ANSWER_HEADER: &str = "sec-webtransport-http3-draft";

/// The WebTransport draft one hop speaks, as far as a relay sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Draft {
    /// draft-02: `:protocol webtransport` with the draft-02 headers.
    Draft02,
    /// draft-15 and later: `:protocol webtransport-h3`, no draft header.
    Draft15,
}

impl Draft {
    /// The `:protocol` token of an extended CONNECT in this draft.
    pub fn token(self) -> &'static str {
        match self {
            Draft::Draft02 => "webtransport",
            Draft::Draft15 => "webtransport-h3",
        }
    }

    /// The draft a client's `:protocol` token names.
    pub fn from_token(token: &str) -> Option<Draft> {
        [Draft::Draft02, Draft::Draft15].into_iter().find(|d| d.token() == token)
    }

    /// The newest draft a peer's SETTINGS enable (`get` reads one).
    pub fn of_peer(get: impl Fn(u64) -> Option<u64>) -> Option<Draft> {
        if get(setting::WT_ENABLED) == Some(1) {
            Some(Draft::Draft15)
        } else if get(setting::ENABLE_WEBTRANSPORT_DRAFT02) == Some(1) {
            Some(Draft::Draft02)
        } else {
            None
        }
    }

    /// A request's end-to-end fields as a hop of this draft expects them:
    /// draft-02 carries `sec-webtransport-http3-draft02: 1`, later drafts
    /// no draft header.
    pub fn request_fields(self, fields: &mut Vec<(String, Vec<u8>)>) {
        fields.retain(|(name, _)| !name.eq_ignore_ascii_case(DRAFT02_REQUEST_HEADER));
        if self == Draft::Draft02 {
            fields.push((DRAFT02_REQUEST_HEADER.into(), b"1".to_vec()));
        }
    }

    /// An answer's end-to-end fields as a client of this draft expects
    /// them: draft-02 gets `sec-webtransport-http3-draft: draft02`, later
    /// drafts no draft header.
    pub fn answer_fields(self, fields: &mut Vec<(String, Vec<u8>)>) {
        fields.retain(|(name, _)| !name.eq_ignore_ascii_case(DRAFT02_ANSWER_HEADER));
        if self == Draft::Draft02 {
            fields.push((DRAFT02_ANSWER_HEADER.into(), b"draft02".to_vec()));
        }
    }
}

/// The frame type that opens a client- or server-initiated bidirectional
/// WebTransport stream (WEBTRANSPORT_STREAM).
pub const BIDI_SIGNAL: u64 = 0x41;
/// The unidirectional stream type of a WebTransport stream.
pub const UNI_TYPE: u64 = 0x54;

/// Error codes (HTTP/3 application error space).
pub mod code {
    /// The session ended: its streams are reset with this.
    pub const SESSION_GONE: u64 = 0x170d_7b68;
    /// A stream for a session that does not exist (any more, or yet).
    pub const BUFFERED_STREAM_REJECTED: u64 = 0x3994_bd84;
}

/// The longest WT_CLOSE_SESSION reason (bytes of UTF-8).
pub const MAX_CLOSE_REASON: usize = 1024;

/// The largest quarter stream id (RFC 9297 §2.1: stream ids are below 2^62).
pub const MAX_QUARTER_ID: u64 = (1 << 60) - 1;

/// The session (CONNECT stream) id of a request stream's datagrams.
pub fn quarter_id(stream_id: u64) -> u64 {
    stream_id / 4
}

/// An HTTP datagram split into its quarter stream id and the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatagramHead {
    pub quarter_id: u64,
    /// Bytes the quarter id took (the payload follows).
    pub len: usize,
}

/// Why a QUIC datagram is not an HTTP datagram: a connection error
/// H3_DATAGRAM_ERROR (RFC 9297 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadDatagram {
    #[error("HTTP datagram without a quarter stream id")]
    Short,
    #[error("HTTP datagram quarter stream id above 2^60-1")]
    IdTooLarge,
}

/// Reads the quarter stream id in front of an HTTP datagram.
pub fn datagram_head(datagram: &[u8]) -> Result<DatagramHead, BadDatagram> {
    let (quarter_id, len) = varint::decode(datagram).ok_or(BadDatagram::Short)?;
    if quarter_id > MAX_QUARTER_ID {
        return Err(BadDatagram::IdTooLarge);
    }
    Ok(DatagramHead { quarter_id, len })
}

/// The same datagram payload behind another quarter id (the other hop's
/// session stream), written into `out`.
pub fn readdress(payload: &[u8], quarter_id: u64, out: &mut Vec<u8>) {
    out.clear();
    // Quarter ids come from stream ids (< 2^62): they always encode.
    let _ = varint::encode(quarter_id.min(MAX_QUARTER_ID), out);
    out.extend_from_slice(payload);
}

/// What a WebTransport stream said it is, once its header is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHeader {
    /// The session's CONNECT stream id on this hop.
    pub session_id: u64,
    /// Header bytes consumed (the stream's payload follows).
    pub len: usize,
}

/// Reads the session id that follows a bidirectional stream's 0x41 signal
/// or a unidirectional stream's 0x54 type (the caller has read that first
/// varint). `Ok(None)`: more bytes needed. A session id that is not a
/// client-initiated bidirectional stream id (the only kind a CONNECT
/// request has) is H3_ID_ERROR.
pub fn session_id(after_type: &[u8]) -> Result<Option<StreamHeader>, super::error::H3Error> {
    let Some((session_id, len)) = varint::decode(after_type) else { return Ok(None) };
    if session_id % 4 != 0 {
        return Err(super::error::H3Error::connection(
            super::error::Code::ID_ERROR,
            "WebTransport stream names a session id that is not a client request stream",
        ));
    }
    Ok(Some(StreamHeader { session_id, len }))
}

/// Checks a WT_CLOSE_SESSION capsule's value: a 32-bit code and a UTF-8
/// reason of at most 1024 bytes; else the message is malformed.
pub fn check_close_session(value: &[u8]) -> Result<(u32, &str), &'static str> {
    let Some((code, reason)) = value.split_first_chunk::<4>() else {
        return Err("WT_CLOSE_SESSION shorter than its 32-bit code");
    };
    if reason.len() > MAX_CLOSE_REASON {
        return Err("WT_CLOSE_SESSION reason longer than 1024 bytes");
    }
    let reason = std::str::from_utf8(reason).map_err(|_| "WT_CLOSE_SESSION reason is not UTF-8")?;
    Ok((u32::from_be_bytes(*code), reason))
}

/// Writes a WebTransport stream's header for `session_id` on this hop.
pub fn stream_header(bidi: bool, session_id: u64, out: &mut Vec<u8>) {
    let ty = if bidi { BIDI_SIGNAL } else { UNI_TYPE };
    let _ = varint::encode(ty, out);
    let _ = varint::encode(session_id.min(varint::MAX), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hop_gets_its_drafts_token_and_headers() {
        let peer = |pairs: &'static [(u64, u64)]| move |id: u64| pairs.iter().find(|(k, _)| *k == id).map(|(_, v)| *v);
        assert_eq!(Draft::of_peer(peer(&[(0x2b60_3742, 1)])), Some(Draft::Draft02));
        assert_eq!(Draft::of_peer(peer(&[(0x2b60_3742, 1), (0x2c7c_f000, 1)])), Some(Draft::Draft15));
        assert_eq!(Draft::of_peer(peer(&[(0x2b60_3742, 0)])), None);
        assert_eq!(Draft::from_token("webtransport-h3"), Some(Draft::Draft15));
        assert_eq!(Draft::from_token("webtransport"), Some(Draft::Draft02));
        assert_eq!(Draft::from_token("WebTransport"), None);
        // draft-02 client → draft-15 upstream: the draft header goes,
        // everything else stays in order.
        let mut f = vec![("origin".to_string(), b"https://a".to_vec()), ("Sec-WebTransport-HTTP3-Draft02".into(), b"1".to_vec()), ("x".into(), b"y".to_vec())];
        Draft::Draft15.request_fields(&mut f);
        assert_eq!(f, vec![("origin".to_string(), b"https://a".to_vec()), ("x".into(), b"y".to_vec())]);
        // ... and back: added once, even if the client sent it already.
        Draft::Draft02.request_fields(&mut f);
        Draft::Draft02.request_fields(&mut f);
        assert_eq!(f.iter().filter(|(n, _)| n == DRAFT02_REQUEST_HEADER).count(), 1);
        let mut a = vec![("sec-webtransport-http3-draft".to_string(), b"draft02".to_vec())];
        Draft::Draft15.answer_fields(&mut a);
        assert!(a.is_empty());
        Draft::Draft02.answer_fields(&mut a);
        assert_eq!(a, vec![("sec-webtransport-http3-draft".to_string(), b"draft02".to_vec())]);
    }

    #[test]
    fn datagrams_are_readdressed_with_the_payload_untouched() {
        let mut wire = Vec::new();
        varint::encode(3, &mut wire).unwrap();
        wire.extend_from_slice(b"\x00payload");
        let head = datagram_head(&wire).unwrap();
        assert_eq!(head, DatagramHead { quarter_id: 3, len: 1 });
        let mut out = Vec::new();
        readdress(&wire[head.len..], 1000, &mut out);
        assert_eq!(datagram_head(&out).unwrap(), DatagramHead { quarter_id: 1000, len: 2 });
        assert_eq!(&out[2..], b"\x00payload");
        assert_eq!(datagram_head(&[]), Err(BadDatagram::Short));
        assert_eq!(datagram_head(&[0xc0]), Err(BadDatagram::Short));
        let mut big = Vec::new();
        varint::encode(MAX_QUARTER_ID + 1, &mut big).unwrap();
        assert_eq!(datagram_head(&big), Err(BadDatagram::IdTooLarge));
    }

    #[test]
    fn stream_headers_round_trip_and_check_the_session_id() {
        let mut out = Vec::new();
        stream_header(true, 8, &mut out);
        assert_eq!(out, [0x40, 0x41, 0x08]);
        assert_eq!(session_id(&out[2..]).unwrap(), Some(StreamHeader { session_id: 8, len: 1 }));
        assert_eq!(session_id(&[]).unwrap(), None);
        assert_eq!(session_id(&[0x40]).unwrap(), None);
        assert!(session_id(&[0x02]).is_err());
    }

    #[test]
    fn close_session_values_are_checked() {
        assert_eq!(check_close_session(b"\x00\x00\x00\x07bye"), Ok((7, "bye")));
        assert!(check_close_session(b"\x00\x00").is_err());
        assert!(check_close_session(b"\x00\x00\x00\x01\xff").is_err());
        let mut long = vec![0u8; 4];
        long.extend(std::iter::repeat_n(b'a', 1025));
        assert!(check_close_session(&long).is_err());
        long.pop();
        assert!(check_close_session(&long).is_ok());
    }
}
