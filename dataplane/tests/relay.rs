//! Relay exactness: 64 MiB each way (sha256) through the splice path and the
//! TLS copy path, half-close in each direction, early data in the head's
//! segment, reset propagation, idle timeout.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const BIG: usize = 64 << 20;

fn config(upstream: SocketAddr, extra_edge: &str) -> String {
    format!(
        r#"
[edge]
cores = 1
admin = "@ADMIN@"
{extra_edge}
[[listener]]
addr = "@LISTEN@"
[[listener]]
addr = "@TLS_LISTEN@"
tls = {{ cert = "@CERT@", key = "@KEY@" }}
[[tunnel]]
name = "raw"
hostnames = ["raw.test"]
upstream = "{upstream}"
mode = "httpupgrade"
path = "/t"
[[tunnel]]
name = "ws"
hostnames = ["echo.test"]
upstream = "{upstream}"
"#
    )
}

const UPGRADE: &[u8] =
    b"GET /t HTTP/1.1\r\nHost: raw.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";

async fn upgraded<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, early: &[u8]) -> S {
    let mut first = UPGRADE.to_vec();
    first.extend_from_slice(early);
    s.write_all(&first).await.unwrap();
    let mut got = vec![0u8; dataplane::HTTPUPGRADE_101.len()];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(got, dataplane::HTTPUPGRADE_101);
    s
}

