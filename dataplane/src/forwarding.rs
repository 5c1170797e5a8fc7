//! What the edge adds to or removes from a request it forwards: the
//! X-Forwarded-* fields, the hop-by-hop fields of a single request per
//! upstream connection, and the decoded path HTTPUpgrade compares.

use std::net::{IpAddr, SocketAddr};

use crate::message::{Headers, RequestHead};

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

/// Percent-decoded path of an origin-form target, query dropped.
pub fn decoded_path(target: &str) -> String {
    let path = target.split(['?', '#']).next().unwrap_or("");
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned()
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
    fn paths_decode_like_go() {
        assert_eq!(decoded_path("/ray%2Fpath?ed=2048"), "/ray/path");
        assert_eq!(decoded_path("/x%0aFORGED"), "/x\nFORGED");
    }

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
