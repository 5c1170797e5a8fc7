//! Request targets and authorities, sans-IO (RFC 9112 §3.2, RFC 9110 §4.2,
//! §7.2, RFC 3986 §3.2).
//!
//! One rule for "which host is this request for", whatever the downstream
//! version: an absolute-form target (`http://` or `https://`, any case) wins
//! over `Host` (RFC 9112 §3.2.2), and the edge forwards the request in origin
//! form with `Host` set to the authority it routed on, so the upstream can
//! never be told about a different host than the one that was authorised.
//!
//! ```text
//! CONNECT  host:port          authority-form   (port 1..=65535 required)
//! OPTIONS  *                  asterisk-form
//! other    /path?query        origin-form      (kept)
//!          http://a/path?q    absolute-form    → target "/path?q", Host "a"
//! ```
//!
//! Strict on purpose: userinfo (`user:pw@`) is an error (RFC 9110 §4.2.4),
//! so are fragments, non-ASCII bytes, signs or more than five digits in a
//! port, and host characters outside RFC 3986's unreserved set. Written by
//! hand because the `http` crate's `Uri` accepts userinfo and `+port`-style
//! inputs we must refuse, and drops fragments silently.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Why a request target or authority is refused (400, or a stream error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// `#` in a request target (not part of any request-target form).
    #[error("request target contains a fragment")]
    Fragment,
    /// A byte outside visible ASCII.
    #[error("request target contains a byte outside visible ASCII")]
    BadByte,
    /// Absolute form with a scheme other than http/https, or without `//`.
    #[error("absolute-form target is not an http or https URI")]
    Scheme,
    /// `user@` or `user:password@` in an authority.
    #[error("userinfo in an authority")]
    Userinfo,
    /// Host is not a DNS name, IPv4 address or bracketed IPv6 address.
    #[error("invalid host in an authority")]
    BadHost,
    /// Port is not 1 to 5 digits with a value of at most 65535 (or is 0
    /// where a target port is needed).
    #[error("invalid port in an authority")]
    BadPort,
    /// CONNECT target without `:port`.
    #[error("CONNECT target is not host:port")]
    MissingPort,
    /// The form is not allowed for the method (e.g. CONNECT with a path).
    #[error("request target form not allowed for this method")]
    WrongForm,
}

/// Whether an authority must carry a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// `Host` / `:authority`: optional, an empty port counts as none.
    Optional,
    /// CONNECT target: required, 1..=65535.
    Required,
}

/// A checked authority: `host[:port]`, no userinfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authority<'a> {
    /// Host as sent (IPv6 with its brackets); may be empty for `Host:` only.
    pub host: &'a str,
    /// Port, if one was given.
    pub port: Option<u16>,
}

/// Parses an authority (RFC 3986 §3.2 without userinfo).
pub fn parse_authority(s: &str, port_rule: Port) -> Result<Authority<'_>, TargetError> {
    if s.bytes().any(|b| b == b'@') {
        return Err(TargetError::Userinfo);
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or(TargetError::BadHost)?;
        rest[..end]
            .parse::<Ipv6Addr>()
            .map_err(|_| TargetError::BadHost)?;
        let after = &rest[end + 1..];
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(TargetError::BadHost)?),
        };
        (&s[..end + 2], port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if !host.starts_with('[') && !host.bytes().all(is_reg_name_byte) {
        return Err(TargetError::BadHost);
    }
    let port = match port {
        None | Some("") if port_rule == Port::Required => return Err(TargetError::MissingPort),
        None | Some("") => None,
        Some(p) => Some(parse_port(p, port_rule)?),
    };
    if host.is_empty() && (port.is_some() || port_rule == Port::Required) {
        return Err(TargetError::BadHost);
    }
    Ok(Authority { host, port })
}

/// unreserved (RFC 3986 §2.3): what DNS names and IPv4 literals use.
fn is_reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn parse_port(p: &str, rule: Port) -> Result<u16, TargetError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TargetError::BadPort);
    }
    let n: u32 = p.parse().map_err(|_| TargetError::BadPort)?;
    match u16::try_from(n) {
        Ok(0) if rule == Port::Required => Err(TargetError::BadPort),
        Ok(port) => Ok(port),
        Err(_) => Err(TargetError::BadPort),
    }
}

/// Normalizes a Host value: lower case, no port, no trailing dot, IPv6
/// brackets removed. `None` for an empty or malformed value.
pub fn host_key(host: &str) -> Option<String> {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        let end = rest.find(']')?;
        &rest[..end]
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            Some(_) => return None,
            None => host,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    Some(name.to_ascii_lowercase())
}

