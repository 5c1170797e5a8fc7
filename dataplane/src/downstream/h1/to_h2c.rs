//! HTTP/1.1 downstream, h2c upstream (DESIGN §1): the client's Upgrade or
//! CONNECT becomes an extended CONNECT or a CONNECT stream on a pooled h2c
//! connection, and the stream's answer becomes an h1 101 (with the Accept
//! computed from the client's Key) or 200. The bytes after it are relayed
//! untouched; only WebSocket and CONNECT are translated this way.

use std::net::SocketAddr;

use futures_lite::AsyncWriteExt;

use super::reject;
use crate::core::CoreCtx;
use crate::error::Rejection;
use crate::intent::Intent;
use crate::message::{Headers, RequestHead};
use crate::plan::Plan;
use crate::policy::add_forwarding_headers;
use crate::relay::{self, RelayOptions};
use crate::tls::Downstream;
use crate::upstream::session::{self, Ask, AskKind, Deadlines, Opened};

/// HTTP/1.1 downstream, h2c upstream: the handshake is translated (the
/// client's Key answered with our Accept; CONNECT's 2xx as an h1 200), the
/// bytes after it are relayed untouched.
pub(crate) async fn to_h2c(
    core: &std::rc::Rc<CoreCtx>,
    mut down: Downstream,
    client: SocketAddr,
    hop: SocketAddr,
    mut head: RequestHead,
    early: Vec<u8>,
    plan: Plan,
) -> std::io::Result<()> {
    let asked = std::time::Instant::now();
    let t = &plan.tunnel;
    let edge = &core.edge;
    let (kind, accept) = match &plan.intent {
        _ if !crate::message::BodyFraming::of_request(&head).is_done() => {
            let rej = Rejection::NotSupported(
                "a request body cannot be translated to an h2c tunnel".into(),
            );
            reject(core, down, client, rej, Some(&head), Some(t)).await;
            return Ok(());
        }
        Intent::WebSocket => match head.get("sec-websocket-key") {
            Some(key) => (
                AskKind::WebSocket,
                Some(crate::websocket::accept_key(key.trim_ascii())),
            ),
            None => {
                let rej = crate::message::HeadError::Malformed(
                    "WebSocket upgrade without Sec-WebSocket-Key",
                );
                reject(core, down, client, rej.into(), Some(&head), Some(t)).await;
                return Ok(());
            }
        },
        Intent::Connect { authority } => (
            AskKind::Connect {
                authority: authority.clone(),
            },
            None,
        ),
        Intent::Upgrade { .. } | Intent::Session { .. } | Intent::Request => {
            let rej = Rejection::NotSupported(
                "only WebSocket and CONNECT are relayed from HTTP/1.1 to an h2c or h3 upstream".into(),
            );
            reject(core, down, client, rej, Some(&head), Some(t)).await;
            return Ok(());
        }
    };
    crate::policy::remove_connection_options(&mut head);
    add_forwarding_headers(&mut head, hop.ip(), down.scheme());
    let ask = Ask {
        kind: kind.clone(),
        authority: head.host().unwrap_or_default().to_owned(),
        path: head.target.clone(),
        fields: crate::policy::request_fields(&head),
    };
    let limits = Deadlines {
        connect: edge.upstream_connect_timeout,
        handshake: edge.upstream_handshake_timeout,
    };
    let opened = match session::open(core, t, ask, limits).await {
        Ok(o) => o,
        Err(rej) => {
            reject(core, down, client, rej, Some(&head), Some(t)).await;
            return Ok(());
        }
    };
    match opened {
        Opened::Open { leg, fields, .. } => {
            let mut answer = match &accept {
                Some(accept) => format!(
                    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n"
                ),
                None => "HTTP/1.1 200 Connection Established\r\n".to_owned(),
            }
            .into_bytes();
            crate::codec::h1::write_fields(&mut answer, &fields);
            answer.extend_from_slice(b"\r\n");
            down.write_all(&answer).await?;
            let (kind, status) = if accept.is_some() {
                ("websocket", 101)
            } else {
                ("connect", 200)
            };
            let route = crate::access::Route { kind, downstream: crate::plan::Version::H1, status, asked };
            let relayed = crate::access::Relayed::start(core, t, client, route, &head.target);
            drop((answer, fields, head));
            tracing::debug!(%client, tunnel = %t.config.name, kind, "relay to the multiplexed upstream started");
            let opts = RelayOptions {
                idle: edge.idle_timeout,
                splice: false,
                end_on_upstream_eof: false,
            };
            let prelude = relay::Prelude {
                to_up: early,
                to_down: Vec::new(),
            };
            let r =
                relay::relay_legs(relay::Leg::Down(down), leg, prelude, opts, &core.stats).await;
            tracing::debug!(%client, tunnel = %t.config.name, kind, up = r.down_to_up, down = r.up_to_down, end = ?r.end, "relay to the multiplexed upstream ended");
            relayed.finish(core, t, &r);
        }
        Opened::Refused {
            status,
            fields,
            body,
        } => {
            tracing::info!(%client, tunnel = %t.config.name, status, "h2c upstream refused; answer relayed, closing");
            let answer = crate::answer::Response {
                status,
                fields,
                body,
            };
            super::write_and_close(&mut down, &crate::answer::h1_bytes(&answer)).await;
        }
    }
    Ok(())
}
