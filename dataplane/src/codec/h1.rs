//! HTTP/1.1 codec, sans-IO (RFC 9112): wire ↔ [`crate::message`].
//!
//! Server side: [`parse_request`] takes the bytes received so far and
//! returns `Ok(None)` until a whole head is there, so the caller owns
//! buffering and timeouts; on top of `httparse` it makes the checks a proxy
//! needs (one valid Host, unambiguous framing, the one authority rule of
//! [`crate::target`]) and keeps field names and order as received. Client
//! side: [`encode_request`] and [`parse_response`].

use crate::message::{Field, HeadError, Header, Headers, RequestHead, ResponseHead, MAX_HEADERS};
use crate::target::{self, parse_authority, parse_target, Port, Target, TargetError};

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
        httparse::Status::Partial if buf.len() > max => return Err(oversize(buf, max)),
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(len) if len > max => return Err(oversize(buf, max)),
        httparse::Status::Complete(len) => len,
    };
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    let mut head = RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        minor_version,
        headers: owned_headers(req.headers),
    };
    check_request(&mut head)?;
    Ok(Some((head, len)))
}

/// 414 when the request line alone does not fit in `max`, else 400.
fn oversize(buf: &[u8], max: usize) -> HeadError {
    let line_end = buf.iter().position(|&b| b == b'\n');
    if line_end.is_none_or(|end| end > max) {
        HeadError::UriTooLong(max)
    } else {
        HeadError::TooLarge(max)
    }
}

/// Request checks a proxy must make before forwarding (RFC 9112 §3.2, §6,
/// RFC 9110 §7.6.1, §8.6), and the one authority rule: an absolute-form
/// target becomes origin-form with `Host` set to its authority, so routing,
/// auth and the upstream all see the same host.
fn check_request(head: &mut RequestHead) -> Result<(), HeadError> {
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
    if let Some(v) = head.get("host") {
        let v = std::str::from_utf8(v).map_err(|_| HeadError::Host(TargetError::BadHost))?;
        parse_authority(v.trim_matches([' ', '\t']), Port::Optional).map_err(HeadError::Host)?;
    }
    check_framing(head)?;
    if head.tokens("connection").any(|t| {
        ["content-length", "transfer-encoding", "host"]
            .iter()
            .any(|f| t.eq_ignore_ascii_case(f.as_bytes()))
    }) {
        return Err(HeadError::Malformed(
            "Connection names Content-Length, Transfer-Encoding or Host",
        ));
    }
    let absolute = match parse_target(&head.method, &head.target).map_err(HeadError::Target)? {
        Target::Absolute {
            authority,
            path_and_query,
        } => Some((
            match authority.port {
                Some(p) => format!("{}:{p}", authority.host),
                None => authority.host.to_owned(),
            },
            target::origin_form(path_and_query),
        )),
        _ => None,
    };
    if let Some((authority, origin)) = absolute {
        head.target = origin;
        match head
            .headers
            .iter_mut()
            .find(|h| h.name.eq_ignore_ascii_case("host"))
        {
            Some(h) => h.value = authority.into_bytes(),
            None => head.headers.insert(
                0,
                Header {
                    name: "Host".into(),
                    value: authority.into_bytes(),
                },
            ),
        }
    }
    Ok(())
}