/// Where a tunnel's upstream is: an address, or a name that the core's
/// resolver looks up (off the core, `crate::resolve`) when dialing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// `ip:port` or `[ipv6]:port`.
    Addr(SocketAddr),
    /// `name:port`.
    Name {
        /// The DNS name.
        host: String,
        /// The port.
        port: u16,
    },
}

impl Upstream {
    /// Parses `host:port` (no I/O).
    pub fn parse(s: &str) -> Result<Upstream, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Upstream::Addr(a));
        }
        let a = parse_authority(s, Port::Required)
            .map_err(|e| format!("`{s}` is not host:port: {e}"))?;
        if a.host.starts_with('[') || a.host.parse::<IpAddr>().is_ok() {
            return Err(format!("`{s}` is not host:port"));
        }
        Ok(Upstream::Name {
            host: a.host.to_owned(),
            port: a.port.unwrap_or_default(),
        })
    }
}

/// A request target, checked against its method (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// `/path?query`.
    Origin,
    /// `http(s)://authority/path?query`: the authority, and the origin-form
    /// target to forward (`/` when the URI has an empty path).
    Absolute {
        /// The URI's authority (routes the request; replaces `Host`).
        authority: Authority<'a>,
        /// Path and query, without scheme and authority.
        path_and_query: &'a str,
    },
    /// CONNECT `host:port`.
    Authority(Authority<'a>),
    /// `OPTIONS *`.
    Asterisk,
}

/// Parses `target` as the request target of `method`.
pub fn parse_target<'a>(method: &str, target: &'a str) -> Result<Target<'a>, TargetError> {
    if target.is_empty() || !target.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(TargetError::BadByte);
    }
    if target.contains('#') {
        return Err(TargetError::Fragment);
    }
    if method == "CONNECT" {
        return parse_authority(target, Port::Required).map(Target::Authority);
    }
    if target == "*" {
        return if method == "OPTIONS" {
            Ok(Target::Asterisk)
        } else {
            Err(TargetError::WrongForm)
        };
    }
    if target.starts_with('/') {
        return Ok(Target::Origin);
    }
    let Some((scheme, rest)) = target.split_once("://") else {
        return Err(if target.contains(':') {
            TargetError::Scheme
        } else {
            TargetError::WrongForm
        });
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(TargetError::Scheme);
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = parse_authority(&rest[..end], Port::Optional)?;
    if authority.host.is_empty() {
        return Err(TargetError::BadHost);
    }
    Ok(Target::Absolute {
        authority,
        path_and_query: &rest[end..],
    })
}

/// The origin-form target for an absolute-form URI's path and query.
pub fn origin_form(path_and_query: &str) -> String {
    if path_and_query.starts_with('/') {
        path_and_query.to_owned()
    } else {
        format!("/{path_and_query}")
    }
}

/// The path and the query of an origin-form target.
pub fn split_query(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    }
}

/// Whether a `name=value` query pair has the (percent-decoded) name `name`.
pub fn param_name_matches(pair: &str, name: &str) -> bool {
    let key = pair.split('=').next().unwrap_or(pair);
    percent_encoding::percent_decode_str(key).decode_utf8_lossy() == name
}

/// Percent-decoded values of every `name=` parameter in the target's query.
pub fn query_values(target: &str, name: &str) -> Vec<Vec<u8>> {
    let (_, Some(q)) = split_query(target) else {
        return Vec::new();
    };
    q.split('&')
        .filter(|p| param_name_matches(p, name))
        .map(|p| {
            let v = p.split_once('=').map(|(_, v)| v).unwrap_or("");
            let v = v.replace('+', " ");
            percent_encoding::percent_decode_str(&v).collect()
        })
        .collect()
}

