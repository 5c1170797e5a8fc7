//! HTTP/3 codec: a request's QPACK field lines as the version-neutral
//! [`RequestHead`] (RFC 9114 §4.3.1, RFC 9220 §3). The `h3` module does
//! frames and QPACK; unlike HTTP/2, where the `h2` crate checks the fields,
//! the checks of RFC 9114 §4.2 and §4.3 are made here. A request that fails
//! one is malformed: a stream error H3_MESSAGE_ERROR, or a 400 (the caller
//! chooses). Sans-IO.

use crate::h3;
use crate::message::{HeadError, Header, RequestHead, ResponseHead};

use super::{request_from_pseudo, Pseudo};

/// Connection-specific fields (RFC 9114 §4.2): malformed in HTTP/3.
const CONNECTION_SPECIFIC: [&str; 5] = ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"];

/// A request head and its `:protocol` (extended CONNECT), if any.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub head: RequestHead,
    pub protocol: Option<String>,
}

fn is_tchar_lower(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

fn text<'a>(value: &'a [u8], what: &'static str) -> Result<&'a str, HeadError> {
    std::str::from_utf8(value).map_err(|_| HeadError::Malformed(what))
}

/// A regular field's name, checked (RFC 9114 §4.2): a lowercase token, not
/// connection-specific, TE only as `trailers`.
fn regular_name<'a>(name: &'a [u8], value: &[u8]) -> Result<&'a str, HeadError> {
    if name.is_empty() || !name.iter().all(|b| is_tchar_lower(*b)) {
        return Err(HeadError::Malformed("field name not a lowercase token"));
    }
    // Checked as a token just above: ASCII.
    let name = text(name, "field name not a lowercase token")?;
    if CONNECTION_SPECIFIC.contains(&name) {
        return Err(HeadError::Malformed("connection-specific field"));
    }
    if name == "te" && value != b"trailers" {
        return Err(HeadError::Malformed("TE other than trailers"));
    }
    Ok(name)
}

/// The request in `fields` (decoded QPACK lines, in order). `extended_ok`:
/// this side advertised SETTINGS_ENABLE_CONNECT_PROTOCOL.
pub fn request_head(fields: &[(Vec<u8>, Vec<u8>)], extended_ok: bool) -> Result<Request, HeadError> {
    let (mut method, mut scheme, mut authority, mut path, mut protocol) = (None, None, None, None, None);
    let mut hosts = Vec::new();
    let mut regular = Vec::with_capacity(fields.len());
    for (name, value) in fields {
        if value.iter().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
            return Err(HeadError::Malformed("NUL, CR or LF in a field value"));
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            if !regular.is_empty() || !hosts.is_empty() {
                return Err(HeadError::Malformed("pseudo-header after a regular field"));
            }
            let slot = match pseudo {
                b"method" => &mut method,
                b"scheme" => &mut scheme,
                b"authority" => &mut authority,
                b"path" => &mut path,
                b"protocol" => &mut protocol,
                _ => return Err(HeadError::Malformed("unknown pseudo-header")),
            };
            if slot.replace(text(value, "pseudo-header is not text")?).is_some() {
                return Err(HeadError::Malformed("repeated pseudo-header"));
            }
            continue;
        }
        let name = regular_name(name, value)?;
        if name == "host" {
            hosts.push(text(value, "Host is not text")?);
            continue;
        }
        regular.push(Header { name: name.to_owned(), value: value.clone() });
    }
    let method = method.ok_or(HeadError::Malformed("no :method"))?;
    let extended = method == "CONNECT" && protocol.is_some();
    if protocol.is_some() && !(extended && extended_ok) {
        return Err(HeadError::Malformed(":protocol without extended CONNECT"));
    }
    if method == "CONNECT" && !extended {
        // RFC 9114 §4.4: :authority only.
        if scheme.is_some() || path.is_some() || authority.is_none() {
            return Err(HeadError::Malformed("CONNECT with :scheme or :path, or without :authority"));
        }
    } else {
        if scheme.is_none() || !matches!(path, Some(p) if !p.is_empty()) {
            return Err(HeadError::Malformed("no :scheme or :path"));
        }
        if matches!(scheme, Some("http" | "https")) && authority.is_none() && hosts.is_empty() {
            return Err(HeadError::Malformed("no :authority or Host"));
        }
    }
    content_length(&regular)?;
    let head = request_from_pseudo(Pseudo { method, authority, path, extended }, &hosts, regular)?;
    Ok(Request { head, protocol: protocol.map(str::to_owned) })
}