/// Body framing of a request: one `Transfer-Encoding` ending in a single
/// `chunked` (HTTP/1.1 only), or one `Content-Length` value (repeats of the
/// same value are merged into one field), never both (RFC 9112 §6.1-6.3).
fn check_framing(head: &mut RequestHead) -> Result<(), HeadError> {
    if head.get("transfer-encoding").is_some() {
        if head.minor_version == 0 {
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        let codings: Vec<&[u8]> = head.tokens("transfer-encoding").collect();
        let chunked = codings
            .iter()
            .filter(|c| c.eq_ignore_ascii_case(b"chunked"))
            .count();
        let last_chunked = codings
            .last()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        if chunked != 1 || !last_chunked {
            return Err(HeadError::Malformed(
                "Transfer-Encoding does not end in exactly one chunked",
            ));
        }
        if codings.len() > 1 {
            return Err(HeadError::UnsupportedCoding);
        }
        if head.get("content-length").is_some() {
            return Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        return Ok(());
    }
    let mut value: Option<Vec<u8>> = None;
    for v in head.all_values("content-length") {
        for n in v.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if n.is_empty() || n.len() > 18 || !n.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::Malformed("invalid Content-Length"));
            }
            match &value {
                Some(first) if first != n => {
                    return Err(HeadError::Malformed("conflicting Content-Length headers"))
                }
                Some(_) => {}
                None => value = Some(n.to_vec()),
            }
        }
    }
    if let Some(value) = value {
        let mut seen = false;
        head.headers.retain_mut(|h| {
            if !h.name.eq_ignore_ascii_case("content-length") {
                return true;
            }
            if seen {
                return false;
            }
            seen = true;
            h.value = value.clone();
            true
        });
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

/// Appends `fields` as HTTP/1.1 field lines.
pub fn write_fields<'a>(out: &mut Vec<u8>, fields: impl IntoIterator<Item = &'a Field>) {
    for (name, value) in fields {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
}

/// Writes `head` as an HTTP/1.1 (or 1.0) request head: request line, fields
/// in order, blank line.
pub fn encode_request(head: &RequestHead, out: &mut Vec<u8>) {
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(if head.minor_version == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    encode_fields(&head.headers, out);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::BodyFraming;

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
        encode_request(&h, &mut out);
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
                parse_request(bad, 16384).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_request(b"GET / HTTP/1.0\r\n\r\n", 16384)
            .unwrap()
            .is_some());
    }

    #[test]
    fn absolute_form_wins_over_host_and_becomes_origin_form() {
        for t in [
            "HTTP://private.localhost/x",
            "Http://private.localhost/x",
            "http://private.localhost/x",
        ] {
            let req = format!("GET {t} HTTP/1.1\r\nHost: public.localhost\r\nX: y\r\n\r\n");
            let (h, _) = parse_request(req.as_bytes(), 4096).unwrap().unwrap();
            assert_eq!(h.target, "/x");
            assert_eq!(h.host(), Some("private.localhost"));
            assert_eq!(
                h.headers
                    .iter()
                    .filter(|f| f.name.eq_ignore_ascii_case("host"))
                    .count(),
                1
            );
        }
        let (h, _) = parse_request(b"GET https://a.test:8443?q=1 HTTP/1.0\r\n\r\n", 4096)
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.target.as_str(), h.host()),
            ("/?q=1", Some("a.test:8443"))
        );
    }

    #[test]
    fn conformance_refusals() {
        let cases: &[(&[u8], u16)] = &[
            (b"GET http://user:pa55word@host/ HTTP/1.1\r\nHost: host\r\n\r\n", 400),
            (b"CONNECT user:pw@h:1 HTTP/1.1\r\nHost: h:1\r\n\r\n", 400),
            (b"CONNECT h:+19002 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            (b"GET /tun#x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length\r\nContent-Length: 3\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, Host\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: transfer-encoding\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", 400),
        ];
        for (req, status) in cases {
            let e = parse_request(req, 16384).unwrap_err();
            assert_eq!(
                e.status(),
                *status,
                "{:?}: {e}",
                String::from_utf8_lossy(req)
            );
        }
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(20_000));
        assert_eq!(
            parse_request(long.as_bytes(), 16384),
            Err(HeadError::UriTooLong(16384))
        );
        assert_eq!(
            parse_request(&long.as_bytes()[..17000], 16384),
            Err(HeadError::UriTooLong(16384))
        );
    }

    #[test]
    fn repeated_content_length_is_merged() {
        let (h, _) = parse_request(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 45\r\nX: 1\r\nContent-Length: 45, 45\r\n\r\n",
            4096,
        )
        .unwrap()
        .unwrap();
        let lengths: Vec<_> = h.all_values("content-length").collect();
        assert_eq!(lengths, vec![&b"45"[..]]);
        assert_eq!(BodyFraming::of_request(&h), BodyFraming::Length(45));
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
}
