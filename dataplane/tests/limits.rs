//! Limits of one edge process: the open-files limit is raised at start,
//! `edge.max_connections` refuses new connections cheaply while established
//! relays keep working, and refusal logging under a flood is rate-limited.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(echo: std::net::SocketAddr, edge: &str) -> String {
    format!(
        r#"
[edge]
cores = 1
admin = "@ADMIN@"
{edge}
[[listener]]
addr = "@LISTEN@"
[[tunnel]]
name = "echo"
hostnames = ["echo.localhost"]
upstream = "{echo}"
mode = "httpupgrade"
path = "/tun"
"#
    )
}

/// An HTTPUpgrade relay to the echo upstream.
async fn relay(edge: &Edge) -> TcpStream {
    let mut s = TcpStream::connect(edge.addr).await.unwrap();
    s.write_all(b"GET /tun HTTP/1.1\r\nHost: echo.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// Opens `n` connections (each sending `request`, when not empty): every one
/// is closed without an answer.
async fn all_refused(edge: &Edge, n: usize, request: &[u8]) {
    for _ in 0..n {
        let mut s = TcpStream::connect(edge.addr).await.unwrap();
        if !request.is_empty() {
            let _ = s.write_all(request).await;
        }
        assert!(
            read_to_end(&mut s).await.is_empty(),
            "refused without a word"
        );
    }
}

async fn all_echo(relays: &mut [TcpStream]) {
    for (i, r) in relays.iter_mut().enumerate() {
        echoes(r, i).await;
    }
}

async fn echoes(s: &mut TcpStream, i: usize) {
    let msg = format!("relay {i:>5}\n");
    s.write_all(msg.as_bytes()).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
        .await
        .expect("echo within 10 s")
        .unwrap();
    assert_eq!(back, msg.as_bytes());
}

fn soft_nofile(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

fn hard_nofile() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(4).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_files_limit_is_raised_to_the_hard_limit() {
    let echo = tcp_echo_origin().await;
    std::env::set_var("EDGE_SOFT_NOFILE", "1024");
    let edge = Edge::start(&config(echo, ""));
    std::env::remove_var("EDGE_SOFT_NOFILE");
    let (soft, hard) = (soft_nofile(edge.pid()), hard_nofile());
    println!("started with a soft limit of 1024: the edge runs with {soft} (hard {hard})");
    assert_eq!(soft, hard);
    let per_core = (hard - 256) / 2;
    assert!(
        edge.log().contains(&format!("max_connections={per_core}")),
        "{}",
        edge.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_new_ones_are_refused_and_relays_still_echo() {
    let echo = tcp_echo_origin().await;
    let edge = Edge::start(&config(echo, "max_connections = 20"));
    let mut relays = Vec::new();
    for _ in 0..20 {
        relays.push(relay(&edge).await);
    }
    all_refused(
        &edge,
        200,
        b"GET /tun HTTP/1.1\r\nHost: echo.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    all_echo(&mut relays).await;
    let refused = edge.total("connections_refused");
    let lines = edge.log().matches("connection refused").count();
    println!(
        "max_connections = 20: 20 relays established, 200 more connections refused ({refused} counted, {lines} log lines); all 20 relays echo"
    );
    assert_eq!(refused, 200);
    assert!(lines <= 60, "{lines} log lines");
    // A slot frees up when a relay ends.
    drop(relays.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    relay(&edge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_slow_heads_gets_a_bounded_log() {
    let echo = tcp_echo_origin().await;
    let edge = Edge::start(&config(echo, "handshake_timeout_ms = 300"));
    let mut slow = Vec::new();
    for _ in 0..2000 {
        let mut s = TcpStream::connect(edge.addr).await.unwrap();
        s.write_all(b"GET /tun HTTP/1.1\r\nHost: echo.loc")
            .await
            .unwrap();
        slow.push(s);
    }
    let mut answered = 0;
    for s in &mut slow {
        let answer = read_to_end(s).await;
        if status_of(&answer) == Some(408) {
            answered += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // One more after the flood: it says how many lines it stands for.
    let _ = raw_exchange(
        edge.addr,
        b"GET / HTTP/1.1\r\nHost: nobody.localhost\r\n\r\n",
    )
    .await;
    let log = edge.log();
    let lines = log.matches("rejected:").count();
    let suppressed = edge.total("log_lines_suppressed");
    println!(
        "2000 slow heads: {answered} answered 408, {lines} log lines, {suppressed} suppressed"
    );
    assert_eq!(answered, 2000);
    assert!(lines < 200, "{lines} rejection lines");
    assert_eq!(lines as u64 + suppressed, 2001);
    assert!(log.contains("suppressed="), "{log}");
}

/// 9,000 idle relayed WebSocket connections under this machine's
/// 20,000-descriptor limit (a relayed pair holds 2), then more are refused
/// at `max_connections` while every established relay still echoes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_thousand_idle_websocket_relays_then_refusals() {
    const N: usize = 9000;
    let (origin, _heads) = upgrade_echo_origin().await;
    let edge = Edge::start(&format!(
        r#"
[edge]
cores = 1
admin = "@ADMIN@"
max_connections = {N}
[[listener]]
addr = "@LISTEN@"
[[tunnel]]
name = "ws"
hostnames = ["ws.localhost"]
upstream = "{origin}"
"#
    ));
    let pid = edge.pid();
    let (fds0, rss0) = (fd_count(pid), rss_kib(pid));
    let mut relays = Vec::with_capacity(N);
    for i in 0..N {
        let mut s = TcpStream::connect(edge.addr).await.unwrap();
        s.write_all(b"GET /chat HTTP/1.1\r\nHost: ws.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            .await
            .unwrap();
        let (head, _) = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 101"), "relay {i}: {head}");
        relays.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fds1, rss1) = (fd_count(pid), rss_kib(pid));
    all_refused(&edge, 100, b"").await;
    all_echo(&mut relays).await;
    let refused = edge.total("connections_refused");
    let lines = edge.log().lines().count();
    println!(
        "{N} idle WebSocket relays: edge fds {fds0} -> {fds1} ({:.2} per relay), RSS {rss0} -> {rss1} KiB \
         ({:.0} B per relay); 100 more refused ({refused} counted); all {N} echo; {lines} log lines",
        (fds1 - fds0) as f64 / N as f64,
        (rss1 - rss0) as f64 * 1024.0 / N as f64
    );
    assert_eq!(refused, 100);
    assert!(lines < 200, "{lines} log lines");
}
