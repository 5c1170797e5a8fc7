//! Upstream side: dial the tunnel's upstream and read its answer head.
//!
//! Connect failures map to 502, connect or answer timeouts to 504 (DESIGN §5).
//! The answer head is read with the same sans-IO parser as requests; bytes
//! after it in the same read are returned to the caller, never dropped.

pub mod h2c;
pub mod h3;
pub mod request;
pub mod session;

use std::time::Duration;

use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;

use crate::codec::h1::parse_response;
use crate::error::Rejection;
use crate::message::ResponseHead;
use crate::resolve::Resolver;
use crate::target::Upstream;
use crate::timeout::with_timeout;
use crate::tunnel::Tunnel;

/// Connects to `t`'s upstream: its address, or the addresses its name
/// resolves to (off the core, within `timeout`; then 504), the first that
/// answers within `timeout` each.
pub async fn dial(
    resolver: &Resolver,
    t: &Tunnel,
    timeout: Duration,
) -> Result<TcpStream, Rejection> {
    let name = t.config.upstream.as_str();
    let addrs = match &t.upstream {
        Upstream::Addr(a) => vec![*a],
        Upstream::Name { host, port } => {
            match with_timeout(timeout, resolver.resolve(host, *port)).await {
                Some(Ok(addrs)) => addrs,
                Some(Err(reason)) => {
                    return Err(Rejection::UpstreamUnreachable {
                        addr: name.to_owned(),
                        reason: format!("cannot resolve: {reason}"),
                    })
                }
                None => {
                    return Err(Rejection::UpstreamTimeout {
                        addr: format!("{name} (resolving)"),
                        after: timeout,
                    })
                }
            }
        }
    };
    let mut last = Rejection::UpstreamUnreachable {
        addr: name.to_owned(),
        reason: "no address".into(),
    };
    for addr in addrs {
        match with_timeout(timeout, TcpStream::connect(addr)).await {
            Some(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Some(Err(e)) => {
                last = Rejection::UpstreamUnreachable {
                    addr: addr.to_string(),
                    reason: std::io::Error::from(e).to_string(),
                }
            }
            None => {
                last = Rejection::UpstreamTimeout {
                    addr: addr.to_string(),
                    after: timeout,
                }
            }
        }
    }
    Err(last)
}

/// Writes a request head (and what goes with it) to a dialed upstream; a
/// failure is the upstream's (502).
pub async fn send(up: &mut TcpStream, bytes: &[u8], t: &Tunnel) -> Result<(), Rejection> {
    use futures_lite::AsyncWriteExt;
    up.write_all(bytes)
        .await
        .map_err(|e| Rejection::UpstreamUnreachable {
            addr: t.config.upstream.clone(),
            reason: format!("write failed: {e}"),
        })
}

/// The upstream's answer head, its raw bytes, and what followed it.
#[derive(Debug)]
pub struct Answer {
    /// Parsed head.
    pub head: ResponseHead,
    /// Everything read: the head bytes exactly as received, then `rest`.
    pub raw: Vec<u8>,
    /// Length of the head within `raw`.
    pub head_len: usize,
}

/// Reads one response head from the upstream within `timeout`.
pub async fn read_answer<R: futures_lite::io::AsyncRead + Unpin>(
    up: &mut R,
    addr: &str,
    max: usize,
    timeout: Duration,
) -> Result<Answer, Rejection> {
    let work = async {
        let mut raw = Vec::with_capacity(1024);
        let mut chunk = vec![0u8; 4096];
        loop {
            let n = up
                .read(&mut chunk)
                .await
                .map_err(|e| Rejection::UpstreamBadAnswer(format!("read failed: {e}")))?;
            if n == 0 {
                return Err(Rejection::UpstreamBadAnswer(
                    "closed before answering".into(),
                ));
            }
            raw.extend_from_slice(&chunk[..n]);
            match parse_response(&raw, max) {
                Ok(Some((head, head_len))) => {
                    return Ok(Answer {
                        head,
                        raw,
                        head_len,
                    })
                }
                Ok(None) => continue,
                Err(e) => return Err(Rejection::UpstreamBadAnswer(e.to_string())),
            }
        }
    };
    with_timeout(timeout, work).await.unwrap_or_else(|| {
        Err(Rejection::UpstreamTimeout {
            addr: addr.to_owned(),
            after: timeout,
        })
    })
}
