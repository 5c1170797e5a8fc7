//! What the control plane's benchmarks share: the API's bearer token,
//! arguments, free ports, percentiles, RSS, and an HTTPUpgrade probe.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The directory of the release binaries (this example's parent's parent)
/// and a temporary directory for the run (`BENCH_KEEP=1` prints it).
pub fn bench_dirs() -> Result<(std::path::PathBuf, tempfile::TempDir), Box<dyn std::error::Error>> {
    let bin = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .map(std::path::PathBuf::from)
        .ok_or("no target dir")?;
    let dir = tempfile::tempdir()?;
    if std::env::var_os("BENCH_KEEP").is_some() {
        eprintln!("bench dir: {}", dir.path().display());
    }
    Ok((bin, dir))
}

/// `controlplane --config CFG up` with the `dataplane` next to it (both in
/// `bin`), its log in `log` (`RUST_LOG`, default warn).
pub fn spawn_up(bin: &Path, cfg: &Path, log: &Path) -> std::io::Result<Child> {
    Command::new(bin.join("controlplane"))
        .arg("--config")
        .arg(cfg)
        .arg("up")
        .arg("--dataplane")
        .arg(bin.join("dataplane"))
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
}

#[derive(Clone)]
pub struct Bearer(pub tonic::metadata::MetadataValue<tonic::metadata::Ascii>);
impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

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

pub fn upgrade_ok(edge: SocketAddr, host: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(edge) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!(
        "GET /t HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut b = [0u8; 12];
    s.read_exact(&mut b).is_ok() && &b == b"HTTP/1.1 101"
}
