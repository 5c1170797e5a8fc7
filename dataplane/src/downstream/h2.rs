//! HTTP/2 downstream: TLS with ALPN `h2`, or cleartext with prior knowledge
//! on listeners with `h2c = true`.
//!
//! The `h2` crate does the framing, HPACK, flow control and stream state; it
//! speaks tokio's I/O traits, so the glommio/rustls stream is adapted with
//! tokio-util's compat layer (no tokio runtime is involved). This module is
//! the glue: it turns every stream into a request head, then runs the same
//! straight line as HTTP/1.1 (intent → route + auth → upstream → relay):
//!
//! ```text
//! CONNECT :protocol websocket  → WebSocket intent (routed by :authority)
//! CONNECT host:port            → CONNECT intent   (routed by SNI / default tunnel)
//! anything else                → ordinary request (forwarded, see `forward`)
//! ```
//!
//! Refusals are stream-level answers (DESIGN §5): a malformed request gets
//! RST_STREAM(PROTOCOL_ERROR), any other refusal its status; the connection
//! serves on. A connection that carried a plain CONNECT answers 421 to
//! reverse-proxy requests and the other way round.
//!
//! Bounded per connection and per core (see `guard`): stream credit goes
//! back only as bytes leave the edge; a stream the client resets before we
//! answered cancels our upstream dial or handshake and is charged to the
//! client's address; an idle or draining connection whose client ignores
//! the PING after our GOAWAY is closed after [`GOAWAY_GRACE`].

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_lite::FutureExt;
use h2::server::SendResponse;
use h2::RecvStream;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::answer::{answer, record, Answer};
use crate::codec::h2::MAX_FRAME;
use crate::core::{CoreCtx, ListenerCtx};
use crate::error::Rejection;
use crate::intent::Intent;
use crate::message::RequestHead;
use crate::plan::{plan, Origin, Version};
use crate::relay::h2::H2Stream;
use crate::relay::{self, Leg, Prelude, RelayOptions};
use crate::stats;
use crate::timeout::{until, with_timeout};
use crate::upstream::session::{self, Ask, AskKind, Deadlines, Field, Opened};

mod forward;

/// Concurrent streams a client may open on one connection.
pub const MAX_STREAMS: u32 = 256;
/// Receive window per stream; the connection window is 4×. Bounds what one
/// stalled relay can make the edge hold.
pub const STREAM_WINDOW: u32 = 1 << 20;
/// Streams reset by the client before we accepted them (CVE-2023-44487
/// "rapid reset"): past this the connection gets GOAWAY(ENHANCE_YOUR_CALM).
pub const MAX_PENDING_RESETS: usize = 64;
/// Streams we reset for protocol errors before the connection is closed.
pub const MAX_LOCAL_RESETS: usize = 512;
/// How often the connection task checks for shutdown and idleness.
const WATCH: Duration = Duration::from_millis(250);
/// Receive-window bytes one core grants across its h2 connections (each
/// connection asks for 4 × [`STREAM_WINDOW`]; see `crate::guard::RecvBudget`).
pub const CORE_RECV_BUDGET: u64 = 256 << 20;
/// After our GOAWAY (idle or shutdown), how long a connection with no
/// stream left waits for the client's PING acknowledgement before closing.
pub const GOAWAY_GRACE: Duration = Duration::from_secs(5);
/// How long a connection told ENHANCE_YOUR_CALM gets to flush its GOAWAY.
const CALM_FLUSH: Duration = Duration::from_secs(1);

/// Who the connection's first stream made it (DESIGN §1: 421 separation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Plain CONNECT: a forward proxy's egress.
    Proxy,
    /// WebSocket and ordinary requests: a reverse proxy.
    Reverse,
}

/// Per-connection facts every stream needs.
struct Conn {
    core: Rc<CoreCtx>,
    lis: Rc<ListenerCtx>,
    client: SocketAddr,
    hop: SocketAddr,
    sni: Option<String>,
    scheme: &'static str,
    role: Cell<Option<Role>>,
    streams: Cell<usize>,
    last_active: Cell<Instant>,
    /// Set when the client's address ran out of early resets.
    calm: Cell<bool>,
    /// `Alt-Svc` for every answer, when the listener serves HTTP/3.
    alt_svc: Option<String>,
}

impl Conn {
    /// A stream the client reset after we accepted it and before we
    /// answered: counted, and charged to the client's address.
    fn early_reset(&self) {
        stats::add(&self.core.stats.h2_early_resets, 1);
        if !self.core.h2_resets.charge(self.client.ip(), Instant::now()) && !self.calm.get() {
            self.calm.set(true);
        }
    }
}

