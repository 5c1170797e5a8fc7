//! Test support: a real `dataplane` process on loopback, real origins.
//!
//! [`Edge::start`] writes a config (placeholders replaced by free ports and a
//! fresh self-signed certificate), starts the binary, and waits until every
//! listener accepts. Origins are small tokio servers in the test process.
#![allow(dead_code)]

pub mod browser;
pub mod h2raw;
mod origins;
#[allow(unused_imports)] // not every test file starts an origin
pub use origins::*;

use std::io::Read;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
        // Ports are picked free, then bound by the edge: another test can
        // take one in between. Such a start is retried with fresh ports.
        for _ in 0..3 {
            match Self::try_start(config) {
                Ok(edge) => return edge,
                Err((_, log)) if log.contains("Address already in use") => continue,
                Err(e) => panic!("edge should start: {e:?}"),
            }
        }
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
        // EDGE_SOFT_NOFILE starts the edge with a lower soft open-files
        // limit (through the shell's `ulimit`), to see it raise its own.
        let mut cmd = match std::env::var("EDGE_SOFT_NOFILE") {
            Ok(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -Sn {n} && exec \"$0\" \"$@\""))
                    .arg(&bin);
                c
            }
            Err(_) => Command::new(&bin),
        };
        let child = cmd
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
        // Quoted, as the config writes them: `127.0.0.1:4000` must not be
        // found inside an upstream's `127.0.0.1:40001`.
        let in_config = |a: &SocketAddr| text.contains(&format!("\"{a}\""));
        let wanted: Vec<SocketAddr> = [addr, tls_addr, pp_addr, xff_addr, admin]
            .into_iter()
            .filter(|a| in_config(a))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = edge.child.as_mut().unwrap().try_wait().unwrap() {
                let log = edge.log();
                edge.child = None;
                return Err((status, log));
            }
            let log = edge.log();
            let serving = log.matches("core serving").count();
            // The admin port answers only once the edge bound it: another
            // process on a port picked free must not pass for it.
            let admin_up = !in_config(&admin) || log.contains("admin endpoint:");
            if serving > 0
                && admin_up
                && wanted
                    .iter()
                    .all(|a| std::net::TcpStream::connect(a).is_ok())
            {
                return Ok(edge);
            }
            if Instant::now() >= deadline {
                // Which of its addresses did not answer, and how.
                let answers: Vec<String> = wanted
                    .iter()
                    .map(|a| match std::net::TcpStream::connect(a) {
                        Ok(_) => format!("{a}: connected"),
                        Err(e) => format!("{a}: {e}"),
                    })
                    .collect();
                panic!(
                    "edge did not start (serving lines: {serving}, admin up: {admin_up}; {answers:?}):\n{}",
                    edge.log()
                );
            }
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

    /// The admin endpoint's `/stats` document.
    fn stats_json(&self) -> serde_json::Value {
        use std::io::Write;
        let mut c = std::net::TcpStream::connect(self.admin).unwrap();
        c.write_all(b"GET /stats HTTP/1.1\r\nHost: admin\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        c.read_to_string(&mut body).unwrap();
        let json = &body[body.find("\r\n\r\n").unwrap() + 4..];
        serde_json::from_str(json).unwrap()
    }

    /// Per-core counters from the admin endpoint: `(core, name) → value`.
    pub fn stats(&self) -> Vec<std::collections::HashMap<String, u64>> {
        self.stats_json()["cores"]
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

    /// Sum of one tunnel's counter over all cores.
    pub fn tunnel_total(&self, tunnel: &str, name: &str) -> u64 {
        self.stats_json()["cores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["tunnels"][tunnel][name].as_u64().unwrap_or(0))
            .sum()
    }

    /// Waits (bounded) until `probe` holds; panics with the log if it never does.
    pub fn wait_until(&self, what: &str, within: Duration, probe: impl Fn(&Edge) -> bool) {
        let deadline = Instant::now() + within;
        while !probe(self) {
            assert!(
                Instant::now() < deadline,
                "{what} within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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

/// A child process (a Python peer), killed and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (20 s at most) until `addr` accepts TCP connections.
pub fn wait_tcp(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Python `pproxy` as an HTTP CONNECT forward proxy, without auth.
pub fn pproxy() -> (Proc, SocketAddr) {
    let port = free_port();
    let child = Command::new(python())
        .args(["-m", "pproxy", "--auth", "0", "-l"])
        .arg(format!("http://127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python with `pproxy`");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_tcp(addr);
    (Proc(child), addr)
}

/// The JSON objects of a client's stdout, one per line.
pub fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A Python QUIC peer (`tests/py/<script>`, aioquic) serving with a
/// certificate for `origin.internal` signed by a fresh test CA.
pub struct QuicPeer {
    pub proc: Proc,
    /// Its UDP address.
    pub addr: SocketAddr,
    /// The test CA's PEM (for `upstream_tls.ca`).
    pub ca: PathBuf,
    /// Its stderr (one line per stream or session).
    pub log: PathBuf,
}

impl QuicPeer {
    /// Starts `script --listen 127.0.0.1:0 --cert .. --key .. args..` and
    /// waits for its `listening <port>`.
    pub fn start(script: &str, dir: &std::path::Path, args: &[&str]) -> QuicPeer {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "switchyard test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["origin.internal".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let stem = script.trim_end_matches(".py");
        let (ca_pem, cert, key_pem, log) = (
            dir.join(format!("{stem}-ca.pem")),
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
            dir.join(format!("{stem}.log")),
        );
        std::fs::write(&ca_pem, ca.pem()).unwrap();
        std::fs::write(&cert, leaf.pem()).unwrap();
        std::fs::write(&key_pem, key.serialize_pem()).unwrap();
        let mut child = Command::new(python())
            .arg(py_script(script))
            .args(["--listen", "127.0.0.1:0", "--cert"])
            .arg(&cert)
            .arg("--key")
            .arg(&key_pem)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("python with `aioquic` (scripts/test.sh installs it)");
        let port = listening_port(child.stdout.take().unwrap());
        QuicPeer {
            proc: Proc(child),
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            ca: ca_pem,
            log,
        }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The port of a peer's `listening <port>` line.
pub fn listening_port(stdout: std::process::ChildStdout) -> u16 {
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    line.trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("expected `listening <port>`, got {line:?}"))
}
