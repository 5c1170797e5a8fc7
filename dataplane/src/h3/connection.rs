//! The connection-level half of HTTP/3, sans-IO: the unidirectional
//! streams (RFC 9114 §6.2) — the peer's control stream with its SETTINGS and
//! GOAWAY, its QPACK encoder and decoder streams (RFC 9204 §4.2), pushes and
//! unknown types — and what this side opens in return. Request streams are
//! [`super::stream::RequestStream`]s, driven by the caller.
//!
//! The caller feeds every unidirectional stream's bytes with the stream's id
//! and polls [`Connection::poll_event`]; an error ends the connection with
//! its code (CONNECTION_CLOSE), except where the error says a stream.

use std::collections::{HashMap, VecDeque};

use super::error::{Code, H3Error};
use super::frame::{self, Frame, FrameReader};
use super::qpack::prefixed_int;
use super::settings::Settings;
use super::varint;

/// Unidirectional stream types (RFC 9114 §6.2, RFC 9204 §4.2).
pub mod stream_type {
    pub const CONTROL: u64 = 0x00;
    pub const PUSH: u64 = 0x01;
    pub const QPACK_ENCODER: u64 = 0x02;
    pub const QPACK_DECODER: u64 = 0x03;
    /// WebTransport unidirectional stream (its session id follows).
    pub const WEBTRANSPORT: u64 = 0x54;
}

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Server,
    Client,
}

/// What the peer's unidirectional streams said.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// The peer's SETTINGS (always the first event of its control stream).
    Settings(Settings),
    /// The peer will not process streams (server) or pushes (client) from
    /// this id on.
    Goaway(u64),
    /// A stream of a type this layer does not handle (extension or GREASE):
    /// the caller stops reading it (STOP_SENDING H3_STREAM_CREATION_ERROR).
    Unknown { stream_id: u64, stream_type: u64 },
    /// A WebTransport unidirectional stream: `rest` are the bytes that
    /// followed its type; everything after them is the caller's (this layer
    /// ignores the stream from here on).
    WebTransport { stream_id: u64, rest: Vec<u8> },
}

#[derive(Debug)]
enum Uni {
    /// The stream type is not complete yet.
    Typing(Vec<u8>),
    Control(FrameReader, bool),
    QpackEncoder(Vec<u8>),
    QpackDecoder(Vec<u8>),
    /// Ignored from here on (unknown, or handed to the caller).
    Ignored,
}

/// One HTTP/3 connection's control state.
#[derive(Debug)]
pub struct Connection {
    side: Side,
    local: Settings,
    peer: Option<Settings>,
    uni: HashMap<u64, Uni>,
    have_control: bool,
    have_encoder: bool,
    have_decoder: bool,
    peer_goaway: Option<u64>,
    /// A client's highest MAX_PUSH_ID (server side).
    peer_max_push_id: Option<u64>,
    events: VecDeque<Event>,
}

impl Connection {
    /// `local`: the SETTINGS this side sends (QPACK capacity must be 0).
    pub fn new(side: Side, local: Settings) -> Connection {
        Connection {
            side,
            local,
            peer: None,
            uni: HashMap::new(),
            have_control: false,
            have_encoder: false,
            have_decoder: false,
            peer_goaway: None,
            peer_max_push_id: None,
            events: VecDeque::new(),
        }
    }

    /// What this side writes first on its own control stream: the stream
    /// type and SETTINGS.
    pub fn control_preface(&self) -> Vec<u8> {
        let mut out = vec![stream_type::CONTROL as u8];
        // Settings are this side's own values, all far below 2^62.
        let _ = self.local.encode(&mut out);
        out
    }

    /// The peer's SETTINGS, once received.
    pub fn peer_settings(&self) -> Option<&Settings> {
        self.peer.as_ref()
    }

