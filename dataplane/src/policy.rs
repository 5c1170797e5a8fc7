//! The one header policy: what the edge removes from, adds to and passes
//! through in the fields it forwards, for every version pair.
//!
//! * hop-by-hop fields: the standard ones ([`HOP_BY_HOP`]) and those
//!   `Connection` names, removed before the edge adds its own;
//! * forwarding fields: `X-Forwarded-For` / `X-Forwarded-Proto`, added last;
//! * the consumed proof: `Authorization` or the token query parameter
//!   ([`strip_proof`], called by `auth` once a token is accepted);
//! * version translation: the fields that never cross it ([`is_hop_field`]:
//!   hop-by-hop, `Host`, each hop's own `Sec-WebSocket-Key/-Accept/-Version`),
//!   what a request carries on ([`request_fields`]), what an answer carries
//!   back ([`answer_fields`]), and what an opened WebSocket passes to the
//!   client's answer ([`session_answer_fields`]).

use std::net::{IpAddr, SocketAddr};

use crate::message::{Field, Headers, RequestHead};

/// Appends the client to X-Forwarded-For and sets X-Forwarded-Proto.
pub fn add_forwarding_headers(head: &mut RequestHead, client: IpAddr, scheme: &str) {
    let ip = client.to_string();
    match head
        .headers
        .iter_mut()
        .rev()
        .find(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
    {
        Some(h) => {
            h.value.extend_from_slice(b", ");
            h.value.extend_from_slice(ip.as_bytes());
        }
        None => head.append("X-Forwarded-For", ip),
    }
    head.remove("x-forwarded-proto");
    head.append("X-Forwarded-Proto", scheme);
}

/// Connection-specific fields (RFC 9110 §7.6.1, RFC 9113 §8.2.2): never
/// forwarded as received. `Transfer-Encoding` is on the list for version
/// translation; an h1 → h1 forward keeps it, because the body bytes pass
/// through with their chunked framing.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "transfer-encoding",
];

/// Whether `name` is on [`HOP_BY_HOP`].
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// The field names a request's `Connection` header lists (lower-cased),
/// other than `close` and `upgrade`: hop-by-hop for this request.
pub fn connection_options(head: &RequestHead) -> Vec<String> {
    head.tokens("connection")
        .map(|v| String::from_utf8_lossy(v).to_ascii_lowercase())
        .filter(|v| v != "close" && v != "upgrade")
        .collect()
}

/// Removes the fields a request's `Connection` header names (never the
/// framing fields: the parser refuses a request that names them), before
/// the edge adds fields of its own under any of those names.
pub fn remove_connection_options(head: &mut RequestHead) {
    for name in connection_options(head) {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "host"
        ) {
            head.remove(&name);
        }
    }
}

/// What an HTTP/1.1 upstream receives as connection options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// An upgrade: `Upgrade` kept, `Connection: Upgrade`.
    Upgrade,
    /// One request per upstream connection: `Connection: close`.
    SingleRequest,
    /// CONNECT: no connection options.
    Connect,
}

/// Prepares a request head for an HTTP/1.1 upstream, the one header policy
/// of the h1 → h1 path: the client's hop-by-hop fields go (those `Connection`
/// names, then the standard ones; never the framing fields, which the parser
/// refuses to see named there), the edge's own connection options are set,
/// and X-Forwarded-For / X-Forwarded-Proto are added last, so a client cannot
/// make the edge drop them.
pub fn prepare_h1_forward(head: &mut RequestHead, hop: Hop, client: IpAddr, scheme: &str) {
    remove_connection_options(head);
    let options = match hop {
        Hop::Upgrade => Some(&b"Upgrade"[..]),
        Hop::SingleRequest => Some(&b"close"[..]),
        Hop::Connect => None,
    };
    // The edge's own options take the place of the client's first
    // `Connection` field (order kept), or go last.
    let mut placed = false;
    head.headers.retain_mut(|h| {
        if h.name.eq_ignore_ascii_case("connection") {
            match options {
                Some(v) if !placed => {
                    h.value = v.to_vec();
                    placed = true;
                    return true;
                }
                _ => return false,
            }
        }
        let keep = h.name.eq_ignore_ascii_case("transfer-encoding")
            || (hop == Hop::Upgrade && h.name.eq_ignore_ascii_case("upgrade"));
        keep || !is_hop_by_hop(&h.name)
    });
    if let (Some(v), false) = (options, placed) {
        head.append("Connection", v);
    }
    add_forwarding_headers(head, client, scheme);
}

