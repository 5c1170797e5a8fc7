//! Test support: a real `dataplane` process on loopback, real origins.
//!
//! [`Edge::start`] writes a config (placeholders replaced by free ports and a
//! fresh self-signed certificate), starts the binary, and waits until every
//! listener accepts. Origins are small tokio servers in the test process.
#![allow(dead_code)]

pub mod h2raw;

use std::future::Future;
use std::io::Read;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A free loopback port (bound then released; good enough on a test host).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running edge process.
pub struct Edge {
    child: Option<Child>,
    /// `@LISTEN@` (cleartext listener).
    pub addr: SocketAddr,
    /// `@TLS_LISTEN@`.
    pub tls_addr: SocketAddr,
    /// `@PP_LISTEN@` (PROXY-protocol listener).
    pub pp_addr: SocketAddr,
    /// `@XFF_LISTEN@` (trusts X-Forwarded-For).
    pub xff_addr: SocketAddr,
    /// Admin endpoint.
    pub admin: SocketAddr,
    /// PEM of the edge certificate (for clients' root store).
    pub cert_pem: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Edge {
    /// Starts an edge. `config` may use `@LISTEN@`, `@TLS_LISTEN@`,
    /// `@PP_LISTEN@`, `@XFF_LISTEN@`, `@CERT@`, `@KEY@`, `@ADMIN@`.
    pub fn start(config: &str) -> Edge {
        Self::try_start(config).expect("edge should start")
    }

    /// Like [`Edge::start`]; returns the exit status and log if it exits.
    pub fn try_start(config: &str) -> Result<Edge, (std::process::ExitStatus, String)> {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("edge.pem");
        let key = dir.path().join("edge.key");
        dataplane::tls::write_self_signed(
            &[
                "localhost",
                "echo.test",
                "raw.test",
                "connect.test",
                "auth.test",
            ],
            &cert,
            &key,
        )
        .unwrap();
        let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
        let addr: SocketAddr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
        let tls_addr: SocketAddr = format!("127.0.0.1:{}", ports[1]).parse().unwrap();
        let pp_addr: SocketAddr = format!("127.0.0.1:{}", ports[2]).parse().unwrap();
        let xff_addr: SocketAddr = format!("127.0.0.1:{}", ports[3]).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", ports[4]).parse().unwrap();
        let text = config
            .replace("@LISTEN@", &addr.to_string())
            .replace("@TLS_LISTEN@", &tls_addr.to_string())
            .replace("@PP_LISTEN@", &pp_addr.to_string())
            .replace("@XFF_LISTEN@", &xff_addr.to_string())
            .replace("@ADMIN@", &admin.to_string())
            .replace("@CERT@", cert.to_str().unwrap())
            .replace("@KEY@", key.to_str().unwrap());
        let cfg_path = dir.path().join("edge.toml");
        std::fs::write(&cfg_path, &text).unwrap();
        let log = dir.path().join("edge.log");
        // SWITCHYARD_EDGE_BIN runs the same test against another build (e.g.
        // to show that a regression test fails on the code before the fix).
        let bin = std::env::var("SWITCHYARD_EDGE_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_dataplane").to_owned());
        let child = Command::new(bin)
            .arg("--config")
            .arg(&cfg_path)
            .env(
                "RUST_LOG",
                std::env::var("EDGE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut edge = Edge {
            child: Some(child),
            addr,
            tls_addr,
            pp_addr,
            xff_addr,
            admin,
            cert_pem: cert,
            log,
            _dir: dir,
        };
        let wanted: Vec<SocketAddr> = [addr, tls_addr, pp_addr, xff_addr, admin]
            .into_iter()
            .filter(|a| text.contains(&a.to_string()))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = edge.child.as_mut().unwrap().try_wait().unwrap() {
                let log = edge.log();
                edge.child = None;
                return Err((status, log));
            }
            let serving = edge.log().matches("core serving").count();
            if serving > 0
                && wanted
                    .iter()
                    .all(|a| std::net::TcpStream::connect(a).is_ok())
            {
                return Ok(edge);
            }
            assert!(
                Instant::now() < deadline,
                "edge did not start:\n{}",
                edge.log()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// The edge's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Everything the edge logged so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Per-core counters from the admin endpoint: `(core, name) → value`.
    pub fn stats(&self) -> Vec<std::collections::HashMap<String, u64>> {
        use std::io::Write;
        let mut c = std::net::TcpStream::connect(self.admin).unwrap();
        c.write_all(b"GET /stats HTTP/1.1\r\nHost: admin\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        c.read_to_string(&mut body).unwrap();
        let json = &body[body.find("\r\n\r\n").unwrap() + 4..];
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        v["cores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                c.as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .collect()
    }

    /// Sum of one counter over all cores.
    pub fn total(&self, name: &str) -> u64 {
        self.stats().iter().map(|c| c[name]).sum()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        if let Some(c) = &self.child {
            unsafe_free_kill(c.id(), "TERM");
        }
    }

    /// Waits for exit (bounded).
    pub fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut()?;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn unsafe_free_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Reads until the end of an HTTP head; returns (head text, bytes after it).
pub async fn read_head(s: &mut (impl AsyncReadExt + Unpin)) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return (String::from_utf8_lossy(&buf).into_owned(), rest);
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("head within 10 s")
            .unwrap();
        if n == 0 {
            return (String::from_utf8_lossy(&buf).into_owned(), Vec::new());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads everything until EOF (bounded).
pub async fn read_to_end(s: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .expect("EOF within 30 s")
        .ok();
    out
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

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

/// A TLS client config trusting `cert_pem`.
pub fn tls_client(cert_pem: &std::path::Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(cert_pem).unwrap();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(cfg)
}

/// Opens a TLS connection to the edge with SNI `name`.
pub async fn tls_connect(edge: &Edge, name: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
    let cfg = tls_client(&edge.cert_pem, &[b"http/1.1"]);
    let tcp = TcpStream::connect(edge.tls_addr).await.unwrap();
    let sni = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(sni, tcp)
        .await
        .unwrap()
}

/// Sends a raw request to the cleartext listener; returns everything the
/// edge answered before closing (bounded).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    read_to_end(&mut s).await
}

/// The status code of a raw HTTP answer, or `None` if it is empty.
pub fn status_of(answer: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(answer.get(..12)?).ok()?;
    s.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// The Python interpreter with the interop packages (set by scripts/test.sh).
pub fn python() -> String {
    std::env::var("SWITCHYARD_PYTHON").unwrap_or_else(|_| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python");
        if std::path::Path::new(venv).exists() {
            venv.to_owned()
        } else {
            "python3".to_owned()
        }
    })
}

/// Path of a helper script under tests/py.
pub fn py_script(name: &str) -> String {
    format!("{}/tests/py/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// SHA-256 hex of bytes.
pub fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// `n` pseudo-random bytes (seeded).
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; n];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
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

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A relay opened through an HTTPUpgrade tunnel (`host`, path `/tun`, a TCP
/// echo upstream) that keeps echoing in the background while a test attacks
/// the edge; [`GoodRelay::finish`] says how many round trips it made.
pub struct GoodRelay {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<Result<u64, String>>,
}

impl GoodRelay {
    pub async fn start(addr: SocketAddr, host: &str) -> GoodRelay {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET /tun HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let (head, rest) = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 101"), "good relay: {head}");
        assert!(rest.is_empty());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let msg = format!("echo {n:>26}\n");
                s.write_all(msg.as_bytes())
                    .await
                    .map_err(|e| format!("write {n}: {e}"))?;
                let mut back = vec![0u8; msg.len()];
                tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
                    .await
                    .map_err(|_| format!("echo {n} not back within 10 s"))?
                    .map_err(|e| format!("read {n}: {e}"))?;
                if back != msg.as_bytes() {
                    return Err(format!("echo {n} differs"));
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(n)
        });
        GoodRelay { stop, task }
    }

    /// Stops the echo loop; panics unless every echo came back.
    pub async fn finish(self, during: &str) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let n = self
            .task
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("good relay during {during}: {e}"));
        assert!(n > 0, "good relay made no round trip during {during}");
        println!("good relay: {n} echoes during {during}");
        n
    }
}
