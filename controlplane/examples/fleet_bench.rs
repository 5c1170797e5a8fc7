//! Fleet benchmark (not a test): how fast a change made through one node
//! reaches every core of every node, and what a new node's cold start costs
//! with a big table. Needs Debian's `etcd-server` (`etcd` on the PATH).
//!
//! ```sh
//! cargo build --release -p controlplane -p dataplane
//! cargo run --release -p controlplane --example fleet_bench -- --changes 1000 --tunnels 100000 --tokens 1000000
//! ```
//!
//! 1. A 3-member etcd cluster on loopback and three nodes (`controlplane up`,
//!    2 data-plane cores each) on one prefix. `--changes` CreateTunnel calls
//!    through node A, one at a time; for each, the time from the call until
//!    every core of the three nodes has applied the revision it made (their
//!    `applied_seq` words in shared memory). An HTTPUpgrade request for the
//!    new hostname through each node is checked every 100 changes (101).
//! 2. `--tunnels` tunnels and `--tokens` token digests are written straight
//!    into etcd under a second prefix (128 keys per transaction, in the
//!    layout the nodes write), then a new node starts on that prefix: the
//!    time until every one of its cores serves the full table, and the RSS of
//!    its two processes.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use controlplane::fleet::keys::Keys;
use controlplane::model::{TokenEntry, TunnelEntry};
use controlplane::pb;
use shmring::layout::{self, stat};

#[allow(dead_code)]
#[path = "../tests/support/etcd.rs"]
mod etcd;

const TOKEN: &str = "fleet-bench-admin-token-0123456789abcdef";

#[path = "common/mod.rs"]
mod common;
use common::{arg, bench_dirs, free_port, pct, rss_kib, spawn_up, upgrade_ok, Bearer};

/// One node: `controlplane up` on its own config, region and ports.
struct Node {
    up: Child,
    grpc: String,
    edge: SocketAddr,
    region: shmring::Region,
    shm: PathBuf,
}

impl Node {
    fn start(dir: &Path, bin: &Path, endpoints: &str, prefix: &str, name: &str) -> Node {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).expect("node dir");
        std::fs::write(d.join("admin.token"), TOKEN).expect("token");
        let grpc = format!("127.0.0.1:{}", free_port());
        let edge: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin = format!("127.0.0.1:{}", free_port());
        let shm = PathBuf::from(format!(
            "/dev/shm/switchyard-fleet-bench-{}-{name}",
            std::process::id()
        ));
        let cfg = d.join("edge.toml");
        std::fs::write(
            &cfg,
            format!(
                "[edge]\ncores = 2\nadmin = \"{admin}\"\n[control]\ngrpc = \"{grpc}\"\n\
                 store = \"etcd://{endpoints}/{prefix}\"\nnode = \"{name}\"\ncache = \"{}\"\n\
                 shm = \"{}\"\nadmin_token_file = \"{}\"\nring_bytes = {}\nsnapshot_wait_ms = 120000\n\
                 [[listener]]\naddr = \"{edge}\"\n",
                d.join("cache.db").display(),
                shm.display(),
                d.join("admin.token").display(),
                16 << 20,
            ),
        )
        .expect("config");
        let up = spawn_up(bin, &cfg, &d.join("up.log")).expect("controlplane up starts");
        let t0 = Instant::now();
        let region = loop {
            if let Ok(r) = shmring::Region::attach(&shm) {
                break r;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "{name}: no region");
            std::thread::sleep(Duration::from_millis(10));
        };
        Node {
            up,
            grpc,
            edge,
            region,
            shm,
        }
    }

    fn wait_edge(&self) {
        let t0 = Instant::now();
        while TcpStream::connect(self.edge).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(120), "edge not up");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn word(&self, core: usize, w: usize) -> u64 {
        self.region
            .stat(core, w)
            .map(|a| a.load(Ordering::Acquire))
            .unwrap_or(0)
    }

    fn cores(&self) -> usize {
        self.region.layout().cores as usize
    }

    fn version(&self) -> u64 {
        self.region
            .header(layout::H_STORE_VERSION)
            .load(Ordering::Acquire)
    }

    /// Every core holds `tunnels` and `tokens` at the node's revision.
    fn serves(&self, tunnels: usize, tokens: usize) -> bool {
        self.version() > 0
            && (0..self.cores()).all(|c| {
                self.word(c, stat::TUNNELS) == tunnels as u64
                    && self.word(c, stat::TOKENS) == tokens as u64
                    && self.word(c, stat::APPLIED_SEQ) == self.version()
            })
    }

    fn dataplane_pid(&self) -> u32 {
        self.region
            .header(layout::H_DATAPLANE_PID)
            .load(Ordering::Acquire) as u32
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let pid = self.dataplane_pid();
        let _ = self.up.kill();
        let _ = self.up.wait();
        if pid != 0 {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = std::fs::remove_file(&self.shm);
    }
}