/// Client sends 64 MiB (seed 1) then FIN; origin sends 64 MiB (seed 2) then
/// FIN; each side checks what it received. Both directions run at once.
async fn both_ways<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    s: S,
    reports: &mut mpsc::UnboundedReceiver<(usize, String)>,
) {
    let up_data = random_bytes(BIG, 1);
    let down_data = random_bytes(BIG, 2);
    let (mut r, mut w) = tokio::io::split(s);
    let send = tokio::spawn(async move {
        for chunk in up_data.chunks(100_000) {
            w.write_all(chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
        w
    });
    let got = tokio::time::timeout(Duration::from_secs(120), async {
        let mut v = Vec::with_capacity(BIG);
        r.read_to_end(&mut v).await.unwrap();
        v
    })
    .await
    .expect("download within 120 s");
    let _w = send.await.unwrap();
    assert_eq!(got.len(), BIG);
    assert_eq!(
        sha256(&got),
        sha256(&down_data),
        "upstream → client bytes differ"
    );
    let (n, hash) = tokio::time::timeout(Duration::from_secs(60), reports.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, BIG);
    assert_eq!(
        hash,
        sha256(&random_bytes(BIG, 1)),
        "client → upstream bytes differ"
    );
}

async fn both_ways_origin() -> (SocketAddr, mpsc::UnboundedReceiver<(usize, String)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = scripted_origin(move |s| {
        let tx = tx.clone();
        async move {
            let (mut r, mut w) = s.into_split();
            let writer = tokio::spawn(async move {
                let data = random_bytes(BIG, 2);
                for chunk in data.chunks(100_000) {
                    w.write_all(chunk).await.unwrap();
                }
                w.shutdown().await.unwrap();
                w
            });
            let mut v = Vec::with_capacity(BIG);
            r.read_to_end(&mut v).await.unwrap();
            let _w = writer.await;
            let _ = tx.send((v.len(), sha256(&v)));
        }
    })
    .await;
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_through_splice() {
    let (origin, mut reports) = both_ways_origin().await;
    let edge = Edge::start(&config(origin, ""));
    let s = upgraded(TcpStream::connect(edge.addr).await.unwrap(), b"").await;
    both_ways(s, &mut reports).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let spliced = edge.total("bytes_spliced");
    let copied = edge.total("bytes_copied");
    assert_eq!(spliced + copied, 2 * BIG as u64, "every byte counted once");
    // Each burst's first read is copied (small messages stay on that path);
    // a bulk transfer is spliced almost entirely.
    assert!(copied * 50 < spliced, "spliced {spliced} copied {copied}");
    eprintln!("splice path: spliced={spliced} copied={copied}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_through_tls() {
    let (origin, mut reports) = both_ways_origin().await;
    let edge = Edge::start(&config(origin, ""));
    let s = upgraded(tls_connect(&edge, "raw.test").await, b"").await;
    both_ways(s, &mut reports).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(edge.total("bytes_copied") >= 2 * BIG as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_client_first_keeps_the_other_direction_open() {
    let origin = scripted_origin(|mut s| async move {
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.write_all(format!("got {} bytes after your FIN", got.len()).as_bytes())
            .await
            .unwrap();
        s.shutdown().await.unwrap();
    })
    .await;
    let edge = Edge::start(&config(origin, ""));
    for tls in [false, true] {
        let answer = if tls {
            let mut s = upgraded(tls_connect(&edge, "raw.test").await, b"").await;
            s.write_all(b"12345").await.unwrap();
            s.shutdown().await.unwrap();
            read_to_end(&mut s).await
        } else {
            let mut s = upgraded(TcpStream::connect(edge.addr).await.unwrap(), b"").await;
            s.write_all(b"12345").await.unwrap();
            s.shutdown().await.unwrap();
            read_to_end(&mut s).await
        };
        assert_eq!(
            String::from_utf8_lossy(&answer),
            "got 5 bytes after your FIN",
            "tls={tls}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_upstream_first_keeps_the_other_direction_open() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let origin = scripted_origin(move |mut s| {
        let tx = tx.clone();
        async move {
            s.write_all(b"bye from upstream").await.unwrap();
            s.shutdown().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            let _ = tx.send(got);
        }
    })
    .await;
    let edge = Edge::start(&config(origin, ""));
    for tls in [false, true] {
        if tls {
            let mut s = upgraded(tls_connect(&edge, "raw.test").await, b"").await;
            assert_eq!(read_to_end(&mut s).await, b"bye from upstream");
            s.write_all(b"still talking").await.unwrap();
            s.shutdown().await.unwrap();
        } else {
            let mut s = upgraded(TcpStream::connect(edge.addr).await.unwrap(), b"").await;
            assert_eq!(read_to_end(&mut s).await, b"bye from upstream");
            s.write_all(b"still talking").await.unwrap();
            s.shutdown().await.unwrap();
        }
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"still talking", "tls={tls}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_data_in_the_head_segment_arrives_first() {
    let origin = tcp_echo_origin().await;
    let edge = Edge::start(&config(origin, ""));
    // HTTPUpgrade (terminated): early data goes to the raw upstream.
    let mut s = upgraded(TcpStream::connect(edge.addr).await.unwrap(), b"EARLY-").await;
    s.write_all(b"LATER").await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut s).await, b"EARLY-LATER");
    // Same over TLS.
    let mut s = upgraded(tls_connect(&edge, "raw.test").await, b"EARLY-").await;
    s.write_all(b"LATER").await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut s).await, b"EARLY-LATER");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_upgrade_forwards_early_data_after_the_head() {
    let (origin, mut heads) = upgrade_echo_origin().await;
    let edge = Edge::start(&config(origin, ""));
    let mut s = TcpStream::connect(edge.addr).await.unwrap();
    s.write_all(b"GET /p HTTP/1.1\r\nHost: echo.test\r\nConnection: Upgrade\r\nUpgrade: my-proto\r\nX-Case: KeEp\r\n\r\nEARLY")
        .await
        .unwrap();
    let (head, mut rest) = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    while rest.len() < 5 {
        let mut b = [0u8; 64];
        let n = s.read(&mut b).await.unwrap();
        rest.extend_from_slice(&b[..n]);
    }
    assert_eq!(rest, b"EARLY");
    let seen = heads.recv().await.unwrap();
    assert!(seen.starts_with("GET /p HTTP/1.1\r\nHost: echo.test\r\nConnection: Upgrade\r\nUpgrade: my-proto\r\nX-Case: KeEp\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_becomes_downstream_reset() {
    let origin = scripted_origin(|s| async move {
        let mut s = s;
        let mut b = [0u8; 5];
        let _ = s.read_exact(&mut b).await;
        #[allow(deprecated)]
        s.set_linger(Some(Duration::ZERO)).unwrap();
        drop(s);
    })
    .await;
    let edge = Edge::start(&config(origin, ""));
    let mut s = upgraded(TcpStream::connect(edge.addr).await.unwrap(), b"").await;
    s.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap();
    match r {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        Ok(n) => panic!("expected a reset, read {n} bytes"),
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(edge.total("resets_propagated"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_relay_is_closed() {
    let origin = silent_origin().await;
    let edge = Edge::start(&config(origin, "idle_timeout_ms = 300"));
    let mut s = upgraded(TcpStream::connect(edge.addr).await.unwrap(), b"").await;
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut [0u8; 8]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "edge closes an idle relay");
    assert_eq!(edge.total("idle_timeouts"), 1);
}

/// A relay that carries bytes for several idle periods is not closed, and
/// is closed once they stop: the idle timer keeps checking under traffic
/// (it is only polled when it fires, with its own waker), over splice and
/// over the TLS copy path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_relay_stays_open_and_is_closed_once_idle() {
    let origin = tcp_echo_origin().await;
    let edge = Edge::start(&config(origin, "idle_timeout_ms = 300"));
    let plain = upgraded(TcpStream::connect(edge.addr).await.unwrap(), b"").await;
    let tls = upgraded(tls_connect(&edge, "raw.test").await, b"").await;
    async fn busy_then_idle<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
        // 1.2 s of echoes, one every 50 ms: four idle periods of traffic.
        for i in 0..24u8 {
            s.write_all(&[i; 16]).await.unwrap();
            let mut back = [0u8; 16];
            tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
                .await
                .expect("echo within 10 s")
                .expect("relay still open under traffic");
            assert_eq!(back, [i; 16]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Plain: a FIN. TLS: the socket closes without close_notify, as
        // nginx does on a timeout (the peer may be gone).
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut [0u8; 8]))
            .await
            .expect("closed within 10 s of silence")
        {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            other => panic!("expected the relay closed once idle, got {other:?}"),
        }
    }
    tokio::join!(busy_then_idle(plain), busy_then_idle(tls));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(edge.total("idle_timeouts"), 2);
}
