//! Every way a request is refused, and its one answer (DESIGN §5).
//!
//! A [`Rejection`] carries the reason (for the log line) and maps to exactly
//! one status. HTTPUpgrade tunnels in stealth mode close silently instead; the
//! pipeline decides that, because it depends on the tunnel, not the error.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::auth::AuthError;
use crate::intent::IntentError;
use crate::logsafe::ClientText;
use crate::message::HeadError;

/// Why the edge refused a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// Malformed, oversize or ambiguous head.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// Head parsed but the request makes no sense.
    #[error(transparent)]
    Intent(#[from] IntentError),
    /// Head not complete within the handshake timeout.
    #[error("request head not complete within {0:?}")]
    HeadTimeout(Duration),
    /// No tunnel serves this Host.
    #[error("no tunnel for host {0}")]
    UnknownHost(ClientText),
    /// Plain CONNECT with no SNI tunnel and no default tunnel.
    #[error("CONNECT on a connection with no tunnel (no SNI match, no default_tunnel)")]
    NoConnectTunnel,
    /// Token auth failed.
    #[error("unauthorized: {0}")]
    Auth(#[from] AuthError),
    /// Client address not in the tunnel's allowed networks.
    #[error("client {0} is not in the tunnel's allowed networks")]
    Forbidden(IpAddr),
    /// Upgrade token the tunnel does not relay.
    #[error("upgrade {0} is not allowed on this tunnel")]
    UpgradeNotAllowed(ClientText),
    /// CONNECT on a tunnel that does not relay it, or on an httpupgrade tunnel.
    #[error("CONNECT is not allowed on this tunnel")]
    ConnectNotAllowed,
    /// HTTPUpgrade: the decoded path is not the tunnel's.
    #[error("httpupgrade: path {0} is not the tunnel's path")]
    WrongPath(ClientText),
    /// HTTPUpgrade: not `Connection: upgrade` + `Upgrade: websocket`.
    #[error("httpupgrade: request is not an upgrade to websocket")]
    NotUpgrade,
    /// Could not connect to the upstream.
    #[error("upstream {addr} unreachable: {reason}")]
    UpstreamUnreachable {
        /// The address tried last.
        addr: String,
        /// The OS error.
        reason: String,
    },
    /// Upstream did not connect or answer in time.
    #[error("upstream {addr} did not answer within {after:?}")]
    UpstreamTimeout {
        /// The upstream.
        addr: String,
        /// The limit that ran out.
        after: Duration,
    },
    /// Upstream answered with something that is not an HTTP response head.
    #[error("upstream sent an invalid answer: {0}")]
    UpstreamBadAnswer(String),
    /// h2: a proxy request (plain CONNECT) on a connection that carried
    /// reverse-proxy requests, or the other way round (DESIGN §1).
    #[error("{0} on a connection already used for the other kind of request")]
    Misdirected(&'static str),
    /// A request body over the forwarding limit.
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    /// A request this edge cannot carry toward this tunnel's upstream.
    #[error("not supported: {0}")]
    NotSupported(String),
}

impl Rejection {
    /// The status this rejection answers with on HTTP/1.1.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::Head(e) => e.status(),
            Rejection::Intent(_) => 400,
            Rejection::HeadTimeout(_) => 408,
            Rejection::UnknownHost(_) | Rejection::NoConnectTunnel | Rejection::WrongPath(_) => 404,
            Rejection::Auth(_) => 401,
            Rejection::Forbidden(_) => 403,
            Rejection::NotUpgrade => 426,
            Rejection::UpgradeNotAllowed(_)
            | Rejection::ConnectNotAllowed
            | Rejection::NotSupported(_) => 501,
            Rejection::Misdirected(_) => 421,
            Rejection::BodyTooLarge(_) => 413,
            Rejection::UpstreamUnreachable { .. } | Rejection::UpstreamBadAnswer(_) => 502,
            Rejection::UpstreamTimeout { .. } => 504,
        }
    }

    /// Whether the upstream is at fault (for counters).
    pub fn is_upstream(&self) -> bool {
        matches!(self.status(), 502 | 504)
    }

    /// The complete HTTP/1.1 answer; the connection is closed after it.
    pub fn answer(&self) -> Vec<u8> {
        let status = self.status();
        let reason = reason_phrase(status);
        let body = format!("{status} {reason}\n");
        let mut extra = String::new();
        match self {
            Rejection::Auth(_) => extra.push_str("WWW-Authenticate: Bearer\r\n"),
            Rejection::NotUpgrade => extra.push_str("Upgrade: websocket\r\n"),
            _ => {}
        }
        format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// Reason phrases for the statuses the edge itself sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        421 => "Misdirected Request",
        426 => "Upgrade Required",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// Where a connection came from, for log lines.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_complete_http_responses() {
        let r = Rejection::Auth(AuthError::Missing).answer();
        let (head, len) = crate::codec::h1::parse_response(&r, 4096).unwrap().unwrap();
        assert_eq!(head.status, 401);
        use crate::message::Headers;
        assert_eq!(head.get("www-authenticate"), Some(&b"Bearer"[..]));
        assert_eq!(r.len() - len, "401 Unauthorized\n".len());
        assert_eq!(Rejection::HeadTimeout(Duration::from_secs(1)).status(), 408);
        assert_eq!(Rejection::NotUpgrade.status(), 426);
    }
}
