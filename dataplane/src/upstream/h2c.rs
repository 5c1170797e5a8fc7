//! Per-core pool of HTTP/2 cleartext (prior knowledge) connections to
//! upstreams whose tunnel says `http_version = "h2c"`.
//!
//! One connection per upstream address carries many streams; a second one
//! is dialled only when the first has no stream slot free. A connection whose
//! driver task ended (peer closed, GOAWAY drained, I/O error) is dropped from
//! the pool and the next request dials a fresh one.
//!
//! The h2 client does not check the server's SETTINGS_ENABLE_CONNECT_PROTOCOL
//! before sending `:protocol` (DESIGN §3). Right after the handshake we send a
//! PING and wait for its ACK: the server's first SETTINGS precede that ACK on
//! the wire, so from then on `is_extended_connect_protocol_enabled` is the
//! peer's real answer.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use tokio_util::compat::FuturesAsyncReadCompatExt;

use crate::error::Rejection;
use crate::resolve::Resolver;
use crate::timeout::with_timeout;
use crate::tunnel::Tunnel;

/// Stream window we grant each upstream stream; the connection window is 4×.
const STREAM_WINDOW: u32 = 1 << 20;

struct Pooled {
    send: SendRequest<Bytes>,
    alive: Rc<Cell<bool>>,
}

/// A ready stream slot on a pooled connection.
pub struct Slot {
    /// Ready to send one request.
    pub send: SendRequest<Bytes>,
    /// The server enabled RFC 8441 extended CONNECT.
    pub extended_connect: bool,
}

/// This core's h2c connections, by upstream name.
#[derive(Default)]
pub struct H2cPool {
    conns: RefCell<HashMap<String, Vec<Pooled>>>,
}

impl std::fmt::Debug for H2cPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n: usize = self.conns.borrow().values().map(Vec::len).sum();
        write!(f, "H2cPool({n} connections)")
    }
}

impl H2cPool {
    /// A stream slot toward `t`'s upstream: on a pooled connection with a
    /// free slot, else on a newly dialled one.
    pub async fn slot(
        &self,
        resolver: &Resolver,
        t: &Tunnel,
        connect_timeout: Duration,
        handshake_timeout: Duration,
    ) -> Result<Slot, Rejection> {
        let key = &t.config.upstream;
        let candidates: Vec<SendRequest<Bytes>> = {
            let mut conns = self.conns.borrow_mut();
            let list = conns.entry(key.clone()).or_default();
            list.retain(|p| p.alive.get());
            list.iter().map(|p| p.send.clone()).collect()
        };
        for send in candidates {
            // Only a slot that is free right now; waiting here would queue
            // behind a full connection instead of opening another.
            if let Some(Ok(send)) = futures_lite::future::poll_once(send.ready()).await {
                let extended_connect = send.is_extended_connect_protocol_enabled();
                return Ok(Slot {
                    send,
                    extended_connect,
                });
            }
        }
        let send = self
            .dial(resolver, t, connect_timeout, handshake_timeout)
            .await?;
        let extended_connect = send.is_extended_connect_protocol_enabled();
        let ready = with_timeout(handshake_timeout, send.ready()).await;
        match ready {
            Some(Ok(send)) => Ok(Slot {
                send,
                extended_connect,
            }),
            Some(Err(e)) => Err(Rejection::UpstreamBadAnswer(format!("h2c: {e}"))),
            None => Err(Rejection::UpstreamTimeout {
                addr: key.clone(),
                after: handshake_timeout,
            }),
        }
    }

    async fn dial(
        &self,
        resolver: &Resolver,
        t: &Tunnel,
        connect_timeout: Duration,
        handshake_timeout: Duration,
    ) -> Result<SendRequest<Bytes>, Rejection> {
        let name = &t.config.upstream;
        let tcp = super::dial(resolver, t, connect_timeout).await?;
        let bad = |what: String| Rejection::UpstreamBadAnswer(format!("h2c handshake: {what}"));
        let timed_out = || Rejection::UpstreamTimeout {
            addr: name.clone(),
            after: handshake_timeout,
        };
        let hs = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(4 * STREAM_WINDOW)
            .max_frame_size(crate::codec::h2::MAX_FRAME)
            .handshake::<_, Bytes>(tcp.compat());
        let (send, mut conn) = match with_timeout(handshake_timeout, hs).await {
            Some(Ok(x)) => x,
            Some(Err(e)) => return Err(bad(e.to_string())),
            None => return Err(timed_out()),
        };
        let mut ping = conn.ping_pong();
        let alive = Rc::new(Cell::new(true));
        let flag = alive.clone();
        let upstream = name.clone();
        glommio::spawn_local(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%upstream, "h2c connection ended: {e}");
            }
            flag.set(false);
        })
        .detach();
        if let Some(pp) = ping.as_mut() {
            match with_timeout(handshake_timeout, pp.ping(h2::Ping::opaque())).await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(bad(e.to_string())),
                None => return Err(timed_out()),
            }
        }
        tracing::debug!(upstream = %name, extended_connect = send.is_extended_connect_protocol_enabled(), "h2c connection up");
        self.conns
            .borrow_mut()
            .entry(name.clone())
            .or_default()
            .push(Pooled {
                send: send.clone(),
                alive,
            });
        Ok(send)
    }
}
