//! HTTP/1.1 downstream, HTTP/1.1 upstream (and HTTPUpgrade, terminated
//! here): the exchange after the plan.
//!
//! ```text
//! upgrade / CONNECT: head + its own body ─► answer ─┬─ 101 / 2xx: held-back bytes up, relay
//!                                                   └─ declined: its answer (framed), close
//! ordinary request:  head + framed body  ─► framed response ─► close (no pipelining)
//! httpupgrade:       our exact 101 ─► early bytes up ─► relay
//! ```
//!
//! Nothing the client sent after its request reaches the upstream before
//! the upstream accepted it; h1 → h2c goes through `translate` instead.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::reject;
use crate::config::{TunnelMode, UpstreamVersion};
use crate::core::CoreCtx;
use crate::error::Rejection;
use crate::intent::Intent;
use crate::message::{BodyFraming, HeadError, RequestHead};
use crate::access::{Relayed, Route};
use crate::plan::{Plan, Version};
use crate::policy::{prepare_h1_forward, Hop};
use crate::relay::{self, RelayOptions};
use crate::timeout::{until, with_timeout};
use crate::tls::Downstream;
use crate::tunnel::Tunnel;
use crate::upstream;

/// The exact HTTPUpgrade answer (Xray-compatible, DESIGN §6).
pub const HTTPUPGRADE_101: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";

/// An h1 request as read: its head, the bytes that came after the head in
/// the same reads, and the handshake deadline.
pub(crate) struct Request {
    pub(crate) head: RequestHead,
    pub(crate) early: Vec<u8>,
    pub(crate) deadline: Instant,
}

