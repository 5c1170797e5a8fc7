//! Codecs: each HTTP version's wire format ↔ the version-neutral
//! [`crate::message`], server and client side, and nothing else (no I/O, no
//! routing, no policy).
//!
//! | version | server side (downstream) | client side (upstream) |
//! |---|---|---|
//! | HTTP/1.1 | [`h1::parse_request`] | [`h1::encode_request`], [`h1::parse_response`] |
//! | HTTP/2 | [`h2::request_head`] (the `h2` crate does the framing) | [`h2::request`] |
//! | HTTP/3 | [`h3::request_head`] (the `h3` module does frames and QPACK) | next |

pub mod h1;
pub mod h2;
// Used by the HTTP/3 driver (issue 12), next; until then by its tests.
#[allow(dead_code)]
pub mod h3;

use crate::message::{HeadError, Header, RequestHead};
use crate::target::{self, parse_authority, Port};

/// An h2 or h3 request's control data, as its framing gives it.
pub struct Pseudo<'a> {
    pub method: &'a str,
    /// `:authority`.
    pub authority: Option<&'a str>,
    /// `:path` (absent on a plain CONNECT).
    pub path: Option<&'a str>,
    /// An extended CONNECT (RFC 8441 / RFC 9220): it has a `:path`; a plain
    /// CONNECT's target is its authority.
    pub extended: bool,
}

/// The version-neutral head of an h2 or h3 request. The authority is
/// `:authority`, else `Host` (RFC 9113 §8.3.1, RFC 9114 §4.3.1); both
/// present and naming different hosts is malformed. It is checked by the
/// same authority parser as HTTP/1.1 (no userinfo, a valid host and port)
/// and becomes the head's one `Host` field, first, so routing, auth and
/// every upstream version read it from one place. `hosts`: the request's
/// `Host` fields; `fields`: every other regular field, in order.
pub fn request_from_pseudo(
    pseudo: Pseudo<'_>,
    hosts: &[&str],
    fields: Vec<Header>,
) -> Result<RequestHead, HeadError> {
    if hosts.len() > 1 {
        return Err(HeadError::Malformed("more than one Host header"));
    }
    let authority = match (pseudo.authority, hosts.first().copied()) {
        (Some(a), Some(h)) => {
            let (pa, ph) = (
                parse_authority(a, Port::Optional).map_err(HeadError::Host)?,
                parse_authority(h, Port::Optional).map_err(HeadError::Host)?,
            );
            let same_port = pa.port.is_none() || ph.port.is_none() || pa.port == ph.port;
            if !pa.host.eq_ignore_ascii_case(ph.host) || !same_port {
                return Err(HeadError::Malformed(
                    ":authority and Host name different hosts",
                ));
            }
            a
        }
        (Some(a), None) => a,
        (None, Some(h)) => h,
        (None, None) => "",
    };
    parse_authority(authority, Port::Optional).map_err(HeadError::Host)?;
    let method = pseudo.method;
    let target = if method == "CONNECT" && !pseudo.extended {
        authority.to_owned()
    } else {
        let t = pseudo.path.ok_or(HeadError::Malformed("no :path"))?.to_owned();
        // Origin form (or `*` for OPTIONS), the same rule as HTTP/1.1; an
        // extended CONNECT's :path is checked like a GET's.
        let form_of = if pseudo.extended { "GET" } else { method };
        match target::parse_target(form_of, &t).map_err(HeadError::Target)? {
            target::Target::Origin | target::Target::Asterisk => t,
            _ => return Err(HeadError::Target(target::TargetError::WrongForm)),
        }
    };
    let mut headers = Vec::with_capacity(fields.len() + 1);
    headers.push(Header {
        name: "host".into(),
        value: authority.as_bytes().to_vec(),
    });
    headers.extend(fields);
    Ok(RequestHead {
        method: method.to_owned(),
        target,
        minor_version: 1,
        headers,
    })
}
