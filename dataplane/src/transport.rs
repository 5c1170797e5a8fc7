//! The transport steps before any HTTP: the PROXY header (required when the
//! listener says so), the h2c preface sniff on cleartext listeners, and the
//! TLS handshake (SNI, ALPN). Each failure is a typed [`TransportError`]:
//! the connection closes without an answer (there is no HTTP to answer in).

use std::net::SocketAddr;
use std::time::Instant;

use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;

use crate::proxy_protocol::{self, ProxyHeaderError};
use crate::timeout::until;
use crate::tls::{Downstream, Prefixed};

/// Why a connection closed before its first HTTP request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The PROXY header is missing or malformed.
    #[error(transparent)]
    ProxyHeader(#[from] ProxyHeaderError),
    /// The client closed inside (or before) the PROXY header.
    #[error("closed {0} the PROXY header")]
    ProxyClosed(&'static str),
    /// Reading failed.
    #[error("read failed: {0}")]
    Read(std::io::Error),
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// A step did not finish within the handshake timeout.
    #[error("{0} not complete within the handshake timeout")]
    Timeout(&'static str),
}

/// Reads the PROXY header (when `required`) and returns the client address
/// it names, plus the bytes that followed it.
pub async fn proxy_header(
    tcp: &mut TcpStream,
    deadline: Instant,
) -> Result<(Option<SocketAddr>, Vec<u8>), TransportError> {
    until(deadline, read_proxy_header(tcp))
        .await
        .unwrap_or(Err(TransportError::Timeout("PROXY header")))
}

/// On an `h2c` listener: reads until the bytes either are the HTTP/2
/// client preface (RFC 9113 §3.4) or cannot be. `None` if nothing usable
/// arrived within the deadline.
pub async fn sniff_h2_preface(
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

async fn read_proxy_header(
    tcp: &mut TcpStream,
) -> Result<(Option<SocketAddr>, Vec<u8>), TransportError> {
    let mut buf = Vec::with_capacity(proxy_protocol::MAX_HEADER);
    // Heap, not stack: an array here would stay in every connection's task
    // state for its whole life (async fn state is the union of all phases).
    let mut chunk = vec![0u8; 1024];
    loop {
        match proxy_protocol::parse(&buf)? {
            proxy_protocol::Parsed::Complete { len, source } => {
                return Ok((source, buf.split_off(len)))
            }
            proxy_protocol::Parsed::Incomplete => {}
        }
        let n = tcp.read(&mut chunk).await.map_err(TransportError::Read)?;
        if n == 0 {
            return Err(TransportError::ProxyClosed(if buf.is_empty() {
                "before"
            } else {
                "inside"
            }));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The TLS handshake on `tcp` (with `pending` bytes in front), within the
/// deadline.
pub async fn tls(
    acceptor: &futures_rustls::TlsAcceptor,
    tcp: TcpStream,
    pending: Vec<u8>,
    deadline: Instant,
) -> Result<Downstream, TransportError> {
    // Boxed: the handshake state is large and only lives this long.
    let hs = Box::pin(acceptor.accept(Prefixed::new(pending, tcp)));
    match until(deadline, hs).await {
        None => Err(TransportError::Timeout("TLS handshake")),
        Some(Err(e)) => Err(TransportError::Tls(e)),
        Some(Ok(s)) => Ok(Downstream::Tls(Box::new(s))),
    }
}
