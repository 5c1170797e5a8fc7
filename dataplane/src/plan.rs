//! The plan for one request: which tunnel, whether this client may use it,
//! whether its proof holds (route → access → auth). Version-neutral and
//! sans-IO: shared by the h1 connection and every h2 stream (and h3's), and
//! given the time instead of reading a clock.

use std::net::SocketAddr;
use std::rc::Rc;

use crate::config::TunnelMode;
use crate::error::Rejection;
use crate::intent::Intent;
use crate::logsafe::ClientText;
use crate::message::{Headers, RequestHead};
use crate::route::RouteTable;
use crate::target::decoded_path;
use crate::tunnel::Tunnel;

/// Downstream HTTP version, where routing rules differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.x.
    H1,
    /// HTTP/2 (a stream).
    H2,
    /// HTTP/3 (a request stream).
    H3,
}

/// What the edge will do with an accepted request.
pub struct Plan {
    /// The tunnel it goes through.
    pub tunnel: Rc<Tunnel>,
    /// What was asked for.
    pub intent: Intent,
}

/// A refusal, with the tunnel when one was selected (for stealth and logs).
pub type Refusal = (Rejection, Option<Rc<Tunnel>>);

/// Where a request came from, as routing and access need it.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The client address access is checked against.
    pub client: SocketAddr,
    /// TLS SNI (or QUIC's), which routes plain CONNECT.
    pub sni: Option<&'a str>,
    /// The listener's `default_tunnel` (plain CONNECT without SNI).
    pub default_tunnel: Option<&'a str>,
    /// The downstream version (HTTPUpgrade reads the upgrade differently).
    pub version: Version,
}

/// Route → access → auth for a classified request, version-neutral and
/// sans-IO: pure decisions on the head, given the tables, the token query
/// parameter's name and the time (`now_unix_s`, for token expiry). On
/// success the consumed proof is gone from `head`.
pub fn plan(
    routes: &RouteTable,
    from: Origin<'_>,
    head: &mut RequestHead,
    intent: Intent,
    token_param: &str,
    now_unix_s: u64,
) -> Result<Plan, Refusal> {
    let Origin {
        client,
        sni,
        default_tunnel,
        version,
    } = from;
    let tunnel = match &intent {
        // Plain CONNECT names the proxy's target, not us: route by the
        // connection (SNI), else the listener's default tunnel.
        Intent::Connect { .. } => match sni {
            Some(sni) => routes.by_host(sni),
            None => default_tunnel.and_then(|n| routes.by_name(n)),
        }
        .ok_or((Rejection::NoConnectTunnel, None))?,
        _ => {
            let host = head.host().unwrap_or("");
            routes
                .by_host(host)
                .ok_or_else(|| (Rejection::UnknownHost(ClientText(host.to_owned())), None))?
        }
    }
    .clone();
    let refuse = |r: Rejection| (r, Some(tunnel.clone()));
    if !tunnel.allows(client.ip()) {
        return Err(refuse(Rejection::Forbidden(client.ip())));
    }
    match tunnel.config.mode {
        TunnelMode::HttpUpgrade => {
            if matches!(intent, Intent::Connect { .. }) {
                return Err(refuse(Rejection::ConnectNotAllowed));
            }
            let path = decoded_path(&head.target);
            if path != tunnel.config.path {
                return Err(refuse(Rejection::WrongPath(ClientText(path))));
            }
            // Xray compares the first field value whole, case-insensitively;
            // on h2 the extended CONNECT's :protocol already said websocket.
            let first_is = |name: &str, want: &str| {
                head.get(name)
                    .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(want.as_bytes()))
            };
            let upgrade = match version {
                Version::H1 => {
                    first_is("connection", "upgrade") && first_is("upgrade", "websocket")
                }
                Version::H2 | Version::H3 => intent == Intent::WebSocket,
            };
            if !upgrade {
                return Err(refuse(Rejection::NotUpgrade));
            }
        }
        TunnelMode::Http => match &intent {
            Intent::Connect { .. } if !tunnel.config.allow_connect => {
                return Err(refuse(Rejection::ConnectNotAllowed))
            }
            Intent::Upgrade { token } if !upgrade_allowed(&tunnel, token) => {
                return Err(refuse(Rejection::UpgradeNotAllowed(ClientText(
                    token.clone(),
                ))))
            }
            Intent::Session { protocol } if !upgrade_allowed(&tunnel, protocol.token()) => {
                return Err(refuse(Rejection::UpgradeNotAllowed(ClientText(
                    protocol.token().into(),
                ))))
            }
            Intent::WebSocket if !upgrade_allowed(&tunnel, "websocket") => {
                return Err(refuse(Rejection::UpgradeNotAllowed(ClientText(
                    "websocket".into(),
                ))))
            }
            _ => {}
        },
    }
    if tunnel.config.token_auth {
        if let Err(e) = routes.authorize(head, token_param, &tunnel, now_unix_s) {
            return Err(refuse(e.into()));
        }
    }
    Ok(Plan { tunnel, intent })
}

fn upgrade_allowed(tunnel: &Tunnel, token: &str) -> bool {
    let allowed = &tunnel.config.allowed_upgrades;
    allowed.is_empty() || allowed.iter().any(|a| a == token)
}