    /// The lowest GOAWAY id the peer sent, if any.
    pub fn peer_goaway(&self) -> Option<u64> {
        self.peer_goaway
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes of the peer's unidirectional stream `stream_id`; `fin`: the
    /// stream ended after them.
    pub fn handle_uni(&mut self, stream_id: u64, mut data: &[u8], fin: bool) -> Result<(), H3Error> {
        let mut state = self.uni.remove(&stream_id).unwrap_or(Uni::Typing(Vec::new()));
        if let Uni::Typing(typed) = &mut state {
            let before = typed.len();
            typed.extend_from_slice(&data[..data.len().min(8 - before)]);
            match varint::decode(typed) {
                None => {
                    if fin {
                        // A stream that ends before its type: nothing to do.
                        return Ok(());
                    }
                    self.uni.insert(stream_id, state);
                    return Ok(());
                }
                Some((kind, n)) => {
                    data = &data[n - before..];
                    state = self.open_uni(stream_id, kind, data)?;
                }
            }
        }
        let critical = matches!(state, Uni::Control(..) | Uni::QpackEncoder(_) | Uni::QpackDecoder(_));
        match &mut state {
            Uni::Control(reader, got_settings) => {
                let mut rest = data;
                while !rest.is_empty() {
                    let (n, frame) = reader.read(rest)?;
                    if let Some(frame) = frame {
                        self.control_frame(frame, got_settings)?;
                    }
                    rest = &rest[n..];
                }
            }
            Uni::QpackEncoder(pending) => {
                pending.extend_from_slice(data);
                encoder_instructions(pending)?;
            }
            Uni::QpackDecoder(pending) => {
                pending.extend_from_slice(data);
                decoder_instructions(pending)?;
            }
            Uni::Typing(_) | Uni::Ignored => {}
        }
        if fin && critical {
            return Err(H3Error::connection(Code::CLOSED_CRITICAL_STREAM, "a critical stream ended"));
        }
        if !fin {
            self.uni.insert(stream_id, state);
        }
        Ok(())
    }

    /// The peer reset one of its unidirectional streams.
    pub fn reset_uni(&mut self, stream_id: u64) -> Result<(), H3Error> {
        match self.uni.remove(&stream_id) {
            Some(Uni::Control(..) | Uni::QpackEncoder(_) | Uni::QpackDecoder(_)) => {
                Err(H3Error::connection(Code::CLOSED_CRITICAL_STREAM, "a critical stream was reset"))
            }
            _ => Ok(()),
        }
    }

    fn open_uni(&mut self, stream_id: u64, kind: u64, rest: &[u8]) -> Result<Uni, H3Error> {
        let once = |seen: &mut bool| {
            if std::mem::replace(seen, true) {
                Err(H3Error::connection(Code::STREAM_CREATION_ERROR, "a second critical stream of one type"))
            } else {
                Ok(())
            }
        };
        Ok(match kind {
            stream_type::CONTROL => {
                once(&mut self.have_control)?;
                Uni::Control(FrameReader::new(64 * 1024), false)
            }
            stream_type::QPACK_ENCODER => {
                once(&mut self.have_encoder)?;
                Uni::QpackEncoder(Vec::new())
            }
            stream_type::QPACK_DECODER => {
                once(&mut self.have_decoder)?;
                Uni::QpackDecoder(Vec::new())
            }
            stream_type::PUSH => {
                // Clients only accept pushes they allowed with MAX_PUSH_ID,
                // which the edge never sends; servers never accept them.
                return Err(H3Error::connection(Code::STREAM_CREATION_ERROR, "push stream"));
            }
            stream_type::WEBTRANSPORT => {
                self.events.push_back(Event::WebTransport { stream_id, rest: rest.to_vec() });
                Uni::Ignored
            }
            _ => {
                self.events.push_back(Event::Unknown { stream_id, stream_type: kind });
                Uni::Ignored
            }
        })
    }

    fn control_frame(&mut self, frame: Frame<'_>, got_settings: &mut bool) -> Result<(), H3Error> {
        if !*got_settings {
            let Frame::Settings(settings) = frame else {
                return Err(H3Error::connection(Code::MISSING_SETTINGS, "control stream did not start with SETTINGS"));
            };
            *got_settings = true;
            self.peer = Some(settings.clone());
            self.events.push_back(Event::Settings(settings));
            return Ok(());
        }
        match frame {
            Frame::Goaway(id) => {
                // From a server, the id is a client-initiated bidirectional
                // stream id; it may only decrease.
                if self.side == Side::Client && id % 4 != 0 {
                    return Err(H3Error::connection(Code::ID_ERROR, "GOAWAY id is not a request stream"));
                }
                if self.peer_goaway.is_some_and(|prev| id > prev) {
                    return Err(H3Error::connection(Code::ID_ERROR, "GOAWAY id increased"));
                }
                self.peer_goaway = Some(id);
                self.events.push_back(Event::Goaway(id));
            }
            // We never push, but the client's push ids must still make
            // sense (RFC 9114 §7.2.7, §7.2.3).
            Frame::MaxPushId(id) if self.side == Side::Server => {
                if self.peer_max_push_id.is_some_and(|prev| id < prev) {
                    return Err(H3Error::connection(Code::ID_ERROR, "MAX_PUSH_ID decreased"));
                }
                self.peer_max_push_id = Some(id);
            }
            Frame::CancelPush(id) if self.side == Side::Server => {
                if self.peer_max_push_id.is_none_or(|max| id > max) {
                    return Err(H3Error::connection(Code::ID_ERROR, "CANCEL_PUSH of a push id above MAX_PUSH_ID"));
                }
            }
            // A server's CANCEL_PUSH names a push we never allowed.
            Frame::CancelPush(_) => {
                return Err(H3Error::connection(Code::ID_ERROR, "CANCEL_PUSH without MAX_PUSH_ID"));
            }
            Frame::Unknown(_) => {}
            Frame::Settings(_) => {
                return Err(H3Error::connection(Code::FRAME_UNEXPECTED, "a second SETTINGS"));
            }
            Frame::MaxPushId(_) | Frame::Data(_) | Frame::Headers(_) | Frame::PushPromise(_) => {
                return Err(H3Error::connection(Code::FRAME_UNEXPECTED, "frame not allowed on the control stream"));
            }
        }
        Ok(())
    }
}

/// The peer's encoder stream, with this side's dynamic table capacity at
/// 0: only "Set Dynamic Table Capacity 0" fits; an insert cannot.
fn encoder_instructions(pending: &mut Vec<u8>) -> Result<(), H3Error> {
    let error = |why| H3Error::connection(Code::QPACK_ENCODER_STREAM_ERROR, why);
    let mut at = 0;
    while let Some(&first) = pending.get(at) {
        if first & 0xe0 != 0x20 {
            return Err(error("insert into a dynamic table of capacity 0"));
        }
        match prefixed_int(&pending[at..], 5) {
            None => break,
            Some(Err(())) => return Err(error("integer too large")),
            Some(Ok((0, n))) => at += n,
            Some(Ok(_)) => return Err(error("dynamic table capacity above the advertised 0")),
        }
    }
    pending.drain(..at);
    Ok(())
}

/// The peer's decoder stream. This side never references the dynamic
/// table, so there is nothing to acknowledge: a Section Acknowledgment or an
/// Insert Count Increment is an error; Stream Cancellations are fine.
fn decoder_instructions(pending: &mut Vec<u8>) -> Result<(), H3Error> {
    let error = |why| H3Error::connection(Code::QPACK_DECODER_STREAM_ERROR, why);
    let mut at = 0;
    while let Some(&first) = pending.get(at) {
        if first & 0xc0 != 0x40 {
            return Err(error("acknowledgment of a field section that used no dynamic table"));
        }
        match prefixed_int(&pending[at..], 6) {
            None => break,
            Some(Err(())) => return Err(error("integer too large")),
            Some(Ok((_, n))) => at += n,
        }
    }
    pending.drain(..at);
    Ok(())
}

/// Appends a GOAWAY for this side's control stream.
pub fn goaway(id: u64, out: &mut Vec<u8>) -> Result<(), varint::TooLarge> {
    frame::encode_goaway(id, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h3::settings::id;

    fn server() -> Connection {
        let mut s = Settings::default();
        s.set(id::ENABLE_CONNECT_PROTOCOL, 1);
        Connection::new(Side::Server, s)
    }

    fn peer_control(settings: &Settings) -> Vec<u8> {
        Connection::new(Side::Client, settings.clone()).control_preface()
    }

    #[test]
    fn the_peers_settings_arrive_in_any_split() {
        let mut theirs = Settings::default();
        theirs.set(id::H3_DATAGRAM, 1);
        theirs.set(0x2b60_3742, 1);
        let wire = peer_control(&theirs);
        for step in 1..=wire.len() {
            let mut conn = server();
            for piece in wire.chunks(step) {
                conn.handle_uni(2, piece, false).unwrap();
            }
            assert_eq!(conn.poll_event(), Some(Event::Settings(theirs.clone())), "step {step}");
            assert!(conn.peer_settings().is_some_and(Settings::h3_datagram));
        }
    }

    #[test]
    fn control_stream_violations_close_the_connection() {
        let settings = peer_control(&Settings::default());
        let mut goaway_up = settings.clone();
        goaway(4, &mut goaway_up).unwrap();
        goaway(8, &mut goaway_up).unwrap();
        let mut data_on_control = settings.clone();
        data_on_control.extend([0x00, 0x01, 0xaa]);
        let cases: [(&[u8], bool, Code); 5] = [
            (&[0x00, 0x07, 0x01, 0x00], false, Code::MISSING_SETTINGS),
            (&[settings.clone(), settings[1..].to_vec()].concat(), false, Code::FRAME_UNEXPECTED),
            (&data_on_control, false, Code::FRAME_UNEXPECTED),
            (&settings, true, Code::CLOSED_CRITICAL_STREAM),
            (&[0x01], false, Code::STREAM_CREATION_ERROR),
        ];
        for (wire, fin, code) in cases {
            let err = server().handle_uni(2, wire, fin).unwrap_err();
            assert_eq!(err.code, code, "{wire:?}");
        }
        // As a client: a server's GOAWAY may not increase.
        let mut client = Connection::new(Side::Client, Settings::default());
        assert_eq!(client.handle_uni(3, &goaway_up, false).unwrap_err().code, Code::ID_ERROR);
        assert_eq!(client.peer_goaway(), Some(4));
    }

    #[test]
    fn a_second_control_stream_and_a_reset_critical_stream_are_errors() {
        let wire = peer_control(&Settings::default());
        let mut conn = server();
        conn.handle_uni(2, &wire, false).unwrap();
        assert_eq!(conn.handle_uni(6, &wire, false).unwrap_err().code, Code::STREAM_CREATION_ERROR);
        assert_eq!(conn.reset_uni(2).unwrap_err().code, Code::CLOSED_CRITICAL_STREAM);
    }

    #[test]
    fn qpack_streams_accept_only_what_capacity_0_allows() {
        let mut conn = server();
        // Encoder stream: "Set Dynamic Table Capacity 0", twice, split.
        conn.handle_uni(10, &[0x02, 0x20], false).unwrap();
        conn.handle_uni(10, &[0x20], false).unwrap();
        // Decoder stream: a Stream Cancellation.
        conn.handle_uni(14, &[0x03, 0x44], false).unwrap();
        let cases: [(&[u8], Code); 4] = [
            (&[0x02, 0x3f, 0xe1, 0x1f], Code::QPACK_ENCODER_STREAM_ERROR), // capacity 4096
            (&[0x02, 0xc0 | 17, 0x01, b'x'], Code::QPACK_ENCODER_STREAM_ERROR), // insert
            (&[0x03, 0x84], Code::QPACK_DECODER_STREAM_ERROR), // section ack
            (&[0x03, 0x01], Code::QPACK_DECODER_STREAM_ERROR), // insert count increment
        ];
        for (wire, code) in cases {
            assert_eq!(server().handle_uni(10, wire, false).unwrap_err().code, code, "{wire:?}");
        }
    }

    #[test]
    fn unknown_and_webtransport_streams_are_handed_on() {
        let mut conn = server();
        conn.handle_uni(18, &[0x21, 1, 2, 3], false).unwrap();
        conn.handle_uni(18, &[4, 5], true).unwrap();
        conn.handle_uni(22, &[0x40, 0x54, 0x00], false).unwrap();
        assert_eq!(conn.poll_event(), Some(Event::Unknown { stream_id: 18, stream_type: 0x21 }));
        assert_eq!(conn.poll_event(), Some(Event::WebTransport { stream_id: 22, rest: vec![0x00] }));
        assert_eq!(conn.poll_event(), None);
    }
}
