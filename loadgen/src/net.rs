//! Client transport: TCP (optionally from a chosen source address), an
//! optional PROXY v1/v2 header, optional TLS (rustls).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;

/// PROXY protocol version to send before anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum ProxyVersion {
    /// Text header.
    V1,
    /// Binary header.
    V2,
}

/// A client connection: cleartext or TLS.
pub enum Stream {
    /// Cleartext.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
    /// One HTTP/2 stream (ws-h2, connect-h2).
    H2(Box<crate::h2::H2Io>),
    /// One HTTP/3 stream (ws-h3, connect-h3).
    H3(Box<crate::h3::H3Io>),
    /// One WebTransport bidirectional stream (wt).
    Wt(Box<crate::h3::WtIo>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::H2(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::H3(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Wt(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::H2(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::H3(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Wt(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::H2(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::H3(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Wt(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
            Stream::H2(s) => Pin::new(s.as_mut()).poll_close(cx),
            Stream::H3(s) => Pin::new(s.as_mut()).poll_close(cx),
            Stream::Wt(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// Opens a TCP connection, from `source` if given (many source addresses let
/// one machine hold more than 64k connections to one port).
pub async fn tcp(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let s = match source {
        None => TcpStream::connect(target).await.map_err(io::Error::from)?,
        Some(ip) => {
            let domain = if target.is_ipv6() {
                socket2::Domain::IPV6
            } else {
                socket2::Domain::IPV4
            };
            let sock =
                socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
            sock.bind(&SocketAddr::new(ip, 0).into())?;
            // Loopback connects complete inside the call; this path is only
            // used by the idle mode, which opens connections once.
            sock.connect(&target.into())?;
            sock.set_nonblocking(true)?;
            TcpStream::from(sock)
        }
    };
    s.set_nodelay(true)?;
    Ok(s)
}

/// Writes a PROXY header describing this connection.
pub async fn proxy_header(s: &mut TcpStream, v: ProxyVersion) -> io::Result<()> {
    let (src, dst) = (s.local_addr()?, s.peer_addr()?);
    let bytes = match v {
        ProxyVersion::V1 => {
            let fam = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {fam} {} {} {} {}\r\n",
                src.ip(),
                dst.ip(),
                src.port(),
                dst.port()
            )
            .into_bytes()
        }
        ProxyVersion::V2 => {
            let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
            match (src, dst) {
                (SocketAddr::V4(a), SocketAddr::V4(b)) => {
                    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
                    h.extend_from_slice(&a.ip().octets());
                    h.extend_from_slice(&b.ip().octets());
                }
                (a, b) => {
                    let v6 = |x: SocketAddr| match x.ip() {
                        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                        IpAddr::V6(v6) => v6.octets(),
                    };
                    h.extend_from_slice(&[0x21, 0x21, 0, 36]);
                    h.extend_from_slice(&v6(a));
                    h.extend_from_slice(&v6(b));
                }
            }
            h.extend_from_slice(&src.port().to_be_bytes());
            h.extend_from_slice(&dst.port().to_be_bytes());
            h
        }
    };
    s.write_all(&bytes).await
}

/// A TLS client config: trusts `ca` if given, else accepts any certificate
/// (benchmarking a self-signed edge), and offers `alpn` (`http/1.1` or `h2`).
pub fn tls_config(ca: Option<&Path>, alpn: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut cfg = match ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut pem.as_slice()) {
                roots
                    .add(c.map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
