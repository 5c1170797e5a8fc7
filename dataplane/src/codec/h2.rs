//! HTTP/2 codec: an h2 request's pseudo-headers and fields as the
//! version-neutral [`RequestHead`] (RFC 9113 §8.3), and a message as an h2
//! request for an h2c upstream. The `h2` crate does framing and HPACK;
//! this is the part above it. Sans-IO.
//!
//! The authority is `:authority`, else `Host` (RFC 9113 §8.3.1); both
//! present and naming different hosts is malformed. It is checked by the
//! same authority parser as HTTP/1.1 (no userinfo, a valid host and port)
//! and becomes the head's one `Host` field, so routing, auth and every
//! upstream version read it from one place.

use crate::message::{HeadError, Header, RequestHead};

/// Largest DATA frame the edge accepts, as server and as client: 16 KiB
/// frames cost a header and a wake-up each, which dominates a bulk
/// stream's CPU.
pub const MAX_FRAME: u32 = 256 * 1024;
use crate::target;

/// The stream's request as a head. `extended`: an RFC 8441 CONNECT (it
/// has a `:path`; a plain CONNECT's target is its authority).
pub fn request_head(
    parts: &http::request::Parts,
    extended: bool,
) -> Result<RequestHead, HeadError> {
    let hosts = parts
        .headers
        .get_all(http::header::HOST)
        .iter()
        .map(|v| v.to_str().map_err(|_| HeadError::Host(target::TargetError::BadHost)))
        .collect::<Result<Vec<&str>, HeadError>>()?;
    let fields = parts
        .headers
        .iter()
        .filter(|(name, _)| *name != http::header::HOST)
        .map(|(name, value)| Header {
            name: name.as_str().to_owned(),
            value: value.as_bytes().to_vec(),
        })
        .collect();
    super::request_from_pseudo(
        super::Pseudo {
            method: parts.method.as_str(),
            authority: parts.uri.authority().map(|a| a.as_str()),
            path: Some(parts.uri.path_and_query().map_or("/", |p| p.as_str())),
            extended,
        },
        &hosts,
        fields,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::Intent;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn authority_from_pseudo_or_host() {
        let h = request_head(&parts("GET", "https://a.test/x?q", &[]), false).unwrap();
        assert_eq!((h.host(), h.target.as_str()), (Some("a.test"), "/x?q"));
        let h = request_head(&parts("GET", "/x", &[("host", "b.test")]), false).unwrap();
        assert_eq!(h.host(), Some("b.test"));
        let h = request_head(
            &parts("GET", "https://a.test:443/", &[("host", "A.test")]),
            false,
        )
        .unwrap();
        assert_eq!(h.host(), Some("a.test:443"));
        assert!(request_head(
            &parts("GET", "https://a.test/", &[("host", "b.test")]),
            false
        )
        .is_err());
        assert!(request_head(&parts("GET", "/", &[("host", "a"), ("host", "a")]), false).is_err());
        assert!(request_head(&parts("GET", "https://u@a.test/", &[]), false).is_err());
    }

    #[test]
    fn connect_targets() {
        let h = request_head(&parts("CONNECT", "example.com:443", &[]), false).unwrap();
        assert_eq!(
            crate::intent::classify_extended(&h, None).unwrap(),
            Intent::Connect {
                authority: "example.com:443".into()
            }
        );
        let h = request_head(&parts("CONNECT", "example.com:0", &[]), false).unwrap();
        assert!(crate::intent::classify_extended(&h, None).is_err());
        let h = request_head(&parts("CONNECT", "https://a.test/chat", &[]), true).unwrap();
        assert_eq!(
            crate::intent::classify_extended(&h, Some("websocket")).unwrap(),
            Intent::WebSocket
        );
        assert!(crate::intent::classify_extended(&h, Some("x")).is_err());
    }
}
