//! Propagation benchmark (not a test): how fast API changes reach every
//! data-plane core, and what a big snapshot costs.
//!
//! ```sh
//! cargo build --release -p controlplane -p dataplane
//! cargo run --release -p controlplane --example propagation -- --changes 1000 --tunnels 100000 --tokens 1000000
//! # the same bulk load as a ring-overflow run (1M token upserts into 64 KiB rings):
//! cargo run --release -p controlplane --example propagation -- --changes 10 --tunnels 1000 --tokens 1000000 --ring-bytes 65536
//! ```
//!
//! 1. `--changes` CreateTunnel calls, one at a time. For each: time from the
//!    call's return until every core's `applied_seq` (its stats block in
//!    shared memory) reaches the store version the call produced — from then
//!    on a request for the new hostname is routed on every core. A real
//!    HTTPUpgrade request to the new hostname is then checked (101).
//! 2. Bulk-loads `--tunnels` tunnels and `--tokens` tokens (concurrent calls,
//!    group-committed), then asks every core for a snapshot through its
//!    `need_snapshot` word and reports the time until every core swapped it
//!    in, each core's own build time, and the data plane's RSS; then the same
//!    after `kill -9` of the data plane (the supervisor restarts it).

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use controlplane::pb;
use shmring::layout::{self, stat};