fn tunnel_entry(name: &str, origin: &str) -> TunnelEntry {
    TunnelEntry {
        id: format!("tun_{name}"),
        name: name.into(),
        hostnames: vec![format!("{name}.bench")],
        mode: "httpupgrade".into(),
        upstream: origin.into(),
        http_version: "http/1.1".into(),
        token_auth: false,
        trusted_cidrs: vec![],
        labels: Default::default(),
        path: "/t".into(),
        stealth: false,
        created_at: 1,
        version: 0,
        upstream_tls: None,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let changes = arg("--changes", 1000);
    let n_tunnels = arg("--tunnels", 100_000);
    let n_tokens = arg("--tokens", 1_000_000);
    let (bin, dir) = bench_dirs()?;
    let origin = format!("127.0.0.1:{}", free_port());
    dataplane::demo::spawn_tcp_echo(&origin)?;
    let cluster = tokio::task::spawn_blocking(|| etcd::Cluster::start(3)).await?;
    let endpoints = cluster.endpoints();

    // 1. Propagation across three nodes.
    let nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| Node::start(dir.path(), &bin, &endpoints, "bench", n))
        .collect();
    for n in &nodes {
        n.wait_edge();
    }
    let bearer = Bearer(format!("Bearer {TOKEN}").parse()?);
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", nodes[0].grpc))?
        .connect()
        .await?;
    let mut tunnels = pb::tunnels_client::TunnelsClient::with_interceptor(ch, bearer);
    let mut call = Vec::with_capacity(changes);
    let mut everywhere = Vec::with_capacity(changes);
    let (mut checked, mut routed) = (0, 0);
    for i in 0..changes {
        let t = tunnel_entry(&format!("p{i}"), &origin);
        let start = Instant::now();
        tunnels
            .create_tunnel(pb::CreateTunnelRequest {
                tunnel: Some(pb::Tunnel {
                    name: t.name.clone(),
                    hostnames: t.hostnames.clone(),
                    upstream: origin.clone(),
                    mode: pb::Mode::Httpupgrade as i32,
                    path: "/t".into(),
                    ..Default::default()
                }),
            })
            .await?;
        call.push(start.elapsed());
        // Node A answers once its own watch brought the change back: its
        // tables' revision is the one the change made.
        let rev = nodes[0].version();
        let t0 = Instant::now();
        while nodes
            .iter()
            .any(|n| (0..n.cores()).any(|c| n.word(c, stat::APPLIED_SEQ) < rev))
        {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "change {i} not everywhere"
            );
            std::thread::sleep(Duration::from_micros(50));
        }
        everywhere.push(start.elapsed());
        if i % 100 == 0 {
            for n in &nodes {
                checked += 1;
                routed += upgrade_ok(n.edge, &format!("p{i}.bench")) as usize;
            }
        }
    }
    call.sort();
    everywhere.sort();
    println!("fleet: 3 etcd members, 3 nodes x 2 cores, {changes} tunnel creations through node A");
    println!(
        "  API call (etcd txn + own watch echo): p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        pct(&call, 0.5).as_secs_f64() * 1e3,
        pct(&call, 0.99).as_secs_f64() * 1e3,
        pct(&call, 1.0).as_secs_f64() * 1e3
    );
    println!(
        "  create -> routed on all 6 cores of 3 nodes: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        pct(&everywhere, 0.5).as_secs_f64() * 1e3,
        pct(&everywhere, 0.99).as_secs_f64() * 1e3,
        pct(&everywhere, 1.0).as_secs_f64() * 1e3
    );
    println!("  HTTPUpgrade to the new hostname: {routed}/{checked} answered 101");
    drop(nodes);

    // 2. A new node's cold start on a big table.
    let keys = Keys::new("/big");
    let client =
        etcd_client::Client::connect(endpoints.split(',').collect::<Vec<_>>(), None).await?;
    let t0 = Instant::now();
    let mut puts: Vec<(String, Vec<u8>)> = Vec::with_capacity(n_tunnels * 2 + n_tokens);
    for i in 0..n_tunnels {
        let t = tunnel_entry(&format!("t{i}"), &origin);
        puts.push((keys.host(&t.hostnames[0]), t.name.clone().into_bytes()));
        puts.push((keys.tunnel(&t.name), serde_json::to_vec(&t)?));
    }
    for i in 0..n_tokens {
        let mut digest = [0u8; 32];
        digest[..8].copy_from_slice(&(i as u64).to_le_bytes());
        digest[8] = 0x5a;
        let t = TokenEntry {
            id: format!("tok_{i:016x}"),
            name: String::new(),
            sha256: digest,
            tunnels: vec![],
            expires_at: 0,
            created_at: 1,
        };
        puts.push((keys.token(&t.id), serde_json::to_vec(&t)?));
    }
    let chunks: Vec<Vec<(String, Vec<u8>)>> = puts.chunks(128).map(|c| c.to_vec()).collect();
    drop(puts);
    let mut set = tokio::task::JoinSet::new();
    let queue = std::sync::Arc::new(std::sync::Mutex::new(chunks));
    for _ in 0..32 {
        let (queue, mut kv) = (queue.clone(), client.kv_client());
        set.spawn(async move {
            loop {
                let Some(chunk) = queue.lock().ok().and_then(|mut q| q.pop()) else {
                    return Ok::<(), etcd_client::Error>(());
                };
                let ops: Vec<etcd_client::TxnOp> = chunk
                    .into_iter()
                    .map(|(k, v)| etcd_client::TxnOp::put(k, v, None))
                    .collect();
                kv.txn(etcd_client::Txn::new().and_then(ops)).await?;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    println!(
        "cold start: {n_tunnels} tunnels + {n_tokens} token digests written to etcd in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    let node = Node::start(dir.path(), &bin, &endpoints, "big", "d");
    let (mut peak_cp, mut peak_dp) = (0, 0);
    loop {
        peak_cp = peak_cp.max(rss_kib(node.up.id()));
        peak_dp = peak_dp.max(rss_kib(node.dataplane_pid()));
        if node.serves(n_tunnels, n_tokens) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "cold start did not finish"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = start.elapsed();
    node.wait_edge();
    let served = upgrade_ok(node.edge, &format!("t{}.bench", n_tunnels - 1));
    // The cache file is written after the cores are served: RSS settles.
    for _ in 0..100 {
        peak_cp = peak_cp.max(rss_kib(node.up.id()));
        peak_dp = peak_dp.max(rss_kib(node.dataplane_pid()));
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "  new node d: process start -> every core serves the full table: {:.2} s (edge answers 101 for the last tunnel: {served})",
        took.as_secs_f64()
    );
    println!(
        "  RSS: control plane {} MiB (peak {}), data plane {} MiB (peak {}) [2 cores]",
        rss_kib(node.up.id()) / 1024,
        peak_cp / 1024,
        rss_kib(node.dataplane_pid()) / 1024,
        peak_dp / 1024
    );
    // 3. The same node restarted: it serves its cache and resumes its watch
    // from the cache's revision instead of reading 1.1M keys again. The
    // cache is written after the cores are served: wait until it is still.
    let cache = dir.path().join("d").join("cache.db");
    let t0 = Instant::now();
    let mut last = (0u64, Instant::now());
    while t0.elapsed() < Duration::from_secs(180) {
        let len = std::fs::metadata(&cache).map(|m| m.len()).unwrap_or(0);
        if len != last.0 {
            last = (len, Instant::now());
        } else if len > 0 && last.1.elapsed() > Duration::from_secs(3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "  cache file written {:.1} s after the start: {} MiB",
        (t0 + last.1.duration_since(t0))
            .duration_since(start)
            .as_secs_f64(),
        last.0 >> 20
    );
    drop(node);
    let start = Instant::now();
    let node = Node::start(dir.path(), &bin, &endpoints, "big", "d");
    loop {
        if node.serves(n_tunnels, n_tokens) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "restart did not finish"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "  node d restarted (its cache, then a watch from the cache's revision): every core serves the full table after {:.2} s",
        start.elapsed().as_secs_f64()
    );
    drop(node);
    drop(cluster);
    Ok(())
}