/// The request's `content-length`, checked (RFC 9114 §4.1.2, RFC 9110
/// §8.6): digits only, every value the same. The body is then held to it
/// (`downstream::h3::forward`): a body of another length is malformed.
pub fn content_length(fields: &[Header]) -> Result<Option<u64>, HeadError> {
    let mut length = None;
    for h in fields.iter().filter(|h| h.name.eq_ignore_ascii_case("content-length")) {
        let v = &h.value;
        if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
            return Err(HeadError::Malformed("invalid content-length"));
        }
        let n: u64 = text(v, "invalid content-length")?.parse().map_err(|_| HeadError::Malformed("invalid content-length"))?;
        if length.is_some_and(|l| l != n) {
            return Err(HeadError::Malformed("conflicting content-length values"));
        }
        length = Some(n);
    }
    Ok(length)
}

/// Trailer fields (RFC 9114 §4.1.2, §4.3): no pseudo-headers, the same
/// name rules as the head; a trailer section that breaks them makes the
/// message malformed.
pub fn check_trailers(fields: &[(Vec<u8>, Vec<u8>)]) -> Result<(), HeadError> {
    for (name, value) in fields {
        if name.starts_with(b":") {
            return Err(HeadError::Malformed("pseudo-header in trailers"));
        }
        if value.iter().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
            return Err(HeadError::Malformed("NUL, CR or LF in a field value"));
        }
        regular_name(name, value)?;
    }
    Ok(())
}

/// A response head from its field lines (client side: an h3 upstream's
/// answer). `:status` exactly once and first, three digits; the regular
/// fields as for requests.
pub fn response_head(fields: &[(Vec<u8>, Vec<u8>)]) -> Result<ResponseHead, HeadError> {
    let mut lines = fields.iter();
    let status = match lines.next() {
        Some((name, value)) if name.as_slice() == b":status" => value,
        _ => return Err(HeadError::Malformed("no :status first")),
    };
    let status = text(status, "invalid :status")?;
    let status: u16 = match status.parse() {
        Ok(code @ 100..=599) if status.len() == 3 => code,
        _ => return Err(HeadError::Malformed("invalid :status")),
    };
    let mut headers = Vec::with_capacity(fields.len());
    for (name, value) in lines {
        if name.starts_with(b":") {
            return Err(HeadError::Malformed("pseudo-header other than one :status"));
        }
        if value.iter().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
            return Err(HeadError::Malformed("NUL, CR or LF in a field value"));
        }
        let name = regular_name(name, value)?;
        headers.push(Header { name: name.to_owned(), value: value.clone() });
    }
    Ok(ResponseHead { status, reason: String::new(), minor_version: 1, headers })
}

/// Whether a field of a version-neutral head travels in HTTP/3: not
/// connection-specific, not `host` (it becomes `:authority`), TE only as
/// `trailers`.
fn travels(field: &Header) -> bool {
    let name = field.name.to_ascii_lowercase();
    match name.as_str() {
        "host" => false,
        "te" => field.value.as_slice() == b"trailers",
        n => !CONNECTION_SPECIFIC.contains(&n),
    }
}

/// Appends one HEADERS frame: the pseudo-headers, then the head's fields
/// that travel in HTTP/3, names lowercased.
fn encode_head(pseudo: &[(&[u8], &[u8])], headers: &[Header], out: &mut Vec<u8>) {
    let names: Vec<String> = headers.iter().map(|h| h.name.to_ascii_lowercase()).collect();
    let fields = pseudo.iter().copied().chain(
        headers
            .iter()
            .zip(&names)
            .filter(|(h, _)| travels(h))
            .map(|(h, n)| (n.as_bytes(), h.value.as_slice())),
    );
    let mut block = Vec::new();
    h3::qpack::encode(fields, &mut block);
    h3::frame::encode_headers(&block, out);
}

/// Appends a response as one HEADERS frame (names lowercased; fields that
/// have no meaning in HTTP/3 dropped).
pub fn encode_response(head: &ResponseHead, out: &mut Vec<u8>) {
    let status = head.status.to_string();
    encode_head(&[(b":status", status.as_bytes())], &head.headers, out);
}

