//! The life of one TCP connection, as a straight line:
//!
//! ```text
//! accept → PROXY header → TLS/ALPN → h1 head → intent → route + auth → upstream dial → relay
//! (listener) (proxy_protocol) (tls) (downstream::h1) (intent) (route, auth) (upstream) (relay)
//!                                 └─ ALPN h2 / h2c preface → downstream::h2 (per stream, same line)
//! ```
//!
//! Each arrow is a call into the module named below it; this file only
//! sequences them, applies the handshake deadline, and turns every refusal
//! into its one answer and one log line ([`Rejection`]).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use crate::codec::h1::parse_request;
use crate::config::{EdgeSettings, ListenerConfig, TunnelMode};
use crate::error::Rejection;
use crate::forwarding::{decoded_path, first_forwarded_for};
use crate::intent::{classify, Intent};
use crate::logsafe::{ClientText, Escaped};
use crate::message::{Headers, RequestHead};
use crate::proxy_protocol;
use crate::route::{RouteTable, Tunnel};
use crate::stats::{self, CoreStats};
use crate::timeout::{until, with_timeout};
use crate::tls::{Downstream, Prefixed};

/// State one core shares between its connections (`Rc`: never leaves the core).
#[derive(Debug)]
pub struct CoreCtx {
    /// Index of this core (0-based).
    pub core: usize,
    /// Limits and timeouts.
    pub edge: EdgeSettings,
    /// Routing table; replaced whole when tables change.
    pub routes: RefCell<Rc<RouteTable>>,
    /// This core's counters.
    pub stats: Arc<CoreStats>,
    /// Raised when the edge shuts down (h2 connections send GOAWAY).
    pub stop: Arc<std::sync::atomic::AtomicBool>,
    /// This core's h2c upstream connections.
    pub h2c: crate::upstream::h2c::H2cPool,
    /// Receive windows handed to this core's h2 connections.
    pub h2_budget: crate::downstream::h2::guard::RecvBudget,
    /// Early stream resets per client address (h2).
    pub h2_resets: crate::downstream::h2::guard::ResetLimiter,
}

/// Downstream HTTP version, where routing rules differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.x.
    H1,
    /// HTTP/2 (a stream).
    H2,
}

/// One listener as seen by one core.
pub struct ListenerCtx {
    /// Its configuration.
    pub cfg: ListenerConfig,
    /// TLS acceptor with this core's own rustls config.
    pub tls: Option<futures_rustls::TlsAcceptor>,
}

/// Decrements the active-connection gauge when the connection ends.
struct ActiveGuard<'a>(&'a CoreStats);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        stats::sub(&self.0.connections_active, 1);
    }
}

