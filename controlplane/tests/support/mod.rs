//! Test support: real `controlplane` and `dataplane` processes on loopback,
//! a config with free ports, a shared-memory file of its own, and an
//! authenticated tonic client.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use controlplane::pb;
use tonic::transport::Channel;

pub mod etcd;

/// A tokio runtime for a test's client calls (2 workers).
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `dataplane` binary, built next to `controlplane` by a workspace build
/// (built here when only this package was built).
pub fn dataplane_bin() -> PathBuf {
    let cp = PathBuf::from(env!("CARGO_BIN_EXE_controlplane"));
    let dp = cp.with_file_name("dataplane");
    if !dp.exists() {
        let ok = Command::new(env!("CARGO"))
            .args(["build", "-p", "dataplane", "--bin", "dataplane"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "cannot build the dataplane binary");
    }
    dp
}

/// One child process with its log file.
pub struct Proc {
    child: Option<Child>,
}

impl Proc {
    /// The pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }
    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// SIGTERM, then wait (bounded).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "TERM");
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sends a signal with the `kill` command.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// A control plane + data plane set-up in its own directory.
pub struct Plane {
    /// Temp directory (config, store, token, logs).
    pub dir: tempfile::TempDir,
    /// Config file.
    pub config: PathBuf,
    /// gRPC address.
    pub grpc: SocketAddr,
    /// Edge cleartext listener.
    pub edge: SocketAddr,
    /// The data plane's admin listener (`/stats`, `/metrics`).
    pub admin: SocketAddr,
    /// Shared-memory file.
    pub shm: PathBuf,
    /// Store file.
    pub store: PathBuf,
    log_seq: std::cell::Cell<u32>,
}

impl Plane {
    /// Writes a config (2 cores) with `extra_control` lines in `[control]`
    /// and `tunnels` appended.
    pub fn new(extra_control: &str, tunnels: &str) -> Plane {
        Plane::with_store(None, extra_control, tunnels)
    }

    /// A node of an etcd fleet: `store = "etcd://{endpoints}/{prefix}"`,
    /// `node = "{node}"`, the cache in its directory; the fleet's admin
    /// token is written to its token file.
    pub fn fleet_node(endpoints: &str, prefix: &str, node: &str, admin_token: &str) -> Plane {
        let p = Plane::with_store(
            Some(format!("etcd://{endpoints}/{prefix}")),
            &format!("node = \"{node}\"\n"),
            "",
        );
        let token = p.dir.path().join("var/admin.token");
        std::fs::create_dir_all(token.parent().unwrap()).unwrap();
        std::fs::write(token, format!("{admin_token}\n")).unwrap();
        p
    }

    /// As [`Plane::new`], with `store` (default: a file in the directory).
    pub fn with_store(store_url: Option<String>, extra_control: &str, tunnels: &str) -> Plane {
        let dir = tempfile::tempdir().unwrap();
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let edge: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let shm = PathBuf::from(format!(
            "/dev/shm/switchyard-test-{}-{}",
            std::process::id(),
            free_port()
        ));
        let store = dir.path().join("var/store.db");
        let store_value = store_url.unwrap_or_else(|| store.display().to_string());
        let cache = dir.path().join("var/cache.db");
        let text = format!(
            "[edge]\ncores = 2\nidle_timeout_ms = 60000\nshutdown_grace_ms = 1000\nadmin = \"{admin}\"\n\
             [control]\ngrpc = \"{grpc}\"\nstore = \"{store_value}\"\ncache = \"{}\"\nshm = \"{}\"\nadmin_token_file = \"{}\"\n{extra_control}\n\
             [[listener]]\naddr = \"{edge}\"\n{tunnels}\n",
            cache.display(),
            shm.display(),
            dir.path().join("var/admin.token").display(),
        );
        let config = dir.path().join("edge.toml");
        std::fs::write(&config, text).unwrap();
        Plane {
            dir,
            config,
            grpc,
            edge,
            admin,
            shm,
            store,
            log_seq: std::cell::Cell::new(0),
        }
    }

    fn log_file(&self, what: &str) -> PathBuf {
        let n = self.log_seq.get() + 1;
        self.log_seq.set(n);
        self.dir.path().join(format!("{n:02}-{what}.log"))
    }

    fn spawn(&self, mut cmd: Command, what: &str) -> Proc {
        let log = self.log_file(what);
        let child = cmd
            .env("RUST_LOG", "info")
            .current_dir(self.dir.path())
            .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Proc { child: Some(child) }
    }

    /// `controlplane up` (both processes); returns once the edge serves.
    pub fn up(&self) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_controlplane"));
        cmd.arg("--config")
            .arg(&self.config)
            .arg("up")
            .arg("--dataplane")
            .arg(dataplane_bin());
        let p = self.spawn(cmd, "up");
        self.wait_port(self.grpc);
        self.wait_port(self.edge);
        p
    }

    /// `controlplane serve` (control plane only).
    pub fn serve(&self) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_controlplane"));
        cmd.arg("--config").arg(&self.config).arg("serve");
        let p = self.spawn(cmd, "serve");
        self.wait_port(self.grpc);
        p
    }

    /// `dataplane --config` (data plane only).
    pub fn dataplane(&self) -> Proc {
        let mut cmd = Command::new(dataplane_bin());
        cmd.arg("--config").arg(&self.config);
        let p = self.spawn(cmd, "dataplane");
        self.wait_port(self.edge);
        p
    }

    /// Waits until `addr` accepts (20 s).
    pub fn wait_port(&self, addr: SocketAddr) {
        let t0 = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{addr} not accepting:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every log written so far, concatenated.
    pub fn logs(&self) -> String {
        let mut names: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log" || e == "out"))
            .collect();
        names.sort();
        let mut s = String::new();
        for n in names {
            s.push_str(&format!("== {}\n", n.display()));
            s.push_str(&std::fs::read_to_string(&n).unwrap_or_default());
        }
        s
    }

    /// Runs `controlplane --config <this plane's config> ARGS`, which must
    /// succeed: its stdout, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|err| panic!("{args:?}: {err}"))
    }

    /// [`Plane::cli`] that may fail: its stdout, or its stderr.
    pub fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(env!("CARGO_BIN_EXE_controlplane"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The admin token (written by the first start).
    pub fn admin_token(&self) -> String {
        let p = self.dir.path().join("var/admin.token");
        std::fs::read_to_string(p).unwrap().trim().to_owned()
    }

    /// Authenticated API clients.
    pub async fn client(&self) -> Client {
        Client::connect(self.grpc, &self.admin_token()).await
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        // A data plane whose `up` was killed with -9 outlives it (by design:
        // it keeps serving); the test owns it, so it ends it.
        if let Ok(r) = shmring::Region::attach(&self.shm) {
            let pid = r
                .header(shmring::layout::H_DATAPLANE_PID)
                .load(std::sync::atomic::Ordering::Acquire) as u32;
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            if pid != 0 && cwd.starts_with(self.dir.path()) {
                signal(pid, "KILL");
            }
        }
        let _ = std::fs::remove_file(&self.shm);
    }
}

/// Adds `authorization: Bearer …` to every call.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

type Svc = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

/// The three API clients.
pub struct Client {
    /// Tunnels.
    pub tunnels: pb::tunnels_client::TunnelsClient<Svc>,
    /// Tokens.
    pub tokens: pb::tokens_client::TokensClient<Svc>,
    /// Stats.
    pub stats: pb::stats_client::StatsClient<Svc>,
}

impl Client {
    /// Connects (retrying for 10 s).
    pub async fn connect(addr: SocketAddr, token: &str) -> Client {
        let t0 = Instant::now();
        let ch = loop {
            match Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(t0.elapsed() < Duration::from_secs(10), "connect: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let b = Bearer(format!("Bearer {token}").parse().unwrap());
        Client {
            tunnels: pb::tunnels_client::TunnelsClient::with_interceptor(ch.clone(), b.clone()),
            tokens: pb::tokens_client::TokensClient::with_interceptor(ch.clone(), b.clone()),
            stats: pb::stats_client::StatsClient::with_interceptor(ch, b),
        }
    }

    /// Creates a tunnel.
    pub async fn create_tunnel(&mut self, t: pb::Tunnel) -> pb::Tunnel {
        self.tunnels
            .create_tunnel(pb::CreateTunnelRequest { tunnel: Some(t) })
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits until every core is attached and has applied the store version
    /// (and holds `tokens` tokens, if given).
    pub async fn converged(&mut self, tokens: Option<u64>, within: Duration) -> pb::StatsSnapshot {
        let t0 = Instant::now();
        loop {
            let s = self
                .stats
                .get_stats(pb::GetStatsRequest {})
                .await
                .unwrap()
                .into_inner();
            let ok = !s.cores.is_empty()
                && s.cores.iter().all(|c| {
                    c.attached
                        && c.applied_seq == s.store_version
                        && tokens.is_none_or(|n| c.tokens == n)
                });
            if ok {
                return s;
            }
            assert!(t0.elapsed() < within, "not converged: {s:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An HTTPUpgrade tunnel definition toward `upstream`.
pub fn httpupgrade(name: &str, host: &str, upstream: SocketAddr) -> pb::Tunnel {
    pb::Tunnel {
        name: name.into(),
        hostnames: vec![host.into()],
        upstream: upstream.to_string(),
        mode: pb::Mode::Httpupgrade as i32,
        path: "/t".into(),
        ..Default::default()
    }
}

/// Opens an HTTPUpgrade relay through the edge; `None` unless answered 101.
pub fn open_relay(edge: SocketAddr, host: &str, token: Option<&str>) -> Option<TcpStream> {
    let mut s = TcpStream::connect(edge).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET /t HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    .ok()?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).ok()? == 0 {
            return None;
        }
        head.push(b[0]);
    }
    head.starts_with(b"HTTP/1.1 101 ").then_some(s)
}

/// One echo round trip on a relay.
pub fn echo(s: &mut TcpStream, msg: &[u8]) -> bool {
    if s.write_all(msg).is_err() {
        return false;
    }
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).is_ok() && got == msg
}

/// Starts a raw TCP echo origin on a free port.
pub fn tcp_echo() -> SocketAddr {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    dataplane::demo::spawn_tcp_echo(&addr.to_string()).unwrap();
    addr
}

/// Starts a WebSocket echo origin on a free port.
pub fn ws_echo() -> SocketAddr {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    dataplane::demo::spawn_ws_echo(&addr.to_string()).unwrap();
    addr
}

/// The Python interpreter with grpcio and websockets (set by scripts/test.sh).
pub fn python() -> String {
    std::env::var("SWITCHYARD_PYTHON").unwrap_or_else(|_| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python");
        if Path::new(venv).exists() {
            venv.to_owned()
        } else {
            "python3".to_owned()
        }
    })
}

/// Whether `needle` occurs in the file's bytes.
pub fn file_contains(path: &Path, needle: &str) -> bool {
    let b = std::fs::read(path).unwrap_or_default();
    b.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// One sample of a Prometheus text page: the value of `metric{labels}`.
pub fn sample(metrics: &str, metric: &str, labels: &str) -> Option<u64> {
    let key = format!("{metric}{{{labels}}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
}

/// Relays echoing continuously, each from its own thread, through the
/// given edges in turn: traffic that a fault must not interrupt.
pub struct RelayLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    rounds: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    workers: Vec<std::thread::JoinHandle<bool>>,
}

impl RelayLoad {
    /// Opens `n` relays to `host` (each must answer 101) and starts them.
    pub fn start(edges: &[SocketAddr], host: &str, n: usize) -> RelayLoad {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicUsize::new(0));
        let workers = (0..n)
            .map(|i| {
                let mut s = open_relay(edges[i % edges.len()], host, None).expect("relay opens");
                let (stop, rounds) = (stop.clone(), rounds.clone());
                std::thread::spawn(move || {
                    let msg = format!("relay {i} says hello\n");
                    while !stop.load(Ordering::Relaxed) {
                        if !echo(&mut s, msg.as_bytes()) {
                            return false;
                        }
                        rounds.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    echo(&mut s, b"last\n")
                })
            })
            .collect();
        RelayLoad {
            stop,
            rounds,
            workers,
        }
    }

    /// Echo round trips so far, all relays together.
    pub fn rounds(&self) -> usize {
        self.rounds.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the relays: how many of them failed at some point.
    pub fn dropped(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.workers
            .into_iter()
            .map(|w| w.join().unwrap_or(false))
            .filter(|ok| !ok)
            .count()
    }
}
