//! HTTP/1.1 message heads, sans-IO (RFC 9112).
//!
//! [`parse_request`] and [`parse_response`] take the bytes received so far and
//! return `Ok(None)` until a whole head is there, so the caller owns buffering
//! and timeouts. Parsing is `httparse`'s; this module adds the limits and the
//! checks a proxy needs on top (one Host, no Content-Length/Transfer-Encoding
//! ambiguity), and keeps header names and order exactly as received, because
//! the edge forwards heads unchanged except for the headers it owns.

use std::fmt;

/// Most header fields accepted in one head.
pub const MAX_HEADERS: usize = 128;

/// One header field as received: name case and order preserved.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    /// Field name, as sent.
    pub name: String,
    /// Field value bytes (not necessarily UTF-8).
    pub value: Vec<u8>,
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_credential(&self.name) {
            write!(f, "{}: <redacted>", self.name)
        } else {
            write!(f, "{}: {}", self.name, String::from_utf8_lossy(&self.value))
        }
    }
}

/// Header fields whose values never appear in logs.
pub fn is_credential(name: &str) -> bool {
    name.eq_ignore_ascii_case("authorization")
        || name.eq_ignore_ascii_case("proxy-authorization")
        || name.eq_ignore_ascii_case("cookie")
}

/// A request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Method, e.g. `GET`, `CONNECT`.
    pub method: String,
    /// Request target as sent (origin-, absolute- or authority-form).
    pub target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Header fields in order.
    pub headers: Vec<Header>,
}

/// A response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Reason phrase as sent.
    pub reason: String,
    /// Minor version.
    pub minor_version: u8,
    /// Header fields in order.
    pub headers: Vec<Header>,
}

/// Why a head was refused. Every variant answers 400 on h1 (DESIGN §5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// Larger than the configured limit.
    #[error("head larger than {0} bytes")]
    TooLarge(usize),
    /// More than [`MAX_HEADERS`] fields.
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    /// Not valid HTTP/1.x syntax.
    #[error("malformed head: {0}")]
    Malformed(&'static str),
}

fn map_httparse(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::HeaderName => HeadError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
        httparse::Error::Status => HeadError::Malformed("invalid status"),
        httparse::Error::Token => HeadError::Malformed("invalid token in request line"),
        httparse::Error::Version => HeadError::Malformed("invalid HTTP version"),
    }
}

fn owned_headers(hs: &[httparse::Header<'_>]) -> Vec<Header> {
    hs.iter()
        .map(|h| Header {
            name: h.name.to_owned(),
            value: h.value.to_vec(),
        })
        .collect()
}

/// Parses a request head at the start of `buf`.
///
/// Returns the head and its length in bytes (what follows belongs to the body
/// or the upgraded stream), `Ok(None)` if more bytes are needed, or an error.
/// `max` bounds the head; an incomplete head already longer than `max` fails.
pub fn parse_request(buf: &[u8], max: usize) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage);
    let status = req.parse(buf).map_err(map_httparse)?;
    let len = match status {
        httparse::Status::Partial if buf.len() > max => return Err(HeadError::TooLarge(max)),
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(len) if len > max => return Err(HeadError::TooLarge(max)),
        httparse::Status::Complete(len) => len,
    };
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    let head = RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        minor_version,
        headers: owned_headers(req.headers),
    };
    check_request(&head)?;
    Ok(Some((head, len)))
}

/// Request checks a proxy must make before forwarding (RFC 9112 §3.2, §6.3).
fn check_request(head: &RequestHead) -> Result<(), HeadError> {
    let hosts = head
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .count();
    if hosts > 1 {
        return Err(HeadError::Malformed("more than one Host header"));
    }
    if hosts == 0 && head.minor_version == 1 {
        return Err(HeadError::Malformed("missing Host header"));
    }
    let te = head.get("transfer-encoding").is_some();
    let mut lengths = head
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| h.value.as_slice());
    if let Some(first) = lengths.next() {
        if te {
            return Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if first.is_empty() || !first.iter().all(u8::is_ascii_digit) || first.len() > 18 {
            return Err(HeadError::Malformed("invalid Content-Length"));
        }
        if lengths.any(|other| other != first) {
            return Err(HeadError::Malformed("conflicting Content-Length headers"));
        }
    }
    if head.method == "CONNECT" && (head.target.starts_with('/') || head.target.contains("://")) {
        return Err(HeadError::Malformed("CONNECT target is not host:port"));
    }
    Ok(())
}

/// Parses a response head at the start of `buf` (the upstream's answer).
pub fn parse_response(buf: &[u8], max: usize) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut storage);
    let len = match resp.parse(buf).map_err(map_httparse)? {
        httparse::Status::Partial if buf.len() > max => return Err(HeadError::TooLarge(max)),
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(len) => len,
    };
    let (Some(status), Some(minor_version)) = (resp.code, resp.version) else {
        return Err(HeadError::Malformed("incomplete status line"));
    };
    Ok(Some((
        ResponseHead {
            status,
            reason: resp.reason.unwrap_or("").to_owned(),
            minor_version,
            headers: owned_headers(resp.headers),
        },
        len,
    )))
}