/// Serves one accepted connection to the end.
pub async fn serve(core: Rc<CoreCtx>, lis: Rc<ListenerCtx>, tcp: TcpStream, peer: SocketAddr) {
    stats::add(&core.stats.connections_total, 1);
    stats::add(&core.stats.connections_active, 1);
    let _active = ActiveGuard(&core.stats);
    let _ = tcp.set_nodelay(true);
    tracing::trace!(core = core.core, listener = %lis.cfg.name, %peer, "accepted");
    let deadline = Instant::now() + core.edge.handshake_timeout;

    // PROXY header: required when configured; its source is the client.
    let mut client = peer;
    let mut pending = Vec::new();
    let mut tcp = tcp;
    if lis.cfg.proxy_protocol {
        match until(deadline, read_proxy_header(&mut tcp)).await {
            None => {
                return log_closed(
                    &core,
                    peer,
                    "no complete PROXY header within the handshake timeout",
                )
            }
            Some(Err(reason)) => return log_closed(&core, peer, &reason),
            Some(Ok((source, rest))) => {
                client = source.unwrap_or(peer);
                pending = rest;
            }
        }
    }

    // TLS: SNI recorded; ALPN picks h2 or http/1.1.
    let mut down = match &lis.tls {
        None if lis.cfg.h2c => match sniff_h2_preface(&mut tcp, &mut pending, deadline).await {
            Some(true) => {
                let io = Prefixed::new(std::mem::take(&mut pending), tcp);
                let deadline = Instant::now() + core.edge.handshake_timeout;
                // Boxed: an h1 connection's task must not carry the h2
                // connection state inline (async fn state is the union of
                // every branch's).
                Box::pin(crate::downstream::h2::serve(
                    core.clone(),
                    lis.clone(),
                    io,
                    client,
                    client,
                    None,
                    "http",
                    deadline,
                ))
                .await;
                return;
            }
            Some(false) => Downstream::Plain(tcp),
            None => {
                return log_closed(
                    &core,
                    client,
                    "nothing received within the handshake timeout",
                )
            }
        },
        None => Downstream::Plain(tcp),
        Some(acceptor) => {
            // Boxed: the handshake state is large and only lives this long.
            let hs = Box::pin(acceptor.accept(Prefixed::new(std::mem::take(&mut pending), tcp)));
            match until(deadline, hs).await {
                None => {
                    return log_closed(
                        &core,
                        client,
                        "TLS handshake not complete within the handshake timeout",
                    )
                }
                Some(Err(e)) => {
                    return log_closed(&core, client, &format!("TLS handshake failed: {e}"))
                }
                Some(Ok(s)) => Downstream::Tls(Box::new(s)),
            }
        }
    };
    if down.alpn() == Some(b"h2") {
        let sni = down.sni().map(str::to_owned);
        Box::pin(crate::downstream::h2::serve(
            core.clone(),
            lis.clone(),
            down,
            client,
            client,
            sni,
            "https",
            deadline,
        ))
        .await;
        return;
    }

    let (mut head, early) =
        match read_head(&mut down, pending, core.edge.max_head_bytes, deadline).await {
            Ok(Some(x)) => x,
            Ok(None) => return,
            Err(rej) => return reject(&core, down, client, rej, None, None).await,
        };
    // The hop that connected to us is what we append to X-Forwarded-For; the
    // client address used for access checks may come from a trusted XFF.
    let hop = client;
    if lis.cfg.trusted_forwarded_for && !lis.cfg.proxy_protocol {
        if let Some(ip) = first_forwarded_for(&head) {
            client = SocketAddr::new(ip, 0);
        }
    }

    let routes = core.routes.borrow().clone();
    let intent = match classify(&head) {
        Ok(i) => i,
        Err(e) => return reject(&core, down, client, e.into(), Some(&head), None).await,
    };
    let sni = down.sni().map(str::to_owned);
    let plan = match plan(
        &core,
        &lis,
        &routes,
        sni.as_deref(),
        client,
        &mut head,
        intent,
        Version::H1,
    ) {
        Ok(p) => p,
        Err((rej, tunnel)) => {
            return reject(&core, down, client, rej, Some(&head), tunnel.as_deref()).await
        }
    };
    let tunnel = plan.tunnel.clone();
    let request = crate::h1_exchange::Request {
        head,
        early,
        deadline,
    };
    if let Err(e) = crate::h1_exchange::proceed(&core, down, client, hop, request, plan).await {
        tracing::debug!(%client, "connection ended during the upgrade handshake: {e}");
    }
    drop(tunnel);
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

/// Route → access → auth for a classified request. Pure decisions on the
/// head; no I/O. Shared by the h1 connection and every h2 stream.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    core: &CoreCtx,
    lis: &ListenerCtx,
    routes: &RouteTable,
    sni: Option<&str>,
    client: SocketAddr,
    head: &mut RequestHead,
    intent: Intent,
    version: Version,
) -> Result<Plan, Refusal> {
    let tunnel = match &intent {
        // Plain CONNECT names the proxy's target, not us: route by the
        // connection (SNI), else the listener's default tunnel.
        Intent::Connect { .. } => match sni {
            Some(sni) => routes.by_host(sni),
            None => lis
                .cfg
                .default_tunnel
                .as_deref()
                .and_then(|n| routes.by_name(n)),
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
                Version::H2 => intent == Intent::WebSocket,
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
            Intent::WebSocket if !upgrade_allowed(&tunnel, "websocket") => {
                return Err(refuse(Rejection::UpgradeNotAllowed(ClientText(
                    "websocket".into(),
                ))))
            }
            _ => {}
        },
    }
    if tunnel.config.token_auth {
        if let Err(e) = routes.authorize(head, &core.edge.token_query_param, &tunnel) {
            stats::add(&core.stats.auth_failures, 1);
            return Err(refuse(e.into()));
        }
    }
    Ok(Plan { tunnel, intent })
}

fn upgrade_allowed(tunnel: &Tunnel, token: &str) -> bool {
    let allowed = &tunnel.config.allowed_upgrades;
    allowed.is_empty() || allowed.iter().any(|a| a == token)
}

