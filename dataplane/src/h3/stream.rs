//! One request stream (RFC 9114 §4.1), sans-IO: the frames of a
//! bidirectional stream in the order HTTP/3 allows them — a HEADERS (the
//! head), DATA, optional trailing HEADERS, end — turned into events. The
//! stream's bytes go in as QUIC delivers them; the head comes out as QPACK
//! field lines, body bytes as they arrive.

use super::error::{Code, H3Error};
use super::frame::{Frame, FrameReader};
use super::qpack::{self, Field};

/// What a request stream said.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEvent<'a> {
    /// The head (request or response), decoded, in wire order. Interim
    /// responses (1xx) come as heads too; the caller tells them apart.
    Head(Vec<Field>),
    /// Body bytes (for an extended CONNECT: the tunnel's bytes or capsules).
    Data(&'a [u8]),
    /// Trailers.
    Trailers(Vec<Field>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing yet, or only interim (1xx) heads.
    BeforeHead,
    Body,
    AfterTrailers,
}

/// The receiving half of one request stream.
#[derive(Debug)]
pub struct RequestStream {
    frames: FrameReader,
    phase: Phase,
    max_field_section: u64,
    /// The server side reads requests: a client never sends PUSH_PROMISE.
    server: bool,
}

impl RequestStream {
    /// `max_field_section`: the SETTINGS_MAX_FIELD_SECTION_SIZE this side
    /// advertised.
    pub fn new(max_field_section: u64) -> RequestStream {
        RequestStream { frames: FrameReader::new(max_field_section), phase: Phase::BeforeHead, max_field_section, server: false }
    }

    /// A request stream read by the server.
    pub fn server(max_field_section: u64) -> RequestStream {
        RequestStream { server: true, ..RequestStream::new(max_field_section) }
    }

    /// A head just returned was interim (1xx): another head follows.
    pub fn interim_head(&mut self) {
        self.phase = Phase::BeforeHead;
    }

    /// Consumes bytes from the front of `buf` and returns how many, with the
    /// event they completed, if any; call again with the rest.
    pub fn read<'a>(&mut self, buf: &'a [u8]) -> Result<(usize, Option<StreamEvent<'a>>), H3Error> {
        let (n, frame) = self.frames.read(buf)?;
        let event = match frame {
            None | Some(Frame::Unknown(_)) => None,
            Some(Frame::Headers(block)) => {
                let fields = qpack::decode(&block, self.max_field_section)?;
                match self.phase {
                    Phase::BeforeHead => {
                        self.phase = Phase::Body;
                        Some(StreamEvent::Head(fields))
                    }
                    Phase::Body => {
                        self.phase = Phase::AfterTrailers;
                        Some(StreamEvent::Trailers(fields))
                    }
                    Phase::AfterTrailers => {
                        return Err(H3Error::connection(Code::FRAME_UNEXPECTED, "HEADERS after trailers"));
                    }
                }
            }
            Some(Frame::Data(bytes)) => match self.phase {
                Phase::Body => Some(StreamEvent::Data(bytes)),
                Phase::BeforeHead => {
                    return Err(H3Error::connection(Code::FRAME_UNEXPECTED, "DATA before HEADERS"));
                }
                Phase::AfterTrailers => {
                    return Err(H3Error::connection(Code::FRAME_UNEXPECTED, "DATA after trailers"));
                }
            },
            Some(Frame::PushPromise(_)) if self.server => {
                // RFC 9114 §7.2.5: a client must not send one.
                return Err(H3Error::connection(Code::FRAME_UNEXPECTED, "PUSH_PROMISE from a client"));
            }
            Some(Frame::PushPromise(_)) => {
                // The edge never sends MAX_PUSH_ID: no push id is valid.
                return Err(H3Error::connection(Code::ID_ERROR, "PUSH_PROMISE without MAX_PUSH_ID"));
            }
            Some(Frame::Settings(_) | Frame::Goaway(_) | Frame::MaxPushId(_) | Frame::CancelPush(_)) => {
                return Err(H3Error::connection(Code::FRAME_UNEXPECTED, "control frame on a request stream"));
            }
        };
        Ok((n, event))
    }

    /// The peer ended the stream (FIN): complete only between frames and
    /// after a head.
    pub fn finish(&self) -> Result<(), H3Error> {
        if !self.frames.at_frame_boundary() {
            return Err(H3Error::connection(Code::FRAME_ERROR, "stream ended inside a frame"));
        }
        if self.phase == Phase::BeforeHead {
            return Err(H3Error::stream(Code::REQUEST_INCOMPLETE, "stream ended before its head"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h3::frame::{encode_head, encode_headers, ty};

    fn headers(lines: &[(&str, &str)]) -> Vec<u8> {
        let mut block = Vec::new();
        qpack::encode(lines.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())), &mut block);
        let mut out = Vec::new();
        encode_headers(&block, &mut out);
        out
    }

    fn data(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_head(ty::DATA, payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        out
    }

    /// Reads `wire` in pieces of `step`; events as text, body joined.
    fn read_all(wire: &[u8], step: usize) -> Result<(Vec<String>, Vec<u8>), H3Error> {
        let mut stream = RequestStream::new(1 << 16);
        let (mut events, mut body) = (Vec::new(), Vec::new());
        for piece in wire.chunks(step) {
            let mut rest = piece;
            while !rest.is_empty() {
                let (n, event) = stream.read(rest)?;
                match event {
                    Some(StreamEvent::Data(b)) => body.extend_from_slice(b),
                    Some(e) => events.push(format!("{e:?}")),
                    None => {}
                }
                rest = &rest[n..];
            }
        }
        stream.finish()?;
        Ok((events, body))
    }

    #[test]
    fn head_body_trailers_in_any_split() {
        let mut wire = headers(&[(":method", "CONNECT"), (":protocol", "websocket")]);
        wire.extend(data(b"hello "));
        wire.extend(data(b"world"));
        wire.extend(headers(&[("x-trailer", "1")]));
        for step in 1..=wire.len() {
            let (events, body) = read_all(&wire, step).unwrap();
            assert_eq!(events.len(), 2, "step {step}");
            assert!(events[0].starts_with("Head(") && events[1].starts_with("Trailers("));
            assert_eq!(body, b"hello world");
        }
    }

    #[test]
    fn frames_out_of_order_are_connection_errors() {
        let cases: [(Vec<u8>, Code); 4] = [
            (data(b"x"), Code::FRAME_UNEXPECTED),
            ([headers(&[(":status", "200")]), headers(&[]), headers(&[])].concat(), Code::FRAME_UNEXPECTED),
            ([headers(&[(":status", "200")]), vec![0x04, 0x00]].concat(), Code::FRAME_UNEXPECTED),
            ([headers(&[(":status", "200")]), vec![0x05, 0x01, 0x00]].concat(), Code::ID_ERROR),
        ];
        for (wire, code) in cases {
            assert_eq!(read_all(&wire, wire.len()).unwrap_err().code, code, "{wire:?}");
        }
    }

    #[test]
    fn an_early_or_torn_end_is_reported() {
        let err = read_all(&[], 1).unwrap_err();
        assert_eq!(err, H3Error::stream(Code::REQUEST_INCOMPLETE, "stream ended before its head"));
        let mut torn = headers(&[(":status", "200")]);
        torn.extend(&data(b"abc")[..3]);
        assert_eq!(read_all(&torn, torn.len()).unwrap_err().code, Code::FRAME_ERROR);
    }

    #[test]
    fn an_interim_head_is_followed_by_the_final_one() {
        let mut stream = RequestStream::new(1 << 16);
        let wire = [headers(&[(":status", "103")]), headers(&[(":status", "200")])].concat();
        let mut rest = &wire[..];
        let mut heads = 0;
        while !rest.is_empty() {
            let (n, event) = stream.read(rest).unwrap();
            if let Some(StreamEvent::Head(_)) = event {
                heads += 1;
                if heads == 1 {
                    stream.interim_head();
                }
            } else {
                assert!(event.is_none(), "{event:?}");
            }
            rest = &rest[n..];
        }
        assert_eq!(heads, 2);
        stream.finish().unwrap();
    }
}
