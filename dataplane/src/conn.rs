//! The life of one TCP connection, as a straight line:
//!
//! ```text
//! accept → PROXY header → TLS/ALPN ─┬─ h1: head → intent → plan → upstream → relay   (downstream::h1)
//! (listener) (transport)  (transport) └─ h2 (ALPN h2 / h2c preface): per stream, same line (downstream::h2)
//! ```
//!
//! This file only sequences the transport steps and hands the connection to
//! its version's driver; a transport failure closes it with one log line.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use glommio::net::TcpStream;

use crate::answer::record_closed;
use crate::core::{CoreCtx, ListenerCtx};
use crate::stats;
use crate::tls::{Downstream, Prefixed};
use crate::transport::{self, TransportError};

/// Serves one accepted connection to the end.
pub async fn serve(core: Rc<CoreCtx>, lis: Rc<ListenerCtx>, tcp: TcpStream, peer: SocketAddr) {
    stats::add(&core.stats.connections_total, 1);
    let _active = crate::core::Active::new(&core.stats);
    let _ = tcp.set_nodelay(true);
    tracing::trace!(core = core.core, listener = %lis.cfg.name, %peer, "accepted");
    let deadline = Instant::now() + core.edge.handshake_timeout;

    // PROXY header: required when configured; its source is the client.
    let mut client = peer;
    let mut pending = Vec::new();
    let mut tcp = tcp;
    if lis.cfg.proxy_protocol {
        match transport::proxy_header(&mut tcp, deadline).await {
            Err(e) => return record_closed(&core, peer, &e),
            Ok((source, rest)) => {
                client = source.unwrap_or(peer);
                pending = rest;
            }
        }
    }

    // TLS: SNI recorded; ALPN picks h2 or http/1.1.
    let down = match &lis.tls {
        None if lis.cfg.h2c => {
            match transport::sniff_h2_preface(&mut tcp, &mut pending, deadline).await {
                Some(true) => {
                    let io = Prefixed::new(std::mem::take(&mut pending), tcp);
                    let deadline = Instant::now() + core.edge.handshake_timeout;
                    // Boxed: an h1 connection's task must not carry the h2
                    // connection state inline (async fn state is the union
                    // of every branch's).
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
                    let e = TransportError::Timeout("first request");
                    return record_closed(&core, client, &e);
                }
            }
        }
        None => Downstream::Plain(tcp),
        Some(acceptor) => {
            let pending = std::mem::take(&mut pending);
            match transport::tls(acceptor, tcp, pending, deadline).await {
                Ok(d) => d,
                Err(e) => return record_closed(&core, client, &e),
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
    crate::downstream::h1::serve(core.clone(), lis, down, client, pending, deadline).await;
}
