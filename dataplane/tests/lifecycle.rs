//! Cores and shutdown: connections land on every core; SIGTERM stops
//! accepting, lets relays drain within the grace period, and exits 0.

mod support;

use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(raw: std::net::SocketAddr, grace_ms: u64) -> String {
    format!(
        r#"
[edge]
cores = 2
admin = "@ADMIN@"
shutdown_grace_ms = {grace_ms}
[[listener]]
addr = "@LISTEN@"
[[tunnel]]
name = "raw"
hostnames = ["raw.test"]
upstream = "{raw}"
mode = "httpupgrade"
path = "/"
"#
    )
}

const UP: &[u8] =
    b"GET / HTTP/1.1\r\nHost: raw.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nping";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_land_on_both_cores() {
    if std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        < 2
    {
        eprintln!("single-CPU host: nothing to spread");
        return;
    }
    let raw = tcp_echo_origin().await;
    let edge = Edge::start(&config(raw, 1000));
    for _ in 0..64 {
        let mut s = TcpStream::connect(edge.addr).await.unwrap();
        s.write_all(UP).await.unwrap();
        s.shutdown().await.unwrap();
        let got = read_to_end(&mut s).await;
        assert!(got.ends_with(b"ping"));
    }
    let per_core: Vec<u64> = edge
        .stats()
        .iter()
        .map(|c| c["connections_total"])
        .collect();
    eprintln!("connections per core: {per_core:?}");
    assert_eq!(per_core.len(), 2);
    assert!(per_core.iter().all(|&n| n > 0), "{per_core:?}");
    // 64 relays plus the harness's readiness probe.
    assert!(per_core.iter().sum::<u64>() >= 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_relays_then_exits_zero() {
    let raw = tcp_echo_origin().await;
    let mut edge = Edge::start(&config(raw, 20_000));
    let mut relay = TcpStream::connect(edge.addr).await.unwrap();
    relay.write_all(UP).await.unwrap();
    let (_, mut rest) = read_head(&mut relay).await;
    while rest.len() < 4 {
        let mut b = [0u8; 4];
        let n = relay.read(&mut b).await.unwrap();
        rest.extend_from_slice(&b[..n]);
    }
    edge.terminate();
    // New connections are refused once every core stopped accepting.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(edge.addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The established relay keeps working while draining.
    relay.write_all(b"during drain").await.unwrap();
    let mut b = [0u8; 12];
    relay.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"during drain");
    assert!(
        edge.wait(Duration::from_millis(300)).is_none(),
        "must wait for the relay"
    );
    relay.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut relay).await, b"");
    let status = tokio::task::spawn_blocking(move || {
        let s = edge.wait(Duration::from_secs(10));
        (s, edge.log())
    })
    .await
    .unwrap();
    assert_eq!(status.0.map(|s| s.code()), Some(Some(0)), "{}", status.1);
    assert!(status.1.contains("drained=true"), "{}", status.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_period_bounds_the_drain() {
    let raw = tcp_echo_origin().await;
    let mut edge = Edge::start(&config(raw, 300));
    let mut relay = TcpStream::connect(edge.addr).await.unwrap();
    relay.write_all(UP).await.unwrap();
    let _ = read_head(&mut relay).await;
    edge.terminate();
    let (status, log) =
        tokio::task::spawn_blocking(move || (edge.wait(Duration::from_secs(10)), edge.log()))
            .await
            .unwrap();
    assert_eq!(status.map(|s| s.code()), Some(Some(0)), "{log}");
    assert!(log.contains("drained=false"), "{log}");
}
