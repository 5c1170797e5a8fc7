//! Every way a request is refused, and its one answer (DESIGN §5).
//!
//! A [`Rejection`] carries the reason (for the log line), its [`Side`] and
//! exactly one status; `answer` turns it into each version's answer.

use std::net::IpAddr;
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
    Intent(IntentError),
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

    /// The rejection's name in metrics (`reason` label), one per variant.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Head(_) => "bad_head",
            Rejection::Intent(_) => "bad_intent",
            Rejection::HeadTimeout(_) => "head_timeout",
            Rejection::UnknownHost(_) => "unknown_host",
            Rejection::NoConnectTunnel => "no_connect_tunnel",
            Rejection::Auth(_) => "unauthorized",
            Rejection::Forbidden(_) => "forbidden_network",
            Rejection::UpgradeNotAllowed(_) => "upgrade_not_allowed",
            Rejection::ConnectNotAllowed => "connect_not_allowed",
            Rejection::WrongPath(_) => "wrong_path",
            Rejection::NotUpgrade => "not_upgrade",
            Rejection::UpstreamUnreachable { .. } => "upstream_unreachable",
            Rejection::UpstreamTimeout { .. } => "upstream_timeout",
            Rejection::UpstreamBadAnswer(_) => "upstream_bad_answer",
            Rejection::Misdirected(_) => "misdirected",
            Rejection::BodyTooLarge(_) => "body_too_large",
            Rejection::NotSupported(_) => "not_supported",
        }
    }

    /// Who is at fault.
    pub fn side(&self) -> Side {
        match self {
            Rejection::UpstreamUnreachable { .. }
            | Rejection::UpstreamTimeout { .. }
            | Rejection::UpstreamBadAnswer(_) => Side::Upstream,
            Rejection::NotSupported(_) => Side::Internal,
            _ => Side::Downstream,
        }
    }

    /// Whether the request itself is malformed (a stream error on h2/h3).
    pub fn is_malformed(&self) -> bool {
        matches!(self, Rejection::Head(_) | Rejection::Intent(_))
    }
}

impl From<IntentError> for Rejection {
    fn from(e: IntentError) -> Rejection {
        match e {
            // A :protocol we do not relay is the extended-CONNECT form of an
            // upgrade token the tunnel does not allow.
            IntentError::UnsupportedProtocol(p) => Rejection::UpgradeNotAllowed(p),
            e => Rejection::Intent(e),
        }
    }
}

/// Who a refusal is about (for counters and the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client's request.
    Downstream,
    /// The upstream's answer or reachability.
    Upstream,
    /// What this edge cannot do.
    Internal,
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