/// On an `h2c` listener: reads until the bytes either are the HTTP/2
/// client preface (RFC 9113 §3.4) or cannot be. `None` if nothing usable
/// arrived within the deadline.
async fn sniff_h2_preface(
    tcp: &mut TcpStream,
    pending: &mut Vec<u8>,
    deadline: Instant,
) -> Option<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut chunk = vec![0u8; 4096];
    loop {
        let n = pending.len().min(PREFACE.len());
        if pending[..n] != PREFACE[..n] {
            return Some(false);
        }
        if n == PREFACE.len() {
            return Some(true);
        }
        match until(deadline, tcp.read(&mut chunk)).await {
            Some(Ok(0)) | Some(Err(_)) | None => {
                return if pending.is_empty() {
                    None
                } else {
                    Some(false)
                }
            }
            Some(Ok(n)) => pending.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn read_proxy_header(tcp: &mut TcpStream) -> Result<(Option<SocketAddr>, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(proxy_protocol::MAX_HEADER);
    // Heap, not stack: an array here would stay in every connection's task
    // state for its whole life (async fn state is the union of all phases).
    let mut chunk = vec![0u8; 1024];
    loop {
        match proxy_protocol::parse(&buf).map_err(|e| e.to_string())? {
            proxy_protocol::Parsed::Complete { len, source } => {
                return Ok((source, buf.split_off(len)))
            }
            proxy_protocol::Parsed::Incomplete => {}
        }
        let n = tcp
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            return Err(if buf.is_empty() {
                "closed before a PROXY header".into()
            } else {
                "closed inside the PROXY header".into()
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads a request head. `Ok(None)`: the client went away without a request.
async fn read_head(
    down: &mut Downstream,
    mut buf: Vec<u8>,
    max: usize,
    deadline: Instant,
) -> Result<Option<(RequestHead, Vec<u8>)>, Rejection> {
    let mut chunk = vec![0u8; 4096];
    loop {
        if !buf.is_empty() {
            if let Some((head, len)) = parse_request(&buf, max)? {
                let early = buf.split_off(len);
                return Ok(Some((head, early)));
            }
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        match until(deadline, down.read(&mut chunk)).await {
            None => return Err(Rejection::HeadTimeout(round_ms(timeout))),
            Some(Ok(0)) if buf.is_empty() => return Ok(None),
            Some(Ok(0)) => {
                return Err(crate::message::HeadError::Malformed(
                    "connection closed inside the head",
                )
                .into())
            }
            Some(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Some(Err(e)) => {
                tracing::debug!("read failed before a complete head: {e}");
                return Ok(None);
            }
        }
    }
}

pub(crate) fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

fn log_closed(core: &CoreCtx, client: SocketAddr, reason: &str) {
    stats::add(&core.stats.rejected_total, 1);
    tracing::warn!(core = core.core, %client, "connection closed: {}", Escaped(reason));
}

pub(crate) fn log_rejection(
    core: &CoreCtx,
    client: SocketAddr,
    rej: &Rejection,
    head: Option<&RequestHead>,
    tunnel: Option<&Tunnel>,
    silent: bool,
) {
    let target =
        head.map(|h| crate::logsafe::redact_target(&h.target, &core.edge.token_query_param));
    let target = target.as_deref().map(Escaped);
    let method = head.map(|h| Escaped(&h.method));
    let tunnel = tunnel.map(|t| t.config.name.as_str());
    let answer = if silent {
        "closed silently (stealth)".to_string()
    } else {
        rej.status().to_string()
    };
    tracing::warn!(core = core.core, %client, method = method.map(tracing::field::display), target = target.map(tracing::field::display), tunnel, answer, "rejected: {rej}");
}

/// Answers a refusal (or closes silently on a stealth tunnel), logs it, and
/// closes the connection gracefully.
pub(crate) async fn reject(
    core: &CoreCtx,
    mut down: Downstream,
    client: SocketAddr,
    rej: Rejection,
    head: Option<&RequestHead>,
    tunnel: Option<&Tunnel>,
) {
    stats::add(&core.stats.rejected_total, 1);
    if rej.is_upstream() {
        stats::add(&core.stats.upstream_errors, 1);
    }
    let silent =
        tunnel.is_some_and(|t| t.config.mode == TunnelMode::HttpUpgrade && t.config.stealth);
    log_rejection(core, client, &rej, head, tunnel, silent);
    if silent {
        return;
    }
    if with_timeout(Duration::from_secs(5), down.write_all(&rej.answer()))
        .await
        .is_none()
    {
        return;
    }
    let _ = down.close().await;
    // Lingering close: drain what the client is still sending so that the
    // kernel does not answer it with RST and destroy our answer in flight.
    let mut sink = vec![0u8; 4096];
    let _ = with_timeout(Duration::from_secs(1), async {
        let mut total = 0usize;
        while total < 256 * 1024 {
            match down.read(&mut sink).await {
                Ok(n) if n > 0 => total += n,
                _ => break,
            }
        }
    })
    .await;
}
