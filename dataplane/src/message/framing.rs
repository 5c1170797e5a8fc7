//! Where an HTTP/1.1 message body ends (RFC 9112 §6.3), sans-IO: of a
//! request, so that exactly its body goes upstream, and of a response, so
//! that a relayed answer ends the exchange. Bodies pass through undecoded.

use super::{Headers, RequestHead, ResponseHead};

/// How the end of a message body is found (RFC 9112 §6.3): of a request, so
/// that exactly its body goes upstream, and of a response, so that a relayed
/// error answer can be followed by a clean close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (1xx, 204, 304, HEAD, 2xx to CONNECT; a request without
    /// Content-Length or Transfer-Encoding).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding; tracked by [`ChunkedScanner`].
    Chunked(ChunkedScanner),
    /// Until the upstream closes (responses only).
    UntilClose,
}

impl BodyFraming {
    /// Framing of a request head that passed [`parse_request`]'s checks
    /// (one Content-Length value, or Transfer-Encoding ending in chunked).
    pub fn of_request(head: &RequestHead) -> BodyFraming {
        if head.get("transfer-encoding").is_some() {
            return BodyFraming::Chunked(ChunkedScanner::default());
        }
        match head
            .get("content-length")
            .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
        {
            Some(0) | None => BodyFraming::Empty,
            Some(n) => BodyFraming::Length(n),
        }
    }

    /// Framing of `resp`, the answer to a request with `method`.
    pub fn of_response(method: &str, resp: &ResponseHead) -> BodyFraming {
        if method == "HEAD" || resp.status < 200 || resp.status == 204 || resp.status == 304 {
            return BodyFraming::Empty;
        }
        if method == "CONNECT" && (200..300).contains(&resp.status) {
            return BodyFraming::Empty;
        }
        if resp.has_token("transfer-encoding", "chunked") {
            return BodyFraming::Chunked(ChunkedScanner::default());
        }
        match resp
            .get("content-length")
            .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
        {
            Some(n) => BodyFraming::Length(n),
            None => BodyFraming::UntilClose,
        }
    }

    /// Consumes body bytes from `buf`; returns how many belong to the body and
    /// whether the body is complete after them.
    pub fn advance(&mut self, buf: &[u8]) -> (usize, bool) {
        match self {
            BodyFraming::Empty => (0, true),
            BodyFraming::Length(left) => {
                let take = (*left).min(buf.len() as u64);
                *left -= take;
                (take as usize, *left == 0)
            }
            BodyFraming::Chunked(s) => s.advance(buf),
            BodyFraming::UntilClose => (buf.len(), false),
        }
    }

    /// Whether the body already ended (or never had bytes).
    pub fn is_done(&self) -> bool {
        match self {
            BodyFraming::Empty => true,
            BodyFraming::Length(left) => *left == 0,
            BodyFraming::Chunked(s) => s.state == ChunkState::Done,
            BodyFraming::UntilClose => false,
        }
    }

    /// Whether chunked framing went wrong: the end of the body cannot be
    /// known (a request must then be aborted, RFC 9112 §6.3).
    pub fn is_invalid(&self) -> bool {
        matches!(self, BodyFraming::Chunked(s) if s.state == ChunkState::Invalid)
    }
}

/// Finds the end of a chunked body without decoding it (bytes pass through).
/// Strict where parsers disagree (the chunked smuggling classes): a chunk
/// size needs at least one hex digit, only spaces/tabs may follow it before
/// `;` or CR, and a bare LF or a control byte in a size line, an extension or
/// a trailer line makes the framing invalid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkedScanner {
    state: ChunkState,
    size: u64,
    digits: u8,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    SizeWs,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
    Invalid,
}

impl ChunkedScanner {
    /// See [`BodyFraming::advance`]. Invalid framing is treated as "until
    /// close" ([`BodyFraming::is_invalid`] tells).
    pub fn advance(&mut self, buf: &[u8]) -> (usize, bool) {
        use ChunkState::*;
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            match self.state {
                Done => return (i, true),
                Invalid => return (buf.len(), false),
                Data => {
                    let take = self.size.min((buf.len() - i) as u64);
                    self.size -= take;
                    i += take as usize;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                Size => match (b as char).to_digit(16) {
                    Some(d) if self.size < (1 << 56) => {
                        self.size = self.size * 16 + d as u64;
                        self.digits = self.digits.saturating_add(1);
                    }
                    _ if self.digits == 0 => self.state = Invalid,
                    _ if b == b' ' || b == b'\t' => self.state = SizeWs,
                    _ if b == b';' => self.state = Ext,
                    _ if b == b'\r' => self.state = SizeLf,
                    _ => self.state = Invalid,
                },
                SizeWs => {
                    self.state = match b {
                        b' ' | b'\t' => SizeWs,
                        b';' => Ext,
                        b'\r' => SizeLf,
                        _ => Invalid,
                    }
                }
                Ext => {
                    self.state = match b {
                        b'\r' => SizeLf,
                        b'\t' => Ext,
                        b if b < 0x20 || b == 0x7f => Invalid,
                        _ => Ext,
                    }
                }
                SizeLf => {
                    self.state = match (b, self.size) {
                        (b'\n', 0) => TrailerStart,
                        (b'\n', _) => Data,
                        _ => Invalid,
                    }
                }
                DataCr => self.state = if b == b'\r' { DataLf } else { Invalid },
                DataLf => {
                    self.state = if b == b'\n' {
                        self.size = 0;
                        self.digits = 0;
                        Size
                    } else {
                        Invalid
                    }
                }
                TrailerStart => {
                    self.state = match b {
                        b'\r' => EndLf,
                        b'\n' => Invalid,
                        _ => TrailerLine,
                    }
                }
                TrailerLine => {
                    self.state = match b {
                        b'\r' => TrailerLf,
                        b'\n' => Invalid,
                        _ => TrailerLine,
                    }
                }
                TrailerLf => self.state = if b == b'\n' { TrailerStart } else { Invalid },
                EndLf => {
                    self.state = if b == b'\n' { Done } else { Invalid };
                }
            }
            i += 1;
        }
        (i, self.state == Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_scanner_refuses_what_parsers_disagree_on() {
        for bad in [
            &b"\r\n"[..],                     // no size digits
            b";ext\r\n",                      // no size digits
            b"5\nhello\r\n0\r\n\r\n",         // bare LF after the size
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",  // bare LF in an extension
            b"5 6\r\nhello",                  // junk after the size
            b"5\r\nhelloX\r\n",               // data longer than the size
            b"0\r\nTrailer: a\nX: b\r\n\r\n", // bare LF in a trailer
            b"0\r\n\n",                       // bare LF ending the trailers
        ] {
            let mut s = ChunkedScanner::default();
            s.advance(bad);
            assert_eq!(
                s.state,
                ChunkState::Invalid,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut s = ChunkedScanner::default();
        assert!(s.advance(b"5 ;x=\"a b\"\r\nhello\r\n0\r\n\r\n").1);
    }

    #[test]
    fn chunked_scanner_finds_the_end_in_any_split() {
        let body = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let end = body.len() - 4;
        for split in 0..body.len() {
            let mut s = ChunkedScanner::default();
            let (a, done_a) = s.advance(&body[..split]);
            assert_eq!(a, split.min(end));
            if done_a {
                assert!(split >= end);
                continue;
            }
            let (b, done) = s.advance(&body[split..]);
            assert!(done, "split {split}");
            assert_eq!(a + b, end);
        }
    }
}
