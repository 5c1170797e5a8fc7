//! Benchmark origins, thread-per-core like the edge (SO_REUSEPORT listener
//! per core): raw TCP echo, HTTPUpgrade echo, WebSocket echo, a minimal
//! CONNECT forward proxy, and a sink. Fast enough not to be the bottleneck:
//! no per-message allocation, one buffer per connection.

use std::net::SocketAddr;
use std::time::Duration;

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::ws;

/// Origin kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Echo raw bytes.
    TcpEcho,
    /// Answer an HTTPUpgrade with the exact 101, then echo.
    HttpupgradeEcho,
    /// WebSocket handshake, then echo every frame.
    WsEcho,
    /// CONNECT host:port forward proxy.
    ConnectProxy,
    /// Read and discard.
    Sink,
    /// HTTP/3 (QUIC on UDP): RFC 9220 WebSocket echo, CONNECT echo, 200s.
    H3Echo,
}

/// Serves `kind` on `addr` on every core in `cpus` until the process ends
/// (`tls`: the h3 origin's certificate and key, else self-signed).
pub fn serve(
    kind: Kind,
    addr: SocketAddr,
    cpus: &[usize],
    tls: (Option<&std::path::Path>, Option<&std::path::Path>),
) -> std::io::Result<()> {
    if kind == Kind::H3Echo {
        return serve_h3(addr, cpus, tls);
    }
    let mut handles = Vec::new();
    for &cpu in cpus {
        let h = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpu))
            .name("origin")
            .io_memory(1 << 20)
            .spawn(move || async move {
                let l = match TcpListener::bind(addr) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("origin: bind {addr}: {e}");
                        std::process::exit(1);
                    }
                };
                loop {
                    let Ok(s) = l.accept().await else {
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let _ = s.set_nodelay(true);
                    glommio::spawn_local(async move {
                        let _ = match kind {
                            Kind::TcpEcho => echo(s, Vec::new()).await,
                            Kind::HttpupgradeEcho => httpupgrade_echo(s).await,
                            Kind::WsEcho => ws_echo(s).await,
                            Kind::ConnectProxy => connect_proxy(s).await,
                            Kind::Sink => sink(s).await,
                            Kind::H3Echo => Ok(()),
                        };
                    })
                    .detach();
                }
            })
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        handles.push(h);
    }
    eprintln!("origin {kind:?} listening on {addr} ({} cores)", cpus.len());
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

fn serve_h3(
    addr: SocketAddr,
    cpus: &[usize],
    (cert, key): (Option<&std::path::Path>, Option<&std::path::Path>),
) -> std::io::Result<()> {
    let tls = crate::h3origin::identity(cert, key)?;
    let keys = dataplane::quic::Keys::random();
    let mut handles = Vec::new();
    for (core, &cpu) in cpus.iter().enumerate() {
        let (tls, keys) = (tls.clone(), keys.clone());
        let h = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpu))
            .name("origin")
            .io_memory(1 << 20)
            .spawn(move || async move {
                if let Err(e) = crate::h3origin::serve(addr, tls, keys, core).await {
                    eprintln!("origin: h3 on {addr}: {e}");
                    std::process::exit(1);
                }
            })
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        handles.push(h);
    }
    eprintln!(
        "origin H3Echo listening on {addr} (UDP, {} cores)",
        cpus.len()
    );
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

async fn echo(mut s: TcpStream, first: Vec<u8>) -> std::io::Result<()> {
    if !first.is_empty() {
        s.write_all(&first).await?;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return s
                .shutdown(std::net::Shutdown::Write)
                .await
                .map_err(Into::into);
        }
        s.write_all(&buf[..n]).await?;
    }
}

async fn sink(mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    while s.read(&mut buf).await? > 0 {}
    Ok(())
}

/// Reads a request head; returns (head, bytes after it).
async fn head(s: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > 65536 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

/// The exact Xray answer; when the client sent a WebSocket key (a WebSocket
/// client, or a proxy that insists on one), the matching accept is added so
/// that strict intermediaries pass the 101 on.
async fn httpupgrade_echo(mut s: TcpStream) -> std::io::Result<()> {
    let (h, rest) = head(&mut s).await?;
    let answer = match websocket_key(&h) {
        Some(key) => format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            ws::accept_key(&key)
        ),
        None => "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n".to_owned(),
    };
    s.write_all(answer.as_bytes()).await?;
    echo(s, rest).await
}

fn websocket_key(head: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| v.trim().to_owned())
    })
}

async fn ws_echo(mut s: TcpStream) -> std::io::Result<()> {
    let (h, acc) = head(&mut s).await?;
    let key = websocket_key(&h).ok_or(std::io::ErrorKind::InvalidData)?;
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        ws::accept_key(&key)
    );
    s.write_all(answer.as_bytes()).await?;
    let (mut r, mut w) = futures_lite::io::split(s);
    ws_frames(&mut r, &mut w, acc).await
}

/// Echoes WebSocket frames from `r` to `w` (`acc`: bytes already read)
/// until a Close or the end of the stream.
pub(crate) async fn ws_frames<R, W>(r: &mut R, w: &mut W, mut acc: Vec<u8>) -> std::io::Result<()>
where
    R: futures_lite::io::AsyncRead + Unpin,
    W: futures_lite::io::AsyncWrite + Unpin,
{
    let mut chunk = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        // Echo every complete frame (unmasked, fragments kept as they came
        // so a fragmented message returns whole), then read more.
        while let Some((hl, len, op)) = ws::decode_server_header(&acc) {
            if acc.len() < hl + len {
                break;
            }
            let masked = acc[1] & 0x80 != 0;
            let mask = if masked {
                [acc[hl - 4], acc[hl - 3], acc[hl - 2], acc[hl - 1]]
            } else {
                [0; 4]
            };
            out.clear();
            ws::echo_frame(acc[0], &acc[hl..hl + len], mask, &mut out);
            if !out.is_empty() {
                w.write_all(&out).await?;
            }
            acc.drain(..hl + len);
            if op == 0x8 {
                return Ok(());
            }
        }
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        acc.extend_from_slice(&chunk[..n]);
    }
}

async fn connect_proxy(mut s: TcpStream) -> std::io::Result<()> {
    let (h, rest) = head(&mut s).await?;
    let target = h
        .strip_prefix("CONNECT ")
        .and_then(|r| r.split(' ').next())
        .ok_or(std::io::ErrorKind::InvalidData)?
        .to_owned();
    let addr: SocketAddr = match target.parse() {
        Ok(a) => a,
        Err(_) => {
            s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await?;
            return Ok(());
        }
    };
    let mut up = match TcpStream::connect(addr).await {
        Ok(u) => u,
        Err(_) => {
            s.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                .await?;
            return Ok(());
        }
    };
    let _ = up.set_nodelay(true);
    s.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await?;
    if !rest.is_empty() {
        up.write_all(&rest).await?;
    }
    let (mut dr, mut dw) = futures_lite::io::split(s);
    let (mut ur, mut uw) = futures_lite::io::split(up);
    let a = async {
        let _ = futures_lite::io::copy(&mut dr, &mut uw).await;
        let _ = uw.close().await;
    };
    let b = async {
        let _ = futures_lite::io::copy(&mut ur, &mut dw).await;
        let _ = dw.close().await;
    };
    futures_lite::future::zip(a, b).await;
    Ok(())
}