/// Dials the upstream, performs the upstream side of the handshake, answers
/// the downstream, and relays.
///
/// Nothing the client sent after its request reaches the upstream before the
/// upstream accepted the upgrade (or CONNECT): the request's own body goes
/// with the head, anything after it is held back, and dropped if the upstream
/// declines. An ordinary request forwards exactly its framed body; bytes
/// after it (a pipelined request) are never forwarded, because this
/// connection closes after the answer.
pub(crate) async fn proceed(
    core: &Rc<CoreCtx>,
    mut down: Downstream,
    client: SocketAddr,
    hop: SocketAddr,
    request: Request,
    plan: Plan,
) -> std::io::Result<()> {
    let Request {
        mut head,
        early,
        deadline,
    } = request;
    let asked = Instant::now();
    let t = &plan.tunnel;
    let edge = &core.edge;
    let mut framing = BodyFraming::of_request(&head);
    if matches!(plan.intent, Intent::Connect { .. }) && !framing.is_done() {
        // RFC 9110 §9.3.6: a CONNECT request has no content.
        let rej = HeadError::Malformed("CONNECT request with content").into();
        reject(core, down, client, rej, Some(&head), Some(t)).await;
        return Ok(());
    }
    if t.config.mode == TunnelMode::Http
        && matches!(t.config.http_version, UpstreamVersion::H2c | UpstreamVersion::H3)
    {
        return Box::pin(super::to_h2c::to_h2c(
            core, down, client, hop, head, early, plan,
        ))
        .await;
    }
    let opts = RelayOptions {
        idle: edge.idle_timeout,
        splice: edge.splice,
        end_on_upstream_eof: false,
    };
    // The request's body (read whole for an upgrade, bounded by the head
    // limit; its first bytes for an ordinary request, the rest streams) and
    // what followed it.
    let (body, after) = match plan.intent {
        _ if t.config.mode == TunnelMode::HttpUpgrade => (Vec::new(), early),
        Intent::Request => {
            let (take, _) = framing.advance(&early);
            split_at(early, take)
        }
        _ => match read_body(
            &mut down,
            early,
            framing.clone(),
            edge.max_head_bytes,
            (deadline, edge.handshake_timeout),
        )
        .await
        {
            Ok(parts) => parts,
            Err(rej) => {
                reject(core, down, client, rej, Some(&head), Some(t)).await;
                return Ok(());
            }
        },
    };
    let mut up = match upstream::dial(&core.resolver, t, edge.upstream_connect_timeout).await {
        Ok(up) => up,
        Err(rej) => {
            reject(core, down, client, rej, Some(&head), Some(t)).await;
            return Ok(());
        }
    };

    if t.config.mode == TunnelMode::HttpUpgrade {
        // Terminated here: the exact 101, then client early data, then raw bytes.
        down.write_all(HTTPUPGRADE_101).await?;
        if !after.is_empty() {
            up.write_all(&after).await?;
        }
        // Nothing of the handshake outlives it: an idle relay keeps only its task state.
        let route = Route { kind: "httpupgrade", downstream: Version::H1, status: 101, asked };
        let relayed = Relayed::start(core, t, client, route, &head.target);
        drop((head, after));
        return run_relay(core, down, up, opts, relayed, t);
    }

    let hop_kind = match plan.intent {
        Intent::Request => Hop::SingleRequest,
        Intent::Connect { .. } => Hop::Connect,
        Intent::WebSocket | Intent::Upgrade { .. } | Intent::Session { .. } => Hop::Upgrade,
    };
    prepare_h1_forward(&mut head, hop_kind, hop.ip(), down.scheme());
    let mut out = Vec::with_capacity(1024 + body.len());
    crate::codec::h1::encode_request(&head, &mut out);
    out.extend_from_slice(&body);
    if let Err(rej) = upstream::send(&mut up, &out, t).await {
        reject(core, down, client, rej, Some(&head), Some(t)).await;
        return Ok(());
    }
    drop((out, body));
    let kind = match &plan.intent {
        Intent::Request => {
            if !after.is_empty() {
                tracing::debug!(%client, bytes = after.len(), "bytes after the request dropped (no pipelining: the connection closes after this answer)");
            }
            let method = std::mem::take(&mut head.method);
            // The status is the upstream's, passed on inside the relay.
            let route = Route { kind: "request", downstream: Version::H1, status: 0, asked };
            let relayed = Relayed::start(core, t, client, route, &head.target);
            drop((head, after));
            let request = (method.as_str(), framing, core.alt_svc(&down));
            let r =
                relay::forward_request(down, up, request, edge.max_head_bytes, opts, &core.stats)
                    .await;
            relayed.finish(core, t, &r);
            tracing::debug!(%client, tunnel = %t.config.name, up = r.down_to_up, down = r.up_to_down, end = ?r.end, "request forwarded");
            return Ok(());
        }
        Intent::WebSocket => "websocket",
        Intent::Upgrade { .. } => "upgrade",
        Intent::Connect { .. } => "connect",
        Intent::Session { protocol } => protocol.token(),
    };
    let answer = match upstream::read_answer(
        &mut up,
        &t.config.upstream,
        edge.max_head_bytes,
        edge.upstream_handshake_timeout,
    )
    .await
    {
        Ok(a) => a,
        Err(rej) => {
            reject(core, down, client, rej, Some(&head), Some(t)).await;
            return Ok(());
        }
    };
    let status = answer.head.status;
    let accepted = match plan.intent {
        Intent::Connect { .. } => (200..300).contains(&status),
        _ => status == 101,
    };
    if accepted {
        // The upstream's answer head goes to the client byte for byte,
        // followed by what the upstream sent after it in the same read; the
        // client's held-back bytes go up first.
        down.write_all(&answer.raw).await?;
        if !after.is_empty() {
            up.write_all(&after).await?;
        }
        let relayed = Relayed::start(core, t, client, Route { kind, downstream: Version::H1, status, asked }, &head.target);
        drop((answer, head, after));
        return run_relay(core, down, up, opts, relayed, t);
    }
    // Declined: exactly the answer (head and framed body) goes back, then
    // the connection closes; the held-back bytes are dropped.
    tracing::info!(%client, tunnel = %t.config.name, status, kind, held_back = after.len(), "upstream refused the {kind}; answer relayed, closing");
    drop(after);
    let mut framing = BodyFraming::of_response(&head.method, &answer.head);
    let (take, mut done) = framing.advance(&answer.raw[answer.head_len..]);
    down.write_all(&answer.raw[..answer.head_len + take])
        .await?;
    let mut buf = relay::buffers::take();
    while !done {
        let n = match with_timeout(edge.idle_timeout, up.read(&mut buf)).await {
            Some(Ok(n)) if n > 0 => n,
            _ => break,
        };
        let (take, finished) = framing.advance(&buf[..n]);
        down.write_all(&buf[..take]).await?;
        done = finished;
    }
    let _ = down.close().await;
    Ok(())
}

