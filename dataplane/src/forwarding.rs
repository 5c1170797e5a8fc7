//! What the edge adds to or removes from a request it forwards: the
//! X-Forwarded-* fields, the hop-by-hop fields of a single request per
//! upstream connection, and the decoded path HTTPUpgrade compares.

use std::net::{IpAddr, SocketAddr};

use crate::downstream::h1::{Headers, RequestHead};

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

/// One request per upstream connection: drop hop-by-hop fields (RFC 9110
/// §7.6.1) and ask the upstream to close after its response.
pub fn make_single_request(head: &mut RequestHead) {
    let listed: Vec<String> = head
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(|v| String::from_utf8_lossy(v.trim_ascii()).to_ascii_lowercase())
        .filter(|v| !v.is_empty() && v != "close")
        .collect();
    for name in listed.iter().map(String::as_str).chain([
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "te",
        "trailer",
    ]) {
        if !name.eq_ignore_ascii_case("transfer-encoding") {
            head.remove(name);
        }
    }
    head.append("Connection", "close");
}

/// Percent-decoded path of a request target, query dropped.
pub fn decoded_path(target: &str) -> String {
    let path = match target.find("://") {
        Some(i) => {
            let rest = &target[i + 3..];
            rest.find('/').map(|j| &rest[j..]).unwrap_or("/")
        }
        None => target,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
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
    use crate::downstream::h1::parse_request;

    #[test]
    fn paths_decode_like_go() {
        assert_eq!(decoded_path("/ray%2Fpath?ed=2048"), "/ray/path");
        assert_eq!(decoded_path("http://h:1/ray?x"), "/ray");
        assert_eq!(decoded_path("http://h:1"), "/");
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
        add_forwarding_headers(&mut h, "10.0.0.1".parse().unwrap(), "http");
        make_single_request(&mut h);
        assert_eq!(h.get("x-forwarded-for"), Some(&b"1.2.3.4, 10.0.0.1"[..]));
        assert_eq!(h.get("x-forwarded-proto"), Some(&b"http"[..]));
        assert_eq!(h.get("connection"), Some(&b"close"[..]));
        assert!(h.get("x-hop").is_none());
        assert!(h.get("transfer-encoding").is_some());
    }
}
