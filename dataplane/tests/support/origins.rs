//! Upstreams for tests: scripted, echo (upgrade, TCP, WebSocket), silent,
//! and recording ones (a lenient keep-alive HTTP/1.1 origin, an h2c origin).

use std::future::Future;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{find, free_port, read_head};

/// An upstream running `script` on each accepted connection.
pub async fn scripted_origin<F, Fut>(script: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let script = std::sync::Arc::new(script);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(script(s));
        }
    });
    addr
}

/// An upstream that answers any upgrade with 101 (echoing the Upgrade token),
/// reports each request head it received, then echoes bytes until EOF and
/// half-closes.
pub async fn upgrade_echo_origin() -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (head, early) = read_head(&mut s).await;
                let upgrade = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("Upgrade: ")
                            .or_else(|| l.strip_prefix("upgrade: "))
                    })
                    .unwrap_or("websocket")
                    .to_owned();
                let is_connect = head.starts_with("CONNECT ");
                let _ = tx.send(head);
                let answer = if is_connect {
                    "HTTP/1.1 200 Connection Established\r\n\r\n".to_string()
                } else {
                    format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n\r\n")
                };
                if s.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let _ = s.write_all(&early).await;
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    (addr, rx)
}

/// A raw TCP echo upstream (for HTTPUpgrade tunnels).
pub async fn tcp_echo_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// An upstream that accepts, never reads and never says anything; its
/// receive buffer is small, so a body sent to it stalls almost at once.
pub async fn silent_origin() -> SocketAddr {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let l = sock.listen(1024).unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            held.push(s);
        }
    });
    addr
}

/// A port where nothing listens.
pub fn refused_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// A WebSocket echo upstream (tokio-tungstenite) that reports request heads.
pub async fn ws_echo_origin() -> (SocketAddr, mpsc::UnboundedReceiver<Vec<(String, String)>>) {
    use futures_util::{SinkExt, StreamExt};
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let cb = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
                          resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
                    let mut h: Vec<(String, String)> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    h.push((":path".into(), req.uri().to_string()));
                    let _ = tx.send(h);
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(s, cb).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() || m.is_binary() {
                        if ws.send(m).await.is_err() {
                            break;
                        }
                    } else if m.is_close() {
                        // tungstenite queued the Close reply; send it.
                        let _ = ws.flush().await;
                        break;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// What an HTTP/1.1 upstream parsed: one entry per request.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Request line and fields, as received.
    pub head: String,
    /// The body as the origin framed it.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The request line.
    pub fn line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }

    /// Every value of field `name` (case-insensitive).
    pub fn field(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

/// A lenient keep-alive HTTP/1.1 origin, the kind an attacker hopes to find
/// behind a proxy: fields named in `Connection` are dropped *before* it
/// frames the body (so `Connection: Content-Length` makes it ignore the
/// length), it serves pipelined requests one after another, and it ignores
/// `Upgrade` (a 200, like a server without upgrade support). Every request
/// it parsed is recorded; each answer is a keep-alive 200 whose body is
/// `saw <request line> host=<Host> xff=<X-Forwarded-For>\n`.
pub async fn lenient_origin() -> (SocketAddr, mpsc::UnboundedReceiver<Recorded>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(serve_lenient(s, tx.clone()));
        }
    });
    (addr, rx)
}

async fn serve_lenient(mut s: TcpStream, tx: mpsc::UnboundedSender<Recorded>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    // Fills `buf` to at least `n` bytes; false at EOF.
    macro_rules! fill {
        ($n:expr) => {{
            let mut ok = true;
            while buf.len() < $n {
                match s.read(&mut chunk).await {
                    Ok(k) if k > 0 => buf.extend_from_slice(&chunk[..k]),
                    _ => {
                        ok = false;
                        break;
                    }
                }
            }
            ok
        }};
    }
    loop {
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let before = buf.len();
            if !fill!(before + 1) {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let rec = Recorded {
            head: head.clone(),
            body: Vec::new(),
        };
        let hop: Vec<String> = rec
            .field("connection")
            .iter()
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect();
        let get = |name: &str| {
            if hop.iter().any(|h| h == name) {
                None
            } else {
                rec.field(name).into_iter().next()
            }
        };
        let mut body = Vec::new();
        if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let line_end = loop {
                    if let Some(i) = find(&buf, b"\r\n") {
                        break i;
                    }
                    let before = buf.len();
                    if !fill!(before + 1) {
                        return;
                    }
                };
                let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .unwrap_or(0);
                buf.drain(..line_end + 2);
                if !fill!(size + 2) {
                    return;
                }
                body.extend_from_slice(&buf[..size]);
                buf.drain(..size + 2);
                if size == 0 {
                    break;
                }
            }
        } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            if !fill!(n) {
                return;
            }
            body.extend_from_slice(&buf[..n]);
            buf.drain(..n);
        }
        let answer = format!(
            "saw {} host={} xff={}\n",
            rec.line(),
            rec.field("host").join(","),
            rec.field("x-forwarded-for").join(",")
        );
        let _ = tx.send(Recorded { head, body });
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{answer}",
            answer.len()
        );
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// What an h2c upstream received on one stream.
#[derive(Debug, Clone)]
pub struct H2Recorded {
    pub method: String,
    /// `:path` (with the query).
    pub path: String,
    /// `:protocol` of an extended CONNECT.
    pub protocol: Option<String>,
    pub fields: Vec<(String, String)>,
}

/// An h2c origin (the Rust `h2` crate, extended CONNECT enabled): records
/// every stream's request; answers 200 with body `h2c saw <path>`, and for
/// a CONNECT (plain or extended) 200 followed by an echo of the stream.
pub async fn h2c_recorder_origin() -> (SocketAddr, mpsc::UnboundedReceiver<H2Recorded>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::Builder::new()
                    .enable_connect_protocol()
                    .handshake::<_, bytes::Bytes>(s)
                    .await
                else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let (parts, mut body) = req.into_parts();
                    let rec = H2Recorded {
                        method: parts.method.to_string(),
                        path: parts
                            .uri
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                        protocol: parts
                            .extensions
                            .get::<h2::ext::Protocol>()
                            .map(|p| p.as_str().to_owned()),
                        fields: parts
                            .headers
                            .iter()
                            .map(|(n, v)| {
                                (
                                    n.to_string(),
                                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                )
                            })
                            .collect(),
                    };
                    let connect = parts.method == http::Method::CONNECT;
                    let text = format!("h2c saw {}\n", rec.path);
                    let _ = tx.send(rec);
                    tokio::spawn(async move {
                        let resp = http::Response::builder().status(200).body(()).unwrap();
                        let Ok(mut send) = respond.send_response(resp, false) else {
                            return;
                        };
                        if !connect {
                            let _ = send.send_data(bytes::Bytes::from(text), true);
                            return;
                        }
                        while let Some(Ok(b)) = body.data().await {
                            let _ = body.flow_control().release_capacity(b.len());
                            if send.send_data(b, false).is_err() {
                                return;
                            }
                        }
                        let _ = send.send_data(bytes::Bytes::new(), true);
                    });
                }
            });
        }
    });
    (addr, rx)
}