/// Why the connection task stops serving.
enum Close {
    /// GOAWAY, let streams in flight finish (shutdown or idle).
    Graceful(&'static str),
    /// The client never acknowledged the GOAWAY's PING.
    Abandon,
    /// Too many early resets from this address.
    Calm,
}

/// Serves one HTTP/2 connection until it closes. `io` is the TLS session
/// (ALPN h2) or the cleartext socket with the bytes already read in front.
#[allow(clippy::too_many_arguments)]
pub async fn serve<T>(
    core: Rc<CoreCtx>,
    lis: Rc<ListenerCtx>,
    io: T,
    client: SocketAddr,
    hop: SocketAddr,
    sni: Option<String>,
    scheme: &'static str,
    deadline: Instant,
) where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let window = core.h2_budget.reserve(4 * STREAM_WINDOW);
    let mut builder = h2::server::Builder::new();
    builder
        .enable_connect_protocol()
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(core.edge.max_head_bytes as u32)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(window.window)
        .max_frame_size(MAX_FRAME)
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_RESETS));
    let hs = builder.handshake::<_, Bytes>(io.compat());
    let mut h2 = match until(deadline, hs).await {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            tracing::warn!(core = core.core, %client, "h2 handshake failed: {e}");
            return;
        }
        None => {
            tracing::warn!(core = core.core, %client, "h2 preface not complete within the handshake timeout");
            return;
        }
    };
    let calm = !core.h2_resets.allows(client.ip(), Instant::now());
    let alt_svc = core.alt_svc_at(lis.cfg.addr).map(str::to_owned);
    let conn = Rc::new(Conn {
        core: core.clone(),
        lis,
        client,
        hop,
        sni,
        scheme,
        role: Cell::new(None),
        streams: Cell::new(0),
        last_active: Cell::new(Instant::now()),
        calm: Cell::new(calm),
        alt_svc,
    });
    let mut closing: Option<Instant> = None;
    loop {
        let watch = async {
            loop {
                if conn.calm.get() {
                    return Close::Calm;
                }
                match closing {
                    Some(since) => {
                        if conn.streams.get() == 0 && since.elapsed() >= GOAWAY_GRACE {
                            return Close::Abandon;
                        }
                    }
                    None if conn.core.stop.load(Ordering::Relaxed) => {
                        return Close::Graceful("shutting down")
                    }
                    None => {
                        let idle = conn.last_active.get().elapsed() >= conn.core.edge.idle_timeout;
                        if conn.streams.get() == 0 && idle {
                            return Close::Graceful("idle");
                        }
                    }
                }
                glommio::timer::sleep(WATCH).await;
            }
        };
        let next = async { Next::Stream(h2.accept().await) }
            .or(async { Next::Close(watch.await) })
            .await;
        match next {
            Next::Stream(Some(Ok((req, respond)))) => {
                conn.last_active.set(Instant::now());
                glommio::spawn_local(stream(conn.clone(), req, respond)).detach();
            }
            Next::Stream(Some(Err(e))) => {
                tracing::debug!(client = %conn.client, "h2 connection error: {e}");
                break;
            }
            Next::Stream(None) => break,
            Next::Close(Close::Graceful(why)) => {
                // GOAWAY with the last stream id: streams in flight finish.
                tracing::debug!(client = %conn.client, why, "h2 graceful shutdown");
                h2.graceful_shutdown();
                closing = Some(Instant::now());
            }
            Next::Close(Close::Abandon) => {
                tracing::info!(core = core.core, client = %conn.client, "h2 client did not acknowledge GOAWAY within {GOAWAY_GRACE:?}; closing");
                break;
            }
            Next::Close(Close::Calm) => {
                stats::add(&core.stats.rejected_total, 1);
                core.stats.families.rejected("h2_enhance_your_calm", crate::stats::families::AnswerLabel::Closed);
                tracing::warn!(core = core.core, client = %conn.client, "h2 connection closed with ENHANCE_YOUR_CALM: too many streams reset before their answer from this address");
                h2.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                let _ =
                    with_timeout(CALM_FLUSH, async { while h2.accept().await.is_some() {} }).await;
                break;
            }
        }
    }
    drop(window);
}

/// What `accept` yields: a new stream, the end, or a connection error.
type Accepted = Option<Result<(http::Request<RecvStream>, SendResponse<Bytes>), h2::Error>>;

#[allow(clippy::large_enum_variant)] // lives for one loop iteration
enum Next {
    Stream(Accepted),
    Close(Close),
}

