//! HTTP/3 frames (RFC 9114 §7): a sans-IO reader that takes a stream's bytes
//! as they arrive and returns frames, and the encoders for what the edge
//! sends. DATA payloads are handed out as they come, never buffered whole;
//! the other frames are bounded and buffered until complete. Which frame is
//! allowed on which stream is the connection's business, not this reader's,
//! except for the HTTP/2 frame types, which are an error anywhere.

use super::error::{Code, H3Error};
use super::settings::Settings;
use super::varint;

/// Frame types (RFC 9114 §7.2).
pub mod ty {
    pub const DATA: u64 = 0x0;
    pub const HEADERS: u64 = 0x1;
    pub const CANCEL_PUSH: u64 = 0x3;
    pub const SETTINGS: u64 = 0x4;
    pub const PUSH_PROMISE: u64 = 0x5;
    pub const GOAWAY: u64 = 0x7;
    pub const MAX_PUSH_ID: u64 = 0xd;
}

/// HTTP/2 frame types with no HTTP/3 meaning (RFC 9114 §7.2.8): receiving
/// one is H3_FRAME_UNEXPECTED.
fn is_http2_only(frame_type: u64) -> bool {
    matches!(frame_type, 0x2 | 0x6 | 0x8 | 0x9)
}

/// Longest payload accepted for the small control frames (SETTINGS, GOAWAY,
/// MAX_PUSH_ID, CANCEL_PUSH, PUSH_PROMISE's id).
const MAX_CONTROL_PAYLOAD: u64 = 16 * 1024;

/// One frame, or a piece of one (DATA).
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// The next bytes of a DATA frame's payload.
    Data(&'a [u8]),
    /// A HEADERS frame's encoded field section, whole.
    Headers(Vec<u8>),
    Settings(Settings),
    Goaway(u64),
    MaxPushId(u64),
    CancelPush(u64),
    /// A PUSH_PROMISE's push id (the edge never allows pushes, so the field
    /// section is not kept).
    PushPromise(u64),
    /// A frame of a type this layer does not know (extensions, GREASE):
    /// its payload was skipped, as RFC 9114 §9 requires.
    Unknown(u64),
}

#[derive(Debug)]
enum State {
    /// Reading a frame's type and length (at most 16 bytes).
    Head(Vec<u8>),
    Data { left: u64 },
    Buffered { frame_type: u64, len: usize, payload: Vec<u8> },
    Skip { frame_type: u64, left: u64 },
}

/// Reads the frames of one stream (control or request) as bytes arrive.
#[derive(Debug)]
pub struct FrameReader {
    state: State,
    max_field_section: u64,
}

impl FrameReader {
    /// `max_field_section`: the longest HEADERS payload accepted (the
    /// edge's SETTINGS_MAX_FIELD_SECTION_SIZE); a longer one is a stream
    /// error, H3_EXCESSIVE_LOAD.
    pub fn new(max_field_section: u64) -> FrameReader {
        FrameReader { state: State::Head(Vec::new()), max_field_section }
    }

    /// Whether the reader stands between frames: a stream that ends here
    /// ended cleanly; anywhere else it ended inside a frame
    /// (H3_FRAME_ERROR).
    pub fn at_frame_boundary(&self) -> bool {
        matches!(&self.state, State::Head(h) if h.is_empty())
    }

