//! TLS termination (rustls) and the downstream byte stream type.
//!
//! The certificate is loaded once; every core builds its own `ServerConfig`
//! from it, so the session cache (a mutex inside rustls) is never shared
//! between cores. ALPN offers `h2` and `http/1.1`; [`Downstream::alpn`] is
//! the switch point between the two downstream protocols.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS listener could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// File unreadable.
    #[error("{path}: {source}")]
    Read {
        /// The PEM file.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// No certificate or key in the PEM file.
    #[error("{0}: no PEM certificate or private key found")]
    Empty(String),
    /// rustls refused the pair.
    #[error("certificate/key rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate chain and key, loaded once and shared read-only.
#[derive(Debug)]
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Loads PEM files.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsSetupError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| TlsSetupError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        let cert_pem = read(cert)?;
        let chain: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|source| TlsSetupError::Read {
                path: cert.display().to_string(),
                source,
            })?;
        if chain.is_empty() {
            return Err(TlsSetupError::Empty(cert.display().to_string()));
        }
        let key_pem = read(key)?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .map_err(|source| TlsSetupError::Read {
                path: key.display().to_string(),
                source,
            })?
            .ok_or_else(|| TlsSetupError::Empty(key.display().to_string()))?;
        let id = Identity { chain, key };
        id.server_config()?;
        Ok(id)
    }

    /// A fresh server config for one core.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        // h2 first: clients that speak both prefer it (RFC 7301 §3.2, the
        // server picks; rustls picks by our order).
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// A config for QUIC: TLS 1.3 only, ALPN `h3` only, no 0-RTT (a
    /// replayed CONNECT would open a second tunnel).
    pub fn quic_server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        cfg.alpn_protocols = vec![b"h3".to_vec()];
        cfg.max_early_data_size = 0;
        Ok(Arc::new(cfg))
    }
}

/// A TCP stream with bytes that were already read in front of it (the bytes
/// that followed a PROXY header in the same read), so no stage loses input.
#[derive(Debug)]
pub struct Prefixed {
    prefix: Vec<u8>,
    pos: usize,
    /// The socket.
    pub inner: TcpStream,
}

impl Prefixed {
    /// `prefix` is returned by reads before anything from `inner`.
    pub fn new(prefix: Vec<u8>, inner: TcpStream) -> Prefixed {
        Prefixed {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.pos < self.prefix.len() {
            let n = buf.len().min(self.prefix.len() - self.pos);
            buf[..n].copy_from_slice(&self.prefix[self.pos..self.pos + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// A TLS session over a (possibly prefixed) TCP stream.
pub type TlsStream = futures_rustls::server::TlsStream<Prefixed>;

/// The downstream connection after the transport stage.
#[derive(Debug)]
pub enum Downstream {
    /// Cleartext TCP: eligible for splice.
    Plain(TcpStream),
    /// TLS-terminated: copied through buffers.
    Tls(Box<TlsStream>),
}

impl Downstream {
    /// The negotiated ALPN protocol (`None` on cleartext or without ALPN).
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Downstream::Plain(_) => None,
            Downstream::Tls(t) => t.get_ref().1.alpn_protocol(),
        }
    }

    /// The TLS SNI host name, lower-cased by rustls.
    pub fn sni(&self) -> Option<&str> {
        match self {
            Downstream::Plain(_) => None,
            Downstream::Tls(t) => t.get_ref().1.server_name(),
        }
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Downstream::Plain(s) => s,
            Downstream::Tls(t) => &t.get_ref().0.inner,
        }
    }

    /// `http` or `https`, for X-Forwarded-Proto.
    pub fn scheme(&self) -> &'static str {
        match self {
            Downstream::Plain(_) => "http",
            Downstream::Tls(_) => "https",
        }
    }
}

impl AsyncRead for Downstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Downstream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Downstream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Downstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Downstream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Downstream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Downstream::Plain(s) => Pin::new(s).poll_flush(cx),
            Downstream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Downstream::Plain(s) => Pin::new(s).poll_close(cx),
            Downstream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// Writes a self-signed certificate for `names` (demo and tests).
pub fn write_self_signed(
    names: &[&str],
    cert: &Path,
    key: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let ck = rcgen::generate_simple_self_signed(
        names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    )?;
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(cert, ck.cert.pem())?;
    std::fs::write(key, ck.key_pair.serialize_pem())?;
    Ok(())
}