#[path = "common/mod.rs"]
mod common;
use common::{arg, bench_dirs, free_port, pct, rss_kib, spawn_up, upgrade_ok, Bearer};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let changes = arg("--changes", 1000);
    let n_tunnels = arg("--tunnels", 100_000);
    let n_tokens = arg("--tokens", 1_000_000);
    // A small ring (e.g. 65536) turns the bulk load into a ring-overflow
    // run: deltas are dropped, cores resync by snapshot, and must converge.
    let ring_bytes = arg("--ring-bytes", 16 << 20);
    let (bin, dir) = bench_dirs()?;
    let grpc = format!("127.0.0.1:{}", free_port());
    let edge: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
    let origin = format!("127.0.0.1:{}", free_port());
    dataplane::demo::spawn_tcp_echo(&origin)?;
    let shm = format!("/dev/shm/switchyard-bench-{}", std::process::id());
    let cfg = dir.path().join("edge.toml");
    std::fs::write(
        &cfg,
        format!(
            "[edge]\ncores = 0\n[control]\ngrpc = \"{grpc}\"\nstore = \"{}\"\nshm = \"{shm}\"\nadmin_token_file = \"{}\"\nring_bytes = {ring_bytes}\nsnapshot_wait_ms = 60000\n[[listener]]\naddr = \"{edge}\"\n",
            dir.path().join("store.db").display(),
            dir.path().join("admin.token").display()
        ),
    )?;
    let mut up = spawn_up(&bin, &cfg, &dir.path().join("up.log"))?;
    let t0 = Instant::now();
    while TcpStream::connect(edge).is_err() {
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = up.kill();
            return Err("edge did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let token = std::fs::read_to_string(dir.path().join("admin.token"))?;
    let bearer = Bearer(format!("Bearer {}", token.trim()).parse()?);
    let ch = tonic::transport::Channel::from_shared(format!("http://{grpc}"))?
        .connect()
        .await?;
    let mut tunnels =
        pb::tunnels_client::TunnelsClient::with_interceptor(ch.clone(), bearer.clone());
    let tokens = pb::tokens_client::TokensClient::with_interceptor(ch.clone(), bearer.clone());
    let region = shmring::Region::attach(std::path::Path::new(&shm))?;
    let cores = region.layout().cores as usize;
    let applied = |c: usize| {
        region
            .stat(c, stat::APPLIED_SEQ)
            .map(|w| w.load(Ordering::Acquire))
            .unwrap_or(0)
    };
    let version = || {
        region
            .header(layout::H_STORE_VERSION)
            .load(Ordering::Acquire)
    };
    let tunnel = |i: usize, prefix: &str| pb::Tunnel {
        name: format!("{prefix}{i}"),
        hostnames: vec![format!("{prefix}{i}.bench")],
        upstream: origin.clone(),
        mode: pb::Mode::Httpupgrade as i32,
        path: "/t".into(),
        ..Default::default()
    };

    // 1. Propagation of single changes.
    let mut after_return = Vec::with_capacity(changes);
    let mut whole_call = Vec::with_capacity(changes);
    let mut routed = 0;
    for i in 0..changes {
        let start = Instant::now();
        tunnels
            .create_tunnel(pb::CreateTunnelRequest {
                tunnel: Some(tunnel(i, "p")),
            })
            .await?;
        let returned = Instant::now();
        let v = version();
        // Sleep-poll, not spin: on a 2-core machine a spinning reader takes
        // a CPU away from the data-plane core it is waiting for.
        while (0..cores).any(|c| applied(c) < v) {
            std::thread::sleep(Duration::from_micros(20));
        }
        let done = Instant::now();
        after_return.push(done - returned);
        whole_call.push(done - start);
        if i % 100 == 0 && upgrade_ok(edge, &format!("p{i}.bench")) {
            routed += 1;
        }
    }
    after_return.sort();
    whole_call.sort();
    println!("propagation over {changes} CreateTunnel calls, {cores} cores:");
    println!(
        "  call returned → applied on every core: p50 {:?}  p99 {:?}  max {:?}",
        pct(&after_return, 0.5),
        pct(&after_return, 0.99),
        pct(&after_return, 1.0)
    );
    println!(
        "  call started → applied on every core (incl. durable commit): p50 {:?}  p99 {:?}",
        pct(&whole_call, 0.5),
        pct(&whole_call, 0.99)
    );
    println!(
        "  real upgrade to the new hostname answered 101: {routed}/{}",
        changes.div_ceil(100)
    );

    // 2. Bulk load, then snapshots.
    let load = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let workers = 256;
    for w in 0..workers {
        let mut tc =
            pb::tunnels_client::TunnelsClient::with_interceptor(ch.clone(), bearer.clone());
        let mut kc = tokens.clone();
        let origin = origin.clone();
        set.spawn(async move {
            let mut i = w;
            while i < n_tunnels {
                let t = pb::Tunnel {
                    name: format!("b{i}"),
                    hostnames: vec![format!("b{i}.bench")],
                    upstream: origin.clone(),
                    mode: pb::Mode::Httpupgrade as i32,
                    path: "/t".into(),
                    ..Default::default()
                };
                tc.create_tunnel(pb::CreateTunnelRequest { tunnel: Some(t) })
                    .await?;
                i += workers;
            }
            let mut i = w;
            while i < n_tokens {
                kc.create_token(pb::CreateTokenRequest::default()).await?;
                i += workers;
            }
            Ok::<_, tonic::Status>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    println!(
        "bulk load: {n_tunnels} tunnels + {n_tokens} tokens through gRPC in {:?}",
        load.elapsed()
    );
    let v = version();
    while (0..cores).any(|c| applied(c) < v) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let dp_pid = region
        .header(layout::H_DATAPLANE_PID)
        .load(Ordering::Acquire) as u32;
    println!(
        "  data plane RSS after the deltas: {} MiB",
        rss_kib(dp_pid) / 1024
    );
    let word = |c: usize, w: usize| region.stat(c, w).map(|w| w.load(Ordering::Acquire));
    for c in 0..cores {
        println!(
            "  core {c}: applied_seq {:?} of store version {v}, tunnels {:?}, tokens {:?}, snapshots {:?}, resync requests {:?} (ring {ring_bytes} bytes)",
            word(c, stat::APPLIED_SEQ),
            word(c, stat::TUNNELS),
            word(c, stat::TOKENS),
            word(c, stat::SNAPSHOTS),
            word(c, stat::RESYNC_REQUESTS),
        );
    }

    let snaps = |c: usize| {
        region
            .stat(c, stat::SNAPSHOTS)
            .map(|w| w.load(Ordering::Acquire))
            .unwrap_or(0)
    };
    let before: Vec<u64> = (0..cores).map(snaps).collect();
    let start = Instant::now();
    for c in 0..cores {
        if let Some(w) = region.stat(c, stat::NEED_SNAPSHOT) {
            w.store(1, Ordering::Release);
        }
    }
    while (0..cores).any(|c| snaps(c) <= before[c]) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Each core's last begin→swap time, read from its stats block.
    let snapshot_us = || -> Vec<u64> {
        (0..cores)
            .map(|c| {
                region
                    .stat(c, stat::LAST_SNAPSHOT_US)
                    .map(|w| w.load(Ordering::Relaxed))
                    .unwrap_or(0)
            })
            .collect()
    };
    let core_us = snapshot_us();
    println!(
        "snapshot of {n_tunnels}+{changes} tunnels and {n_tokens} tokens on every core: {:?} (request → swapped on all); per core begin→swap: {:?} µs; data plane RSS {} MiB",
        start.elapsed(),
        core_us,
        rss_kib(dp_pid) / 1024
    );

    let kill = Instant::now();
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg(dp_pid.to_string())
        .status();
    let pid_word = region.header(layout::H_DATAPLANE_PID);
    while pid_word.load(Ordering::Acquire) as u32 == dp_pid {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let new_pid = pid_word.load(Ordering::Acquire) as u32;
    while !upgrade_ok(edge, "b0.bench") {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let core_us = snapshot_us();
    println!(
        "data plane kill -9 → restarted, snapshot applied, serving: {:?}; per core begin→swap: {:?} µs; RSS {} MiB",
        kill.elapsed(),
        core_us,
        rss_kib(new_pid) / 1024
    );
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(up.id().to_string())
        .status();
    let _ = up.wait();
    let _ = std::fs::remove_file(&shm);
    if std::env::var_os("BENCH_KEEP").is_some() {
        let _ = dir.keep();
    }
    Ok(())
}