    /// Consumes bytes from the front of `buf`: returns how many, and the
    /// frame (or DATA piece) they completed, if any. Call again with the
    /// rest of `buf` until it is empty.
    pub fn read<'a>(&mut self, buf: &'a [u8]) -> Result<(usize, Option<Frame<'a>>), H3Error> {
        match &mut self.state {
            State::Head(head) => {
                let before = head.len();
                let take = buf.len().min(16 - before);
                head.extend_from_slice(&buf[..take]);
                let Some((frame_type, t)) = varint::decode(head) else {
                    return Ok((take, None));
                };
                let Some((len, l)) = varint::decode(&head[t..]) else {
                    return Ok((take, None));
                };
                let used = t + l - before;
                self.start(frame_type, len)?;
                if let State::Buffered { frame_type, len: 0, .. } = self.state {
                    // An empty payload (SETTINGS with no setting, say) is
                    // complete with its head.
                    self.state = State::Head(Vec::new());
                    return Ok((used, Some(complete(frame_type, Vec::new())?)));
                }
                Ok((used, None))
            }
            State::Data { left } => {
                let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                if *left == 0 {
                    self.state = State::Head(Vec::new());
                }
                Ok((n, (n > 0).then(|| Frame::Data(&buf[..n]))))
            }
            State::Skip { frame_type, left } => {
                let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                if *left > 0 {
                    return Ok((n, None));
                }
                let frame_type = *frame_type;
                self.state = State::Head(Vec::new());
                Ok((n, Some(Frame::Unknown(frame_type))))
            }
            State::Buffered { frame_type, len, payload } => {
                let n = buf.len().min(*len - payload.len());
                payload.extend_from_slice(&buf[..n]);
                if payload.len() < *len {
                    return Ok((n, None));
                }
                let (frame_type, payload) = (*frame_type, std::mem::take(payload));
                self.state = State::Head(Vec::new());
                Ok((n, Some(complete(frame_type, payload)?)))
            }
        }
    }

    /// A frame's head is read: decide how its payload is taken.
    fn start(&mut self, frame_type: u64, len: u64) -> Result<(), H3Error> {
        if is_http2_only(frame_type) {
            return Err(H3Error::connection(Code::FRAME_UNEXPECTED, "HTTP/2 frame type on an HTTP/3 stream"));
        }
        let buffered = |len: u64| {
            // Bounded above by the caller: fits in memory and in usize.
            let len = len as usize;
            State::Buffered { frame_type, len, payload: Vec::with_capacity(len.min(4096)) }
        };
        self.state = match frame_type {
            ty::DATA if len == 0 => State::Head(Vec::new()),
            ty::DATA => State::Data { left: len },
            ty::HEADERS if len > self.max_field_section => {
                return Err(H3Error::stream(Code::EXCESSIVE_LOAD, "field section larger than advertised"));
            }
            ty::PUSH_PROMISE if len > self.max_field_section => {
                return Err(H3Error::connection(Code::EXCESSIVE_LOAD, "PUSH_PROMISE larger than advertised"));
            }
            ty::HEADERS | ty::PUSH_PROMISE => buffered(len),
            ty::SETTINGS | ty::GOAWAY | ty::MAX_PUSH_ID | ty::CANCEL_PUSH if len > MAX_CONTROL_PAYLOAD => {
                return Err(H3Error::connection(Code::EXCESSIVE_LOAD, "control frame too large"));
            }
            ty::SETTINGS | ty::GOAWAY | ty::MAX_PUSH_ID | ty::CANCEL_PUSH => buffered(len),
            _ if len == 0 => State::Head(Vec::new()),
            _ => State::Skip { frame_type, left: len },
        };
        Ok(())
    }
}

/// Parses a buffered payload.
fn complete(frame_type: u64, payload: Vec<u8>) -> Result<Frame<'static>, H3Error> {
    let one_id = |what: &'static str| -> Result<u64, H3Error> {
        match varint::decode(&payload) {
            Some((id, n)) if n == payload.len() => Ok(id),
            _ => Err(H3Error::connection(Code::FRAME_ERROR, what)),
        }
    };
    Ok(match frame_type {
        ty::HEADERS => Frame::Headers(payload),
        ty::SETTINGS => Frame::Settings(Settings::decode(&payload)?),
        ty::GOAWAY => Frame::Goaway(one_id("malformed GOAWAY")?),
        ty::MAX_PUSH_ID => Frame::MaxPushId(one_id("malformed MAX_PUSH_ID")?),
        ty::CANCEL_PUSH => Frame::CancelPush(one_id("malformed CANCEL_PUSH")?),
        // PUSH_PROMISE: its push id; the field section is not kept.
        _ => match varint::decode(&payload) {
            Some((id, _)) => Frame::PushPromise(id),
            None => return Err(H3Error::connection(Code::FRAME_ERROR, "malformed PUSH_PROMISE")),
        },
    })
}