fn split_at(mut v: Vec<u8>, at: usize) -> (Vec<u8>, Vec<u8>) {
    let rest = v.split_off(at);
    (v, rest)
}

/// Reads an upgrade request's whole body (at most `limit` bytes, within the
/// handshake deadline): it must reach the upstream with the head, before the
/// upstream decides. Returns the body and the bytes after it.
async fn read_body(
    down: &mut Downstream,
    mut buf: Vec<u8>,
    mut framing: BodyFraming,
    limit: usize,
    (deadline, timeout): (Instant, std::time::Duration),
) -> Result<(Vec<u8>, Vec<u8>), Rejection> {
    let mut body = Vec::new();
    let mut chunk = vec![0u8; 4096];
    loop {
        let (take, done) = framing.advance(&buf);
        if framing.is_invalid() {
            return Err(HeadError::Malformed("invalid chunked request body").into());
        }
        body.extend_from_slice(&buf[..take]);
        if body.len() > limit {
            return Err(Rejection::BodyTooLarge(limit));
        }
        if done {
            return Ok((body, buf.split_off(take)));
        }
        buf = match until(deadline, down.read(&mut chunk)).await {
            // The configured limit, not what was left of it at this read.
            None => return Err(Rejection::HeadTimeout(timeout)),
            Some(Ok(n)) if n > 0 => chunk[..n].to_vec(),
            _ => {
                return Err(
                    HeadError::Malformed("connection closed inside the request body").into(),
                )
            }
        };
    }
}

/// Hands the accepted pair to a relay task of its own and returns, so the
/// connection task ends and its handshake state is freed: an idle relay
/// holds only the relay's state. The task counts as an active connection
/// and runs behind the core's gate (shutdown drains it).
fn run_relay(
    core: &Rc<CoreCtx>,
    down: Downstream,
    up: TcpStream,
    opts: RelayOptions,
    relayed: Relayed,
    t: &Rc<Tunnel>,
) -> std::io::Result<()> {
    let (client, kind) = (relayed.client(), relayed.kind());
    tracing::debug!(%client, tunnel = %t.config.name, kind, "relay started");
    let active = crate::core::Active::new(&core.stats);
    let (t, ctx) = (t.clone(), core.clone());
    // The relay's future is made here and mapped, not awaited inside an
    // async block (which would keep the legs in its captures as well), and
    // boxed: the gate's wrapper would otherwise hold it twice (as its
    // capture and as what it awaits).
    let relay = relay::relay(down, up, opts, core.stats.clone());
    let task = Box::pin(futures_util::FutureExt::map(relay, move |r| {
        drop(active);
        tracing::debug!(client = %relayed.client(), tunnel = %t.config.name, kind = relayed.kind(), up = r.down_to_up, down = r.up_to_down,
            end = ?r.end, spliced = r.spliced, "relay ended");
        relayed.finish(&ctx, &t, &r);
    }));
    match core.gate.spawn(task) {
        Ok(task) => {
            task.detach();
        }
        Err(e) => tracing::warn!(%client, "cannot start the relay task: {e}"),
    }
    Ok(())
}
