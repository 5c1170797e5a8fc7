//! A raw HTTP/2 client for adversarial tests: it writes frames byte by byte,
//! so it can send what a well-behaved library refuses to (uppercase names,
//! CR/LF/NUL in values, unknown pseudo-headers, pseudo-headers in trailers,
//! a reset right after HEADERS, a PING it never answers). HPACK on the send
//! side is literals without indexing; on the receive side only frame types,
//! stream ids and error codes are read (plus the static `:status: 200`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// One frame as received.
#[derive(Debug, Clone)]
pub struct Frame {
    pub ty: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.ty {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A response HEADERS frame whose first field is the static `:status: 200`.
    pub fn is_status_200(&self) -> bool {
        self.ty == HEADERS && self.payload.first() == Some(&0x88)
    }
}

/// A raw client connection.
pub struct RawH2 {
    pub s: TcpStream,
    buf: Vec<u8>,
    /// Answer the server's PINGs (off: a client that ignores them).
    pub ack_pings: bool,
}

fn hpack_int(out: &mut Vec<u8>, first: u8, prefix_bits: u8, mut n: usize) {
    let max = (1usize << prefix_bits) - 1;
    if n < max {
        out.push(first | n as u8);
        return;
    }
    out.push(first | max as u8);
    n -= max;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// A header block of literal fields without indexing, new names, no Huffman.
pub fn header_block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name);
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value);
    }
    out
}

impl RawH2 {
    /// Connects (from `bind`, e.g. 127.0.0.2, when given) and sends the
    /// client preface and an empty SETTINGS frame.
    pub async fn connect(addr: SocketAddr, bind: Option<IpAddr>) -> std::io::Result<RawH2> {
        let s = match bind {
            Some(ip) => {
                let sock = TcpSocket::new_v4()?;
                sock.bind(SocketAddr::new(ip, 0))?;
                sock.connect(addr).await?
            }
            None => TcpStream::connect(addr).await?,
        };
        s.set_nodelay(true)?;
        let mut c = RawH2 {
            s,
            buf: Vec::new(),
            ack_pings: true,
        };
        c.s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
        c.frame(SETTINGS, 0, 0, &[]).await?;
        Ok(c)
    }

    pub async fn frame(
        &mut self,
        ty: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let mut f = Vec::with_capacity(9 + payload.len());
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        f.push(ty);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        self.s.write_all(&f).await
    }

    pub async fn headers(
        &mut self,
        stream: u32,
        fields: &[(&[u8], &[u8])],
        end_stream: bool,
    ) -> std::io::Result<()> {
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        self.frame(HEADERS, flags, stream, &header_block(fields))
            .await
    }

    pub async fn data(
        &mut self,
        stream: u32,
        data: &[u8],
        end_stream: bool,
    ) -> std::io::Result<()> {
        self.frame(DATA, if end_stream { END_STREAM } else { 0 }, stream, data)
            .await
    }

    pub async fn rst(&mut self, stream: u32, code: u32) -> std::io::Result<()> {
        self.frame(RST_STREAM, 0, stream, &code.to_be_bytes()).await
    }

    /// The next frame within `within` (SETTINGS are acknowledged, PINGs too
    /// when `ack_pings`); `None` on timeout or when the server closed.
    pub async fn next(&mut self, within: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        ty: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([
                            self.buf[5],
                            self.buf[6],
                            self.buf[7],
                            self.buf[8],
                        ]) & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    if f.ty == SETTINGS && f.flags & ACK == 0 {
                        let _ = self.frame(SETTINGS, ACK, 0, &[]).await;
                    }
                    if f.ty == PING && f.flags & ACK == 0 && self.ack_pings {
                        let _ = self.frame(PING, ACK, 0, &f.payload).await;
                    }
                    return Some(f);
                }
            }
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout_at(deadline, self.s.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// Frames until one matches `want` (or `None` on timeout / close).
    pub async fn until(
        &mut self,
        within: Duration,
        want: impl Fn(&Frame) -> bool,
    ) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let f = self.next(left).await?;
            if want(&f) {
                return Some(f);
            }
        }
    }

    /// Whether the server closed the connection within `within` (frames
    /// before the close are read and dropped).
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut chunk = [0u8; 16384];
        loop {
            match tokio::time::timeout_at(deadline, self.s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// The request pseudo-headers of a GET.
pub fn get(authority: &str, path: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    vec![
        (b":method".to_vec(), b"GET".to_vec()),
        (b":scheme".to_vec(), b"http".to_vec()),
        (b":path".to_vec(), path.as_bytes().to_vec()),
        (b":authority".to_vec(), authority.as_bytes().to_vec()),
    ]
}

/// Borrowed view of owned fields, for [`RawH2::headers`].
pub fn fields(f: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
    f.iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect()
}