/// Header-map helpers shared by request and response heads.
pub trait Headers {
    /// The fields.
    fn fields(&self) -> &[Header];

    /// First value of `name` (case-insensitive).
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields()
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// Whether the comma-separated values of `name` contain `token`
    /// (case-insensitive), e.g. `Connection: keep-alive, Upgrade`.
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.fields()
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .any(|v| v.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    }
}

impl Headers for RequestHead {
    fn fields(&self) -> &[Header] {
        &self.headers
    }
}

impl Headers for ResponseHead {
    fn fields(&self) -> &[Header] {
        &self.headers
    }
}

impl RequestHead {
    /// Removes every field named `name`; returns how many were removed.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.headers.len();
        self.headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
        before - self.headers.len()
    }

    /// Appends a field at the end.
    pub fn append(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.headers.push(Header {
            name: name.to_owned(),
            value: value.into(),
        });
    }

    /// The Host the request is for: the authority of an absolute-form target,
    /// else the Host header (RFC 9112 §3.2.2).
    pub fn host(&self) -> Option<&str> {
        if let Some(rest) = self
            .target
            .strip_prefix("http://")
            .or_else(|| self.target.strip_prefix("https://"))
        {
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            return Some(&rest[..end]);
        }
        self.get("host").and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Serializes the head (request line, fields in order, blank line).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(if self.minor_version == 0 {
            b" HTTP/1.0\r\n"
        } else {
            b" HTTP/1.1\r\n"
        });
        encode_fields(&self.headers, out);
    }
}

fn encode_fields(headers: &[Header], out: &mut Vec<u8>) {
    for h in headers {
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How the end of a response body is found (RFC 9112 §6.3), so that a
/// relayed error response can be followed by a clean close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (1xx, 204, 304, HEAD, 2xx to CONNECT).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding; tracked by [`ChunkedScanner`].
    Chunked(ChunkedScanner),
    /// Until the upstream closes.
    UntilClose,
}

impl BodyFraming {
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
}

/// Finds the end of a chunked body without decoding it (bytes pass through).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkedScanner {
    state: ChunkState,
    size: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
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
    /// See [`BodyFraming::advance`]. Invalid framing is treated as "until close".
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
                    Some(d) if self.size < (1 << 56) => self.size = self.size * 16 + d as u64,
                    _ if b == b';' || b == b' ' || b == b'\t' => self.state = Ext,
                    _ if b == b'\r' => self.state = SizeLf,
                    _ => self.state = Invalid,
                },
                Ext => {
                    if b == b'\r' {
                        self.state = SizeLf;
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
                        Size
                    } else {
                        Invalid
                    }
                }
                TrailerStart => self.state = if b == b'\r' { EndLf } else { TrailerLine },
                TrailerLine => {
                    if b == b'\r' {
                        self.state = TrailerLf;
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

    const WS: &[u8] = b"GET /chat?x=1 HTTP/1.1\r\nHost: Chat.Example:8080\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-CuStom: a\r\n\r\nEARLY";

    #[test]
    fn parses_in_every_split_and_keeps_case_and_order() {
        let end = WS.len() - 5;
        for i in 0..end {
            assert_eq!(parse_request(&WS[..i], 16384), Ok(None), "prefix {i}");
        }
        let (h, len) = parse_request(WS, 16384).unwrap().unwrap();
        assert_eq!(len, end);
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, "/chat?x=1");
        assert_eq!(h.headers[4].name, "X-CuStom");
        assert!(h.has_token("connection", "upgrade"));
        assert_eq!(h.host(), Some("Chat.Example:8080"));
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(out, &WS[..end]);
    }

    #[test]
    fn limits_and_malformed() {
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "a".repeat(20000)
        );
        assert_eq!(
            parse_request(big.as_bytes(), 16384),
            Err(HeadError::TooLarge(16384))
        );
        assert_eq!(
            parse_request(&big.as_bytes()[..17000], 16384),
            Err(HeadError::TooLarge(16384))
        );
        let many: String = (0..200).map(|i| format!("X{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert_eq!(
            parse_request(many.as_bytes(), 1 << 20),
            Err(HeadError::TooManyHeaders)
        );
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"CONNECT /path HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert!(
                matches!(parse_request(bad, 16384), Err(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_request(b"GET / HTTP/1.0\r\n\r\n", 16384)
            .unwrap()
            .is_some());
    }

    #[test]
    fn response_and_framing() {
        let (r, len) = parse_response(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nDATA",
            16384,
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.status, len), (101, 56));
        let (r, _) = parse_response(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\n",
            16384,
        )
        .unwrap()
        .unwrap();
        let mut f = BodyFraming::of_response("GET", &r);
        assert_eq!(f.advance(b"abc"), (3, false));
        assert_eq!(f.advance(b"defg"), (2, true));
        let (r, _) = parse_response(b"HTTP/1.1 200 OK\r\n\r\n", 16384)
            .unwrap()
            .unwrap();
        assert_eq!(BodyFraming::of_response("CONNECT", &r), BodyFraming::Empty);
        assert_eq!(BodyFraming::of_response("GET", &r), BodyFraming::UntilClose);
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
