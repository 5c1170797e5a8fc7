//! Upstream names are resolved off the cores: a name that takes 2 s to
//! resolve holds only the connections that need it, while the core keeps
//! serving everyone else; the answer is cached for its TTL; a name whose
//! resolution outlasts the connect timeout gets 504.
//!
//! The edge's `edge.resolver` points at a DNS responder in this test (UDP,
//! hand-written below): `slow.test` answers after 2 s, `never.test` never,
//! any other query at once with no address.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The question's name (dotted, lower case) and where the question ends.
fn question(q: &[u8]) -> Option<(String, usize)> {
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    Some((labels.join("."), i + 4))
}

/// A DNS answer to query `q`: `ip` as an A record with `ttl`, or no record.
fn reply(q: &[u8], end: usize, a: Option<([u8; 4], u32)>) -> Vec<u8> {
    let mut r = q[..end].to_vec();
    r[2] = 0x81; // QR, RD
    r[3] = 0x80; // RA, NOERROR
    r[6..8].copy_from_slice(&[0, a.is_some() as u8]); // ANCOUNT
    r[8..12].copy_from_slice(&[0, 0, 0, 0]);
    if let Some((ip, ttl)) = a {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]); // name pointer, A, IN
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&[0, 4]);
        r.extend_from_slice(&ip);
    }
    r
}

/// Starts the responder; returns its address and a counter of the
/// `slow.test` A queries it received.
async fn dns_responder() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let sock = std::sync::Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = sock.local_addr().unwrap();
    let slow_queries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = slow_queries.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let q = buf[..n].to_vec();
            let Some((name, end)) = question(&q) else {
                continue;
            };
            let qtype = u16::from_be_bytes([q[end - 4], q[end - 3]]);
            let sock = sock.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let answer = match (name.as_str(), qtype) {
                    ("slow.test", 1) => {
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        Some(([127, 0, 0, 1], 60))
                    }
                    ("never.test", _) => return,
                    _ => None,
                };
                let _ = sock.send_to(&reply(&q, end, answer), from).await;
            });
        }
    });
    (addr, slow_queries)
}

/// One HTTPUpgrade round trip through `host`: connect, upgrade, echo.
async fn round_trip(edge: SocketAddr, host: &str) -> Result<Duration, String> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(edge).await.map_err(|e| e.to_string())?;
    let req = format!("GET /tun HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nping");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.ends_with(b"ping") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .map_err(|_| "no answer within 10 s".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("closed: {:?}", String::from_utf8_lossy(&got)));
        }
        got.extend_from_slice(&buf[..n]);
    }
    Ok(t0.elapsed())
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

async fn fast_round_trips(edge: SocketAddr, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(
            round_trip(edge, "fast.localhost")
                .await
                .expect("fast tunnel served"),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_name_never_stalls_the_core() {
    let (dns, slow_queries) = dns_responder().await;
    let echo = tcp_echo_origin().await;
    let port = echo.port();
    let edge = Edge::start(&format!(
        r#"
[edge]
cores = 1
resolver = "{dns}"
upstream_connect_timeout_ms = 4000
[[listener]]
addr = "@LISTEN@"
[[tunnel]]
name = "fast"
hostnames = ["fast.localhost"]
upstream = "{echo}"
mode = "httpupgrade"
path = "/tun"
stealth = false
[[tunnel]]
name = "slow"
hostnames = ["slow.localhost"]
upstream = "slow.test:{port}"
mode = "httpupgrade"
path = "/tun"
stealth = false
[[tunnel]]
name = "never"
hostnames = ["never.localhost"]
upstream = "never.test:{port}"
mode = "httpupgrade"
path = "/tun"
stealth = false
"#
    ));
    // Without a slow name in flight.
    let baseline = fast_round_trips(edge.addr, 200).await;

    // The slow name resolves in 2 s; meanwhile the same core serves the
    // fast tunnel.
    let slow = tokio::spawn(round_trip(edge.addr, "slow.localhost"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let during = fast_round_trips(edge.addr, 200).await;
    let served_while_resolving = !slow.is_finished();
    let slow_took = slow
        .await
        .unwrap()
        .expect("slow tunnel served after the answer");
    // The answer is cached for its TTL: the next connection does not wait,
    // and asks the DNS nothing.
    let asked = slow_queries.load(std::sync::atomic::Ordering::Relaxed);
    let again = round_trip(edge.addr, "slow.localhost").await.unwrap();
    let asked_again = slow_queries.load(std::sync::atomic::Ordering::Relaxed) - asked;
    // A name that never resolves: 504 at the connect timeout.
    let answer = raw_exchange(
        edge.addr,
        b"GET /tun HTTP/1.1\r\nHost: never.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    println!(
        "fast tunnel, 200 round trips each: p99 {:?} alone, {:?} while slow.test resolved; \
         slow tunnel served after {slow_took:?} (resolver answers after 2 s), again after {again:?} \
         (cached, {asked_again} more queries); never.test: {:?}",
        p99(baseline),
        p99(during.clone()),
        String::from_utf8_lossy(answer.get(..12).unwrap_or_default())
    );
    assert!(
        served_while_resolving,
        "all 200 fast round trips finished while the slow name was still resolving"
    );
    assert_eq!(
        asked_again, 0,
        "the second connection used the cached answer"
    );
    assert_eq!(
        status_of(&answer),
        Some(504),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(edge.log().contains("never.test:"), "{}", edge.log());
}