/// The target without any `name=` parameter; other parameters keep their order.
pub fn strip_query_param(target: &str, name: &str) -> String {
    let (path, Some(q)) = split_query(target) else {
        return target.to_owned();
    };
    let kept: Vec<&str> = q
        .split('&')
        .filter(|p| !param_name_matches(p, name))
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// Percent-decoded path of an origin-form target, query dropped.
pub fn decoded_path(target: &str) -> String {
    let path = target.split(['?', '#']).next().unwrap_or("");
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        let a = parse_authority("Example.COM:8080", Port::Optional).unwrap();
        assert_eq!((a.host, a.port), ("Example.COM", Some(8080)));
        let a = parse_authority("[::1]:443", Port::Required).unwrap();
        assert_eq!((a.host, a.port), ("[::1]", Some(443)));
        assert_eq!(
            parse_authority("[::1]", Port::Optional).unwrap().host,
            "[::1]"
        );
        assert_eq!(
            parse_authority("a.test:", Port::Optional).unwrap().port,
            None
        );
        assert_eq!(parse_authority("", Port::Optional).unwrap().host, "");
        for (bad, rule, err) in [
            ("user:pw@h:1", Port::Required, TargetError::Userinfo),
            ("user@h", Port::Optional, TargetError::Userinfo),
            ("h:+19002", Port::Required, TargetError::BadPort),
            ("h:-1", Port::Required, TargetError::BadPort),
            ("h:65536", Port::Required, TargetError::BadPort),
            ("h:000443", Port::Required, TargetError::BadPort),
            ("h:0", Port::Required, TargetError::BadPort),
            ("h", Port::Required, TargetError::MissingPort),
            ("h:", Port::Required, TargetError::MissingPort),
            (":80", Port::Optional, TargetError::BadHost),
            ("a:b:c", Port::Optional, TargetError::BadHost),
            ("a b", Port::Optional, TargetError::BadHost),
            ("a/b:1", Port::Required, TargetError::BadHost),
            ("[::1", Port::Optional, TargetError::BadHost),
            ("[zz]:1", Port::Required, TargetError::BadHost),
            ("[::1]x", Port::Optional, TargetError::BadHost),
            ("a%2eb:1", Port::Required, TargetError::BadHost),
        ] {
            assert_eq!(parse_authority(bad, rule), Err(err), "{bad}");
        }
    }

    #[test]
    fn upstreams() {
        assert_eq!(
            Upstream::parse("127.0.0.1:9000"),
            Ok(Upstream::Addr("127.0.0.1:9000".parse().unwrap()))
        );
        assert_eq!(
            Upstream::parse("[::1]:22"),
            Ok(Upstream::Addr("[::1]:22".parse().unwrap()))
        );
        assert_eq!(
            Upstream::parse("origin.internal:8080"),
            Ok(Upstream::Name {
                host: "origin.internal".into(),
                port: 8080
            })
        );
        for bad in [
            "origin",
            "origin:0",
            "a b:1",
            "u@h:1",
            "h:+1",
            "1.2.3.4:99999",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_decode_like_go() {
        assert_eq!(decoded_path("/ray%2Fpath?ed=2048"), "/ray/path");
        assert_eq!(decoded_path("/x%0aFORGED"), "/x\nFORGED");
    }

    #[test]
    fn targets() {
        assert_eq!(parse_target("GET", "/a?b=c"), Ok(Target::Origin));
        assert_eq!(parse_target("OPTIONS", "*"), Ok(Target::Asterisk));
        for t in ["HTTP://Private.Localhost/x", "Http://private.localhost/x"] {
            match parse_target("GET", t).unwrap() {
                Target::Absolute {
                    authority,
                    path_and_query,
                } => {
                    assert!(authority.host.eq_ignore_ascii_case("private.localhost"));
                    assert_eq!(path_and_query, "/x");
                }
                other => panic!("{other:?}"),
            }
        }
        let Target::Absolute { path_and_query, .. } = parse_target("GET", "https://h:1?q").unwrap()
        else {
            panic!()
        };
        assert_eq!(origin_form(path_and_query), "/?q");
        assert_eq!(origin_form(""), "/");
        for (m, t, err) in [
            ("GET", "/tun#x", TargetError::Fragment),
            ("GET", "http://user:pa55word@host/", TargetError::Userinfo),
            ("GET", "ftp://h/x", TargetError::Scheme),
            ("GET", "http:/x", TargetError::Scheme),
            ("GET", "http:///x", TargetError::BadHost),
            ("GET", "h:80", TargetError::Scheme),
            ("GET", "x", TargetError::WrongForm),
            ("GET", "*", TargetError::WrongForm),
            ("GET", "/caf\u{e9}", TargetError::BadByte),
            ("CONNECT", "/x", TargetError::BadHost),
            ("CONNECT", "user:pw@h:1", TargetError::Userinfo),
            ("CONNECT", "h:+1", TargetError::BadPort),
        ] {
            assert_eq!(parse_target(m, t), Err(err), "{m} {t}");
        }
    }
}
