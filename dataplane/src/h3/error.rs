//! HTTP/3 error codes (RFC 9114 §8.1, RFC 9204 §6, RFC 9297 §5.2) and the
//! typed errors of this layer. Each error says whether it ends the whole
//! connection (CONNECTION_CLOSE with the code) or one stream (RESET_STREAM /
//! STOP_SENDING with the code), and why, for the log line.

use std::fmt;

/// An application error code carried by CONNECTION_CLOSE, RESET_STREAM or
/// STOP_SENDING.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(pub u64);

impl Code {
    pub const NO_ERROR: Code = Code(0x100);
    pub const GENERAL_PROTOCOL_ERROR: Code = Code(0x101);
    pub const INTERNAL_ERROR: Code = Code(0x102);
    pub const STREAM_CREATION_ERROR: Code = Code(0x103);
    pub const CLOSED_CRITICAL_STREAM: Code = Code(0x104);
    pub const FRAME_UNEXPECTED: Code = Code(0x105);
    pub const FRAME_ERROR: Code = Code(0x106);
    pub const EXCESSIVE_LOAD: Code = Code(0x107);
    pub const ID_ERROR: Code = Code(0x108);
    pub const SETTINGS_ERROR: Code = Code(0x109);
    pub const MISSING_SETTINGS: Code = Code(0x10a);
    pub const REQUEST_REJECTED: Code = Code(0x10b);
    pub const REQUEST_CANCELLED: Code = Code(0x10c);
    pub const REQUEST_INCOMPLETE: Code = Code(0x10d);
    pub const MESSAGE_ERROR: Code = Code(0x10e);
    pub const CONNECT_ERROR: Code = Code(0x10f);
    pub const VERSION_FALLBACK: Code = Code(0x110);
    pub const QPACK_DECOMPRESSION_FAILED: Code = Code(0x200);
    pub const QPACK_ENCODER_STREAM_ERROR: Code = Code(0x201);
    pub const QPACK_DECODER_STREAM_ERROR: Code = Code(0x202);
    pub const DATAGRAM_ERROR: Code = Code(0x33);

    /// The registered name, for logs.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Code::NO_ERROR => "H3_NO_ERROR",
            Code::GENERAL_PROTOCOL_ERROR => "H3_GENERAL_PROTOCOL_ERROR",
            Code::INTERNAL_ERROR => "H3_INTERNAL_ERROR",
            Code::STREAM_CREATION_ERROR => "H3_STREAM_CREATION_ERROR",
            Code::CLOSED_CRITICAL_STREAM => "H3_CLOSED_CRITICAL_STREAM",
            Code::FRAME_UNEXPECTED => "H3_FRAME_UNEXPECTED",
            Code::FRAME_ERROR => "H3_FRAME_ERROR",
            Code::EXCESSIVE_LOAD => "H3_EXCESSIVE_LOAD",
            Code::ID_ERROR => "H3_ID_ERROR",
            Code::SETTINGS_ERROR => "H3_SETTINGS_ERROR",
            Code::MISSING_SETTINGS => "H3_MISSING_SETTINGS",
            Code::REQUEST_REJECTED => "H3_REQUEST_REJECTED",
            Code::REQUEST_CANCELLED => "H3_REQUEST_CANCELLED",
            Code::REQUEST_INCOMPLETE => "H3_REQUEST_INCOMPLETE",
            Code::MESSAGE_ERROR => "H3_MESSAGE_ERROR",
            Code::CONNECT_ERROR => "H3_CONNECT_ERROR",
            Code::VERSION_FALLBACK => "H3_VERSION_FALLBACK",
            Code::QPACK_DECOMPRESSION_FAILED => "QPACK_DECOMPRESSION_FAILED",
            Code::QPACK_ENCODER_STREAM_ERROR => "QPACK_ENCODER_STREAM_ERROR",
            Code::QPACK_DECODER_STREAM_ERROR => "QPACK_DECODER_STREAM_ERROR",
            Code::DATAGRAM_ERROR => "H3_DATAGRAM_ERROR",
            _ => return None,
        })
    }

    /// Reserved codes 0x1f * N + 0x21 (RFC 9114 §8.1): greased, to be
    /// treated as unknown.
    #[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` is newer than rust-version
    pub fn is_grease(self) -> bool {
        self.0 >= 0x21 && (self.0 - 0x21) % 0x1f == 0
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} (0x{:x})", self.0),
            None => write!(f, "0x{:x}", self.0),
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What a protocol error ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// CONNECTION_CLOSE: every stream of the connection.
    Connection,
    /// RESET_STREAM and STOP_SENDING on this stream only.
    Stream,
}

/// A peer broke the protocol: the code to send, what it ends, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct H3Error {
    pub code: Code,
    pub scope: Scope,
    pub reason: &'static str,
}

impl H3Error {
    pub fn connection(code: Code, reason: &'static str) -> H3Error {
        H3Error { code, scope: Scope::Connection, reason }
    }

    pub fn stream(code: Code, reason: &'static str) -> H3Error {
        H3Error { code, scope: Scope::Stream, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_print_their_registered_names() {
        assert_eq!(Code::MESSAGE_ERROR.to_string(), "H3_MESSAGE_ERROR (0x10e)");
        assert_eq!(Code(0x1234).to_string(), "0x1234");
    }

    #[test]
    fn grease_codes_are_recognised() {
        assert!(Code(0x21).is_grease());
        assert!(Code(0x21 + 0x1f * 7).is_grease());
        assert!(!Code::NO_ERROR.is_grease());
        assert!(!Code(0x20).is_grease());
    }
}