/// Fields that never cross a version translation: hop-by-hop
/// ([`HOP_BY_HOP`]), `Host` (it becomes `:authority` or is rebuilt from it),
/// and the WebSocket handshake fields each hop computes for itself.
pub fn is_hop_field(name: &str) -> bool {
    is_hop_by_hop(name)
        || [
            "host",
            "sec-websocket-key",
            "sec-websocket-accept",
            "sec-websocket-version",
        ]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// Fields of a request that travel on to an upstream of another version
/// (names lower-cased, as h2 requires): not [`is_hop_field`], not named by
/// `Connection` (remove those with [`remove_connection_options`] before
/// adding the edge's own fields), no `Content-Length` (the target version
/// frames the body itself).
pub fn request_fields(head: &RequestHead) -> Vec<Field> {
    let named = connection_options(head);
    head.fields()
        .iter()
        .filter(|h| !is_hop_field(&h.name) && !h.name.eq_ignore_ascii_case("content-length"))
        .filter(|h| !named.iter().any(|n| h.name.eq_ignore_ascii_case(n)))
        .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
        .collect()
}

/// Fields of an upstream's answer that travel back (names lower-cased):
/// not [`is_hop_field`]; `Content-Length` only when the body passes through
/// as it is (`keep_length`).
pub fn answer_fields<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    keep_length: bool,
) -> Vec<Field> {
    fields
        .into_iter()
        .filter(|(n, _)| !is_hop_field(n))
        .filter(|(n, _)| keep_length || !n.eq_ignore_ascii_case("content-length"))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_vec()))
        .collect()
}

/// What an opened session's answer passes to the client's answer: for a
/// WebSocket only the negotiated subprotocol and extensions (the rest of
/// each hop's handshake is its own); for CONNECT every end-to-end field.
pub fn session_answer_fields(fields: Vec<Field>, websocket: bool) -> Vec<Field> {
    if !websocket {
        return fields;
    }
    fields
        .into_iter()
        .filter(|(n, _)| n == "sec-websocket-protocol" || n == "sec-websocket-extensions")
        .collect()
}

/// Removes the proof the edge consumed (RFC 6750 style bearer token or the
/// token query parameter `param`), so it never reaches an upstream; the
/// target's other query parameters keep their order.
pub fn strip_proof(head: &mut RequestHead, param: &str) {
    head.remove("authorization");
    head.target = crate::target::strip_query_param(&head.target, param);
}

/// The first address of X-Forwarded-For (the original client, when the
/// hop that set it is trusted).
pub fn first_forwarded_for(head: &RequestHead) -> Option<IpAddr> {
    let v = std::str::from_utf8(head.get("x-forwarded-for")?).ok()?;
    let first = v.split(',').next()?.trim();
    first
        .parse::<IpAddr>()
        .ok()
        .or_else(|| first.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::h1::parse_request;

    #[test]
    fn forwarding_headers_and_single_request() {
        let (mut h, _) = parse_request(
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            4096,
        )
        .unwrap()
        .unwrap();
        assert_eq!(first_forwarded_for(&h), Some("1.2.3.4".parse().unwrap()));
        prepare_h1_forward(
            &mut h,
            Hop::SingleRequest,
            "10.0.0.1".parse().unwrap(),
            "http",
        );
        assert_eq!(h.get("x-forwarded-for"), Some(&b"1.2.3.4, 10.0.0.1"[..]));
        assert_eq!(h.get("x-forwarded-proto"), Some(&b"http"[..]));
        assert_eq!(h.get("connection"), Some(&b"close"[..]));
        assert!(h.get("x-hop").is_none());
        assert!(h.get("transfer-encoding").is_some());
    }

    #[test]
    fn a_client_cannot_make_the_edge_drop_its_own_fields() {
        let (mut h, _) = parse_request(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, X-Forwarded-For, Keep-Alive\r\nUpgrade: websocket\r\nX-Forwarded-For: 6.6.6.6\r\nKeep-Alive: 5\r\n\r\n",
            4096,
        )
        .unwrap()
        .unwrap();
        prepare_h1_forward(&mut h, Hop::Upgrade, "10.0.0.1".parse().unwrap(), "https");
        assert_eq!(h.get("x-forwarded-for"), Some(&b"10.0.0.1"[..]));
        assert_eq!(h.get("connection"), Some(&b"Upgrade"[..]));
        assert_eq!(h.get("upgrade"), Some(&b"websocket"[..]));
        assert!(h.get("keep-alive").is_none());
    }
}
