//! What the downstream asked for, independent of the HTTP version (DESIGN §1).
//!
//! The h1 reader (and later h2/h3) produce a request head; [`classify`] turns
//! it into one [`Intent`]. Everything after this point (route, auth, upstream,
//! relay) is chosen by the intent, never by the downstream version.

pub use crate::h3::capsule::Protocol as SessionProtocol;
use crate::logsafe::ClientText;
use crate::message::{Headers, RequestHead};

/// The downstream's request, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// WebSocket opening handshake (RFC 6455 `Upgrade: websocket`).
    WebSocket,
    /// Any other `Upgrade:` token (first listed, lower-cased).
    Upgrade {
        /// The protocol token, e.g. `h2c`, `tls/1.3`, `my-proto`.
        token: String,
    },
    /// Plain CONNECT `host:port` (RFC 9110 §9.3.6).
    Connect {
        /// The CONNECT target; forwarded, never routed on or resolved.
        authority: String,
    },
    /// An extended CONNECT session relayed over HTTP/3 with its datagrams
    /// and streams (`:protocol` webtransport, connect-udp, connect-ip;
    /// routed by `:authority`).
    Session {
        /// Which one.
        protocol: SessionProtocol,
    },
    /// An ordinary request.
    Request,
}

/// Why a head cannot be classified (answers 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntentError {
    /// A WebSocket handshake that is not a GET over HTTP/1.1.
    #[error("WebSocket upgrade must be GET over HTTP/1.1")]
    BadWebSocketMethod,
    /// `Upgrade` listed in `Connection` but no `Upgrade` header.
    #[error("Connection: upgrade without an Upgrade header")]
    MissingUpgrade,
    /// CONNECT target is not `host:port`.
    #[error("CONNECT target is not host:port")]
    BadConnectTarget,
    /// An extended CONNECT for a `:protocol` the edge does not relay (501).
    #[error("protocol {0} is not relayed")]
    UnsupportedProtocol(ClientText),
}

/// Classifies a request head.
pub fn classify(head: &RequestHead) -> Result<Intent, IntentError> {
    if head.method == "CONNECT" {
        return connect_target(&head.target);
    }
    // RFC 9110 §7.8: Upgrade is only meaningful when listed in Connection and
    // on HTTP/1.1; otherwise the request is an ordinary one.
    if head.minor_version == 0 || !head.has_token("connection", "upgrade") {
        return Ok(Intent::Request);
    }
    let Some(value) = head.get("upgrade") else {
        return Err(IntentError::MissingUpgrade);
    };
    let first = value
        .split(|&b| b == b',')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if first.is_empty() {
        return Err(IntentError::MissingUpgrade);
    }
    let token = String::from_utf8_lossy(first).to_ascii_lowercase();
    if token == "websocket" {
        if head.method != "GET" {
            return Err(IntentError::BadWebSocketMethod);
        }
        return Ok(Intent::WebSocket);
    }
    Ok(Intent::Upgrade { token })
}

/// The one check of a plain CONNECT target, for every HTTP version:
/// `host:port` with no userinfo and a port of 1..=65535 (RFC 9110 §9.3.6).
pub fn connect_target(target: &str) -> Result<Intent, IntentError> {
    crate::target::parse_authority(target, crate::target::Port::Required)
        .map(|_| Intent::Connect {
            authority: target.to_owned(),
        })
        .map_err(|_| IntentError::BadConnectTarget)
}

/// The intent of an h2 (later h3) stream, where an upgrade is an extended
/// CONNECT with `:protocol` (RFC 8441, RFC 9220) and a plain CONNECT names
/// its target in `:authority` (RFC 9113 §8.5).
pub fn classify_extended(
    head: &RequestHead,
    protocol: Option<&str>,
) -> Result<Intent, IntentError> {
    if head.method != "CONNECT" {
        return Ok(Intent::Request);
    }
    match protocol {
        Some(p) if p.eq_ignore_ascii_case("websocket") => Ok(Intent::WebSocket),
        Some(p) => match SessionProtocol::from_token(p) {
            Some(protocol) => Ok(Intent::Session { protocol }),
            None => Err(IntentError::UnsupportedProtocol(ClientText(
                p.to_ascii_lowercase(),
            ))),
        },
        None => connect_target(&head.target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::h1::parse_request;

    fn head(s: &str) -> RequestHead {
        parse_request(s.as_bytes(), 16384).unwrap().unwrap().0
    }

    #[test]
    fn classifies() {
        let ws =
            head("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n");
        assert_eq!(classify(&ws), Ok(Intent::WebSocket));
        let other = head(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: My-Proto/2, x\r\n\r\n",
        );
        assert_eq!(
            classify(&other),
            Ok(Intent::Upgrade {
                token: "my-proto/2".into()
            })
        );
        let c = head("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
        assert_eq!(
            classify(&c),
            Ok(Intent::Connect {
                authority: "example.com:443".into()
            })
        );
        let c6 = head("CONNECT [::1]:22 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(matches!(classify(&c6), Ok(Intent::Connect { .. })));
        let plain = head("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(classify(&plain), Ok(Intent::Request));
        let v10 = head("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(classify(&v10), Ok(Intent::Request));
    }

    #[test]
    fn rejects() {
        let post =
            head("POST / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(classify(&post), Err(IntentError::BadWebSocketMethod));
        let missing = head("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n\r\n");
        assert_eq!(classify(&missing), Err(IntentError::MissingUpgrade));
        for bad in ["example.com", "user:pw@h:1", "h:+19002", "h:0"] {
            assert_eq!(
                connect_target(bad),
                Err(IntentError::BadConnectTarget),
                "{bad}"
            );
        }
    }
}