/// Appends a frame's type and length.
pub fn encode_head(frame_type: u64, len: u64, out: &mut Vec<u8>) {
    // Both come from this layer (types are constants; lengths are buffer
    // lengths, far below 2^62): encoding cannot fail.
    let _ = varint::encode(frame_type, out);
    let _ = varint::encode(len, out);
}

/// Appends a HEADERS frame carrying `field_section`.
pub fn encode_headers(field_section: &[u8], out: &mut Vec<u8>) {
    encode_head(ty::HEADERS, field_section.len() as u64, out);
    out.extend_from_slice(field_section);
}

/// Appends a GOAWAY frame.
pub fn encode_goaway(id: u64, out: &mut Vec<u8>) -> Result<(), varint::TooLarge> {
    let mut payload = Vec::with_capacity(8);
    varint::encode(id, &mut payload)?;
    encode_head(ty::GOAWAY, payload.len() as u64, out);
    out.extend_from_slice(&payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in pieces of `step` bytes; collects owned frames.
    fn read_all(wire: &[u8], step: usize) -> Result<Vec<String>, H3Error> {
        let mut reader = FrameReader::new(1024);
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            let mut rest = piece;
            while !rest.is_empty() {
                let (n, frame) = reader.read(rest)?;
                if let Some(f) = frame {
                    out.push(format!("{f:?}"));
                }
                rest = &rest[n..];
            }
        }
        assert!(reader.at_frame_boundary(), "ended inside a frame");
        Ok(out)
    }

    fn frame(frame_type: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_head(frame_type, payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn frames_split_anywhere_read_the_same() {
        let mut wire = Vec::new();
        encode_headers(b"\x00\x00\xd1", &mut wire);
        wire.extend(frame(ty::DATA, b"hello"));
        wire.extend(frame(0x21, b"grease payload"));
        wire.extend(frame(ty::DATA, b""));
        encode_goaway(4, &mut wire).unwrap();
        let whole = read_all(&wire, wire.len()).unwrap();
        assert_eq!(
            whole,
            ["Headers([0, 0, 209])", "Data([104, 101, 108, 108, 111])", "Unknown(33)", "Goaway(4)"]
        );
        for step in 1..wire.len() {
            let pieces = read_all(&wire, step).unwrap();
            let joined: Vec<String> = pieces.into_iter().filter(|f| !f.starts_with("Data")).collect();
            assert_eq!(joined, ["Headers([0, 0, 209])", "Unknown(33)", "Goaway(4)"], "step {step}");
        }
    }

    #[test]
    fn an_empty_settings_frame_completes_with_its_head() {
        let mut reader = FrameReader::new(1024);
        let wire = frame(ty::SETTINGS, b"");
        let (n, f) = reader.read(&wire).unwrap();
        assert_eq!((n, f), (2, Some(Frame::Settings(Settings::default()))));
        assert!(reader.at_frame_boundary());
    }

    #[test]
    fn http2_frame_types_are_unexpected() {
        for t in [0x2, 0x6, 0x8, 0x9] {
            let err = read_all(&frame(t, b""), 64).unwrap_err();
            assert_eq!(err.code, Code::FRAME_UNEXPECTED);
        }
    }

    #[test]
    fn an_oversized_field_section_is_a_stream_error() {
        let err = read_all(&frame(ty::HEADERS, &[0; 1025]), 4096).unwrap_err();
        assert_eq!(err, H3Error::stream(Code::EXCESSIVE_LOAD, "field section larger than advertised"));
    }

    #[test]
    fn a_goaway_with_trailing_bytes_is_a_frame_error() {
        let err = read_all(&frame(ty::GOAWAY, &[4, 0]), 64).unwrap_err();
        assert_eq!(err.code, Code::FRAME_ERROR);
    }

    #[test]
    fn a_huge_unknown_frame_is_skipped_without_buffering() {
        let mut reader = FrameReader::new(1024);
        let mut head = Vec::new();
        encode_head(0x40, 1 << 40, &mut head);
        assert_eq!(reader.read(&head).unwrap(), (head.len(), None));
        let chunk = vec![0u8; 65536];
        assert_eq!(reader.read(&chunk).unwrap(), (65536, None));
        assert!(!reader.at_frame_boundary());
    }
}
