//! Listening sockets and accept loops, per core.
//!
//! Every core binds every listener itself with SO_REUSEPORT, so the kernel
//! spreads new connections over the cores and a connection never moves.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::FutureExt;
use socket2::{Domain, Protocol, Socket, Type};

use crate::conn;
use crate::core::{CoreCtx, ListenerCtx};
use crate::stats;

/// Binds one listening socket with SO_REUSEPORT.
pub fn bind(addr: SocketAddr) -> io::Result<glommio::net::TcpListener> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let sock = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_nodelay(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    // Non-blocking, so that glommio tries each accept with one `accept`
    // (its patch; a blocking listener costs three `fcntl` per attempt).
    sock.set_nonblocking(true)?;
    Ok(crate::sys::glommio_listener(sock))
}

/// Accepts until `stop` is raised, spawning each connection behind the
/// core's gate so that shutdown can wait for them.
pub async fn accept_loop(
    listener: glommio::net::TcpListener,
    core: Rc<CoreCtx>,
    lis: Rc<ListenerCtx>,
    stop: Arc<AtomicBool>,
) {
    let mut stopped = Box::pin(async {
        while !stop.load(Ordering::Relaxed) {
            glommio::timer::sleep(Duration::from_millis(50)).await;
        }
    });
    loop {
        let next = async { Some(listener.accept().await) }
            .or(async {
                (&mut stopped).await;
                None
            })
            .await;
        let stream = match next {
            None => break,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(core = core.core, listener = %lis.cfg.name, "accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        if core.stats.connections_active.load(Ordering::Relaxed) >= core.max_connections as u64 {
            // Refused cheaply: closed before any read, counted, and logged
            // within the core's log budget. Established relays are untouched.
            stats::add(&core.stats.connections_refused, 1);
            if let Some(suppressed) = crate::answer::log_budget(&core) {
                let suppressed = (suppressed > 0).then_some(suppressed);
                tracing::warn!(core = core.core, listener = %lis.cfg.name, max = core.max_connections, suppressed, "connection refused: the core is at edge.max_connections");
            }
            drop(stream);
            continue;
        }
        let peer = match stream.peer_addr() {
            Ok(p) => p,
            Err(_) => continue,
        };
        // Boxed: the gate's wrapper would otherwise hold the connection's
        // future twice (as its capture and as what it awaits), doubling
        // every connection's task memory.
        let task = Box::pin(conn::serve(core.clone(), lis.clone(), stream, peer));
        match core.gate.spawn(task) {
            Ok(t) => {
                t.detach();
            }
            Err(e) => tracing::warn!("cannot spawn connection task: {e}"),
        }
    }
    tracing::info!(core = core.core, listener = %lis.cfg.name, "stopped accepting");
}
