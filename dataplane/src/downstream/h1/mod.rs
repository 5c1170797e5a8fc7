//! The HTTP/1.1 downstream driver: one request per connection, read and
//! refused or handed on (glue; the parsing is `codec::h1`).
//!
//! ```text
//! read head (codec::h1) → client address (trusted XFF) → intent → plan
//!   → h1_exchange (h1 upstream, HTTPUpgrade) | translate (h2c upstream)
//! ```

pub mod exchange;
mod to_h2c;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use crate::answer::{answer, h1_bytes, record, Answer};
use crate::codec::h1::parse_request;
use crate::core::{CoreCtx, ListenerCtx};
use crate::error::Rejection;
use crate::intent::classify;
use crate::message::RequestHead;
use crate::plan::{plan, Origin, Version};
use crate::policy::first_forwarded_for;
use crate::timeout::{until, with_timeout};
use crate::tls::Downstream;
use crate::tunnel::Tunnel;

/// Serves the one request of an HTTP/1.1 connection. `pending`: bytes
/// already read after the PROXY header.
pub async fn serve(
    core: Rc<CoreCtx>,
    lis: Rc<ListenerCtx>,
    mut down: Downstream,
    mut client: SocketAddr,
    pending: Vec<u8>,
    deadline: Instant,
) {
    let (mut head, early) =
        match read_head(&mut down, pending, core.edge.max_head_bytes, (deadline, core.edge.handshake_timeout)).await {
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
    let from = Origin {
        client,
        sni: sni.as_deref(),
        default_tunnel: lis.cfg.default_tunnel.as_deref(),
        version: Version::H1,
    };
    let param = &core.edge.token_query_param;
    let now = crate::managed::now_unix_s();
    let plan = match plan(&routes, from, &mut head, intent, param, now) {
        Ok(p) => p,
        Err((rej, tunnel)) => {
            return reject(&core, down, client, rej, Some(&head), tunnel.as_deref()).await
        }
    };
    let tunnel = plan.tunnel.clone();
    let request = exchange::Request {
        head,
        early,
        deadline,
    };
    if let Err(e) = exchange::proceed(&core, down, client, hop, request, plan).await {
        tracing::debug!(%client, "connection ended during the upgrade handshake: {e}");
    }
    drop(tunnel);
}

/// Reads a request head. `Ok(None)`: the client went away without a request.
async fn read_head(
    down: &mut Downstream,
    mut buf: Vec<u8>,
    max: usize,
    (deadline, limit): (Instant, std::time::Duration),
) -> Result<Option<(RequestHead, Vec<u8>)>, Rejection> {
    let mut chunk = vec![0u8; 4096];
    loop {
        if !buf.is_empty() {
            if let Some((head, len)) = parse_request(&buf, max)? {
                let early = buf.split_off(len);
                return Ok(Some((head, early)));
            }
        }
        match until(deadline, down.read(&mut chunk)).await {
            // The configured limit, not what was left of it at this read.
            None => return Err(Rejection::HeadTimeout(limit)),
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

/// Answers a refusal as [`answer`] decides on HTTP/1.1 (or closes silently
/// on a stealth tunnel), logs it, and closes the connection gracefully.
pub async fn reject(
    core: &CoreCtx,
    mut down: Downstream,
    client: SocketAddr,
    rej: Rejection,
    head: Option<&RequestHead>,
    tunnel: Option<&Tunnel>,
) {
    let a = answer(&rej, tunnel, Version::H1);
    record(core, client, &rej, head, tunnel, &a);
    let Answer::Respond(mut resp) = a else { return };
    if let Some(v) = core.alt_svc(&down) {
        resp.fields.push(("Alt-Svc".into(), v.as_bytes().to_vec()));
    }
    write_and_close(&mut down, &h1_bytes(&resp)).await;
}

/// Writes a final answer and closes with a lingering close: what the client
/// is still sending is drained (bounded) so that the kernel does not answer
/// it with RST and destroy the answer in flight.
pub async fn write_and_close(down: &mut Downstream, bytes: &[u8]) {
    if with_timeout(Duration::from_secs(5), down.write_all(bytes))
        .await
        .is_none()
    {
        return;
    }
    let _ = down.close().await;
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