/// Handles one stream: a request in, an answer and maybe a relay out.
async fn stream(conn: Rc<Conn>, req: http::Request<RecvStream>, respond: SendResponse<Bytes>) {
    conn.streams.set(conn.streams.get() + 1);
    let _count = StreamGuard(&conn);
    let (parts, body) = req.into_parts();
    let protocol = parts
        .extensions
        .get::<h2::ext::Protocol>()
        .map(|p| p.as_str().to_owned());
    let mut head = match crate::codec::h2::request_head(&parts, protocol.is_some()) {
        Ok(h) => h,
        Err(e) => return refuse(&conn, respond, e.into(), None, None),
    };
    drop(parts);
    let intent = match crate::intent::classify_extended(&head, protocol.as_deref()) {
        Ok(i) => i,
        Err(e) => return refuse(&conn, respond, e.into(), Some(&head), None),
    };
    let role = match intent {
        Intent::Connect { .. } => Role::Proxy,
        _ => Role::Reverse,
    };
    match conn.role.get() {
        Some(r) if r != role => {
            let what = match role {
                Role::Proxy => "CONNECT",
                Role::Reverse => "reverse-proxy request",
            };
            return refuse(
                &conn,
                respond,
                Rejection::Misdirected(what),
                Some(&head),
                None,
            );
        }
        Some(_) => {}
        None => conn.role.set(Some(role)),
    }
    let core = &conn.core;
    let routes = core.routes.borrow().clone();
    let client = conn.client;
    let from = Origin {
        client,
        sni: conn.sni.as_deref(),
        default_tunnel: conn.lis.cfg.default_tunnel.as_deref(),
        version: Version::H2,
    };
    let param = &core.edge.token_query_param;
    let now = crate::managed::now_unix_s();
    let plan = match plan(&routes, from, &mut head, intent, param, now) {
        Ok(p) => p,
        Err((rej, t)) => return refuse(&conn, respond, rej, Some(&head), t.as_deref()),
    };
    crate::policy::add_forwarding_headers(&mut head, conn.hop.ip(), conn.scheme);
    let t = plan.tunnel.clone();
    match plan.intent {
        Intent::Request => forward::request(&conn, &t, head, body, respond).await,
        Intent::WebSocket | Intent::Connect { .. } => {
            tunnel(&conn, &t, plan.intent, head, body, respond).await
        }
        Intent::Upgrade { token } => refuse(
            &conn,
            respond,
            Rejection::UpgradeNotAllowed(crate::logsafe::ClientText(token)),
            Some(&head),
            Some(&t),
        ),
        Intent::Session { protocol } => refuse(
            &conn,
            respond,
            Rejection::NotSupported(format!("{} is relayed from HTTP/3 only", protocol.token())),
            Some(&head),
            Some(&t),
        ),
    }
}

/// Runs `work` unless the client resets the stream first: then `None`, and
/// `work` (an upstream dial or handshake) is dropped, which cancels it.
async fn unless_reset<T>(
    conn: &Conn,
    respond: &mut SendResponse<Bytes>,
    work: impl Future<Output = T>,
) -> Option<T> {
    let mut by_client = false;
    let out = async { Some(work.await) }
        .or(async {
            by_client = std::future::poll_fn(|cx| respond.poll_reset(cx))
                .await
                .is_ok();
            None
        })
        .await;
    if out.is_none() && by_client {
        conn.early_reset();
    }
    out
}

struct StreamGuard<'a>(&'a Conn);

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        self.0.streams.set(self.0.streams.get().saturating_sub(1));
        self.0.last_active.set(Instant::now());
    }
}