/// Appends a request for an h3 upstream as one HEADERS frame: `:method`,
/// `:scheme https`, `:authority` (the head's Host), `:path` unless a plain
/// CONNECT, `:protocol` on an extended CONNECT, then the fields.
pub fn encode_request(head: &RequestHead, protocol: Option<&str>, out: &mut Vec<u8>) {
    let authority = head.host().unwrap_or("");
    let plain_connect = head.method == "CONNECT" && protocol.is_none();
    let mut pseudo: Vec<(&[u8], &[u8])> = vec![(b":method", head.method.as_bytes())];
    if let Some(p) = protocol {
        pseudo.push((b":protocol", p.as_bytes()));
    }
    if !plain_connect {
        pseudo.push((b":scheme", b"https"));
    }
    pseudo.push((b":authority", authority.as_bytes()));
    if !plain_connect {
        pseudo.push((b":path", head.target.as_bytes()));
    }
    encode_head(&pseudo, &head.headers, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::{classify_extended, Intent};
    use crate::message::Headers;

    #[test]
    fn content_length_is_digits_and_one_value() {
        let h = |v: &str| Header { name: "content-length".into(), value: v.as_bytes().to_vec() };
        assert_eq!(content_length(&[h("5")]), Ok(Some(5)));
        assert_eq!(content_length(&[h("5"), h("5")]), Ok(Some(5)));
        assert_eq!(content_length(&[]), Ok(None));
        for bad in [vec![h("3x")], vec![h("")], vec![h("-1")], vec![h("5"), h("6")], vec![h("99999999999999999999")]] {
            assert!(content_length(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn trailers_take_no_pseudo_headers_and_lowercase_names() {
        assert!(check_trailers(&lines(&[("x-checksum", "abc")])).is_ok());
        assert!(check_trailers(&lines(&[(":path", "/")])).is_err());
        assert!(check_trailers(&lines(&[("X-Checksum", "abc")])).is_err());
        assert!(check_trailers(&lines(&[("connection", "close")])).is_err());
    }

    fn lines(fields: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        fields.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn an_rfc_9220_websocket_request_is_a_websocket_intent() {
        let r = request_head(
            &lines(&[
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":scheme", "https"),
                (":authority", "ws.example:8443"),
                (":path", "/chat?token=abc"),
                ("sec-websocket-version", "13"),
                ("cookie", "a=1"),
                ("cookie", "b=2"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(r.protocol.as_deref(), Some("websocket"));
        assert_eq!((r.head.host(), r.head.target.as_str()), (Some("ws.example:8443"), "/chat?token=abc"));
        assert_eq!(r.head.all_values("cookie").count(), 2);
        assert_eq!(classify_extended(&r.head, r.protocol.as_deref()).unwrap(), Intent::WebSocket);
    }

    #[test]
    fn a_plain_connect_targets_its_authority() {
        let r = request_head(&lines(&[(":method", "CONNECT"), (":authority", "example.com:443")]), true).unwrap();
        assert_eq!(
            classify_extended(&r.head, None).unwrap(),
            Intent::Connect { authority: "example.com:443".into() }
        );
    }

    #[test]
    fn malformed_requests_are_refused_with_a_reason() {
        let get = [(":method", "GET"), (":scheme", "https"), (":authority", "a.test"), (":path", "/")];
        let with = |extra: &[(&'static str, &'static str)]| [&get[..], extra].concat();
        let cases: Vec<(Vec<(&'static str, &'static str)>, &str)> = vec![
            (with(&[("Upper", "x")]), "field name not a lowercase token"),
            (with(&[("connection", "close")]), "connection-specific field"),
            (with(&[("transfer-encoding", "chunked")]), "connection-specific field"),
            (with(&[("te", "gzip")]), "TE other than trailers"),
            (with(&[("x-a", "1\r\nx-b: 2")]), "NUL, CR or LF in a field value"),
            (vec![get[0], get[1], ("x-a", "1"), get[2], get[3]], "pseudo-header after a regular field"),
            (with(&[(":path", "/again")]), "repeated pseudo-header"),
            (vec![get[0], get[0], get[1], get[2], get[3]], "repeated pseudo-header"),
            (vec![(":status", "200")], "unknown pseudo-header"),
            (vec![get[1], get[2], get[3]], "no :method"),
            (vec![get[0], get[1], get[2]], "no :scheme or :path"),
            (vec![get[0], get[1], get[3]], "no :authority or Host"),
            (vec![(":method", "CONNECT"), (":authority", "a:1"), (":path", "/")], "CONNECT with :scheme or :path, or without :authority"),
            (vec![(":method", "GET"), (":protocol", "websocket"), get[1], get[2], get[3]], ":protocol without extended CONNECT"),
        ];
        for (fields, why) in cases {
            assert_eq!(request_head(&lines(&fields), true), Err(HeadError::Malformed(why)), "{fields:?}");
        }
        // Extended CONNECT when this side did not advertise it.
        let ws = [(":method", "CONNECT"), (":protocol", "websocket"), get[1], get[2], get[3]];
        assert_eq!(request_head(&lines(&ws), false), Err(HeadError::Malformed(":protocol without extended CONNECT")));
    }

    #[test]
    fn authority_and_host_must_agree() {
        let base = [(":method", "GET"), (":scheme", "https"), (":path", "/")];
        let r = request_head(&lines(&[&base[..], &[("host", "b.test")]].concat()), true).unwrap();
        assert_eq!(r.head.host(), Some("b.test"));
        let clash = [&base[..], &[(":authority", "a.test")][..]].concat();
        let clash = [&clash[..], &[("host", "b.test")][..]].concat();
        assert!(request_head(&lines(&clash), true).is_err());
        let userinfo = [&base[..], &[(":authority", "u@a.test")][..]].concat();
        assert!(request_head(&lines(&userinfo), true).is_err());
    }

    /// Reads the one HEADERS frame in `wire` back into field lines.
    fn decoded(wire: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut reader = h3::frame::FrameReader::new(1 << 16);
        let (n, none) = reader.read(wire).unwrap();
        assert!(none.is_none());
        match reader.read(&wire[n..]).unwrap() {
            (_, Some(h3::frame::Frame::Headers(block))) => h3::qpack::decode(&block, 1 << 16).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_request_encodes_for_an_h3_upstream_and_parses_back() {
        let mut head = request_head(
            &lines(&[
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":scheme", "https"),
                (":authority", "ws.example"),
                (":path", "/chat"),
                ("x-a", "1"),
            ]),
            true,
        )
        .unwrap()
        .head;
        head.headers.push(Header { name: "Connection".into(), value: b"upgrade".to_vec() });
        head.headers.push(Header { name: "te".into(), value: b"trailers".to_vec() });
        let mut wire = Vec::new();
        encode_request(&head, Some("websocket"), &mut wire);
        let again = request_head(&decoded(&wire), true).unwrap();
        assert_eq!(again.head, {
            let mut h = head.clone();
            h.headers.retain(|f| f.name != "Connection");
            h
        });
        assert_eq!(again.protocol.as_deref(), Some("websocket"));
        // A plain CONNECT carries :authority only.
        let connect = request_head(&lines(&[(":method", "CONNECT"), (":authority", "a.test:443")]), true).unwrap();
        let mut wire = Vec::new();
        encode_request(&connect.head, None, &mut wire);
        assert_eq!(decoded(&wire), lines(&[(":method", "CONNECT"), (":authority", "a.test:443")]));
    }

    #[test]
    fn responses_encode_and_parse_with_their_checks() {
        let head = ResponseHead {
            status: 200,
            reason: "OK".into(),
            minor_version: 1,
            headers: vec![
                Header { name: "Sec-WebSocket-Protocol".into(), value: b"chat".to_vec() },
                Header { name: "Upgrade".into(), value: b"websocket".to_vec() },
            ],
        };
        let mut wire = Vec::new();
        encode_response(&head, &mut wire);
        let fields = decoded(&wire);
        assert_eq!(fields, lines(&[(":status", "200"), ("sec-websocket-protocol", "chat")]));
        let back = response_head(&fields).unwrap();
        assert_eq!((back.status, back.headers.len()), (200, 1));
        for (bad, why) in [
            (lines(&[("x-a", "1")]), "no :status first"),
            (lines(&[(":status", "20")]), "invalid :status"),
            (lines(&[(":status", "700")]), "invalid :status"),
            (lines(&[(":status", "200"), (":path", "/")]), "pseudo-header other than one :status"),
            (lines(&[(":status", "200"), ("Upper", "1")]), "field name not a lowercase token"),
        ] {
            assert_eq!(response_head(&bad), Err(HeadError::Malformed(why)), "{bad:?}");
        }
    }
}