/// WebSocket or CONNECT: open the upstream session, answer 200, relay.
async fn tunnel(
    conn: &Conn,
    t: &Rc<crate::tunnel::Tunnel>,
    intent: Intent,
    head: RequestHead,
    body: RecvStream,
    mut respond: SendResponse<Bytes>,
) {
    let asked = Instant::now();
    let core = &conn.core;
    let edge = &core.edge;
    let limits = Deadlines {
        connect: edge.upstream_connect_timeout,
        handshake: edge.upstream_handshake_timeout,
    };
    let kind = match &intent {
        Intent::Connect { authority } => AskKind::Connect {
            authority: authority.clone(),
        },
        _ => AskKind::WebSocket,
    };
    let open = async {
        if t.config.mode == crate::config::TunnelMode::HttpUpgrade {
            // Terminated here like the h1 HTTPUpgrade: raw TCP to the upstream.
            crate::upstream::dial(&core.resolver, t, limits.connect)
                .await
                .map(|up| Opened::Open {
                    leg: Leg::Tcp(up),
                    early: Vec::new(),
                    fields: Vec::new(),
                })
        } else {
            // The head's target: the proof the edge consumed is gone from it.
            let ask = Ask {
                kind: kind.clone(),
                authority: head.host().unwrap_or_default().to_owned(),
                path: head.target.clone(),
                fields: crate::policy::request_fields(&head),
            };
            session::open(core, t, ask, limits).await
        }
    };
    let opened = match unless_reset(conn, &mut respond, open).await {
        None => return,
        Some(Ok(o)) => o,
        Some(Err(rej)) => return refuse(conn, respond, rej, Some(&head), Some(t)),
    };
    let what = if kind == AskKind::WebSocket {
        "websocket"
    } else {
        "connect"
    };
    match opened {
        Opened::Open { leg, early, fields } => {
            let mut answer = http::Response::builder().status(200);
            if let Some(v) = &conn.alt_svc {
                answer = answer.header("alt-svc", v.as_str());
            }
            for (name, value) in &fields {
                answer = answer.header(name.as_str(), value.as_slice());
            }
            let Ok(answer) = answer.body(()) else {
                return refuse(
                    conn,
                    respond,
                    Rejection::UpstreamBadAnswer("answer fields not valid in h2".into()),
                    Some(&head),
                    Some(t),
                );
            };
            let send = match respond.send_response(answer, false) {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(client = %conn.client, "stream gone before the answer: {e}");
                    return;
                }
            };
            let route = crate::access::Route { kind: what, downstream: crate::plan::Version::H2, status: 200, asked };
            let relayed = crate::access::Relayed::start(core, t, conn.client, route, &head.target);
            drop((head, fields));
            tracing::debug!(client = %conn.client, tunnel = %t.config.name, kind = what, "h2 relay started");
            let opts = RelayOptions {
                idle: edge.idle_timeout,
                splice: false,
                end_on_upstream_eof: false,
            };
            let prelude = Prelude {
                to_up: Vec::new(),
                to_down: early,
            };
            let r = relay::relay_legs(
                Leg::H2(H2Stream::new(send, body)),
                leg,
                prelude,
                opts,
                &core.stats,
            )
            .await;
            tracing::debug!(client = %conn.client, tunnel = %t.config.name, kind = what, up = r.down_to_up, down = r.up_to_down, end = ?r.end, "h2 relay ended");
            relayed.finish(core, t, &r);
        }
        Opened::Refused {
            status,
            fields,
            body: answer_body,
        } => {
            tracing::info!(client = %conn.client, tunnel = %t.config.name, status, kind = what, "upstream refused the {what}; answer relayed");
            respond_with(&mut respond, status, &fields, answer_body, conn.alt_svc.as_deref());
        }
    }
}

/// Sends a complete answer (fields and body) on a stream.
pub(crate) fn respond_with(
    respond: &mut SendResponse<Bytes>,
    status: u16,
    fields: &[Field],
    body: Vec<u8>,
    alt_svc: Option<&str>,
) {
    let mut answer = http::Response::builder().status(status);
    if let Some(v) = alt_svc {
        answer = answer.header("alt-svc", v);
    }
    for (name, value) in fields {
        answer = answer.header(name.as_str(), value.as_slice());
    }
    let answer = answer
        .body(())
        .or_else(|_| http::Response::builder().status(502).body(()));
    let Ok(answer) = answer else { return };
    let empty = body.is_empty();
    if let Ok(mut send) = respond.send_response(answer, empty) {
        if !empty {
            // Small (bounded) body: queued whole, sent as the window allows.
            let _ = send.send_data(Bytes::from(body), true);
        }
    }
}

/// A stream-level refusal, as [`answer`] decides on h2: a stream error for
/// a malformed request, a reset on a stealth tunnel, else its status and a
/// one-line body; and its log line.
fn refuse(
    conn: &Conn,
    mut respond: SendResponse<Bytes>,
    rej: Rejection,
    head: Option<&RequestHead>,
    tunnel: Option<&crate::tunnel::Tunnel>,
) {
    let a = answer(&rej, tunnel, Version::H2);
    record(&conn.core, conn.client, &rej, head, tunnel, &a);
    match a {
        Answer::Silent => respond.send_reset(h2::Reason::CANCEL),
        Answer::StreamError => respond.send_reset(h2::Reason::PROTOCOL_ERROR),
        Answer::Respond(r) => respond_with(
            &mut respond,
            r.status,
            &r.fields,
            r.body,
            conn.alt_svc.as_deref(),
        ),
    }
}
