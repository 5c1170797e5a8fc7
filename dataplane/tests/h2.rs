//! HTTP/2 through the edge with third-party clients and upstreams:
//! Python `h2` (RFC 8441 extended CONNECT, plain CONNECT, rapid reset, a
//! slow reader) and curl downstream; tokio-tungstenite, Python `pproxy` and
//! an h2c origin built on Python `h2` + `wsproto` upstream.
//!
//! Every WebSocket combination {h1, h2} downstream × {http/1.1, h2c}
//! upstream and every CONNECT combination moves 16 MiB each way, compared by
//! SHA-256 (by the Python client for h2 downstreams, here for h1 ones).
//!
//! One file per feature: HTTP/2 is one, with these seven scenarios, so the
//! file runs past 600 lines on purpose.

mod support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio_tungstenite::tungstenite::Message;

const MIB16: usize = 16 << 20;

/// The h2c origin (Python `h2` + `wsproto`): RFC 8441 WebSocket echo,
/// CONNECT proxy, ordinary requests.
fn h2_origin(extra: &[&str]) -> (Proc, SocketAddr) {
    let port = free_port();
    let child = Command::new(python())
        .arg(py_script("h2_origin.py"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python with `h2` and `wsproto` (scripts/test.sh installs them)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_tcp(addr);
    (Proc(child), addr)
}

/// Runs `h2_client.py` with `args`; returns (exit code, stdout, stderr).
fn h2_client(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(python())
        .arg(py_script("h2_client.py"))
        .args(["--timeout", "30", "--deadline", "120"])
        .args(args)
        .output()
        .expect("python h2 client");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn statuses(stdout: &str) -> Vec<i64> {
    json_lines(stdout)
        .iter()
        .filter_map(|v| v.get("status").and_then(|s| s.as_i64()))
        .collect()
}

fn assert_ok(what: &str, (code, out, err): &(i32, String, String), edge: &Edge) {
    assert_eq!(
        *code,
        0,
        "{what}: h2_client failed\nstdout:\n{out}\nstderr:\n{err}\nedge log:\n{}",
        edge.log()
    );
}

struct Setup {
    edge: Edge,
    h2c_addr: SocketAddr,
    _origins: Vec<Proc>,
}

async fn setup() -> Setup {
    let (ws_h1, _) = ws_echo_origin().await;
    let target = tcp_echo_origin().await;
    let (o1, h2c) = h2_origin(&[]);
    let (o2, fwd_h1) = pproxy();
    let h2c_addr = free_port();
    let h2c_addr: SocketAddr = format!("127.0.0.1:{h2c_addr}").parse().unwrap();
    let edge = Edge::start(&format!(
        r#"
[edge]
cores = 1
[[listener]]
addr = "@LISTEN@"
h2c = true
default_tunnel = "fwd-h1"
[[listener]]
addr = "@XFF_LISTEN@"
h2c = true
default_tunnel = "fwd-h2c"
[[listener]]
addr = "@TLS_LISTEN@"
tls = {{ cert = "@CERT@", key = "@KEY@" }}
[[tunnel]]
name = "ws-h1"
hostnames = ["echo.test"]
upstream = "{ws_h1}"
[[tunnel]]
name = "ws-h2c"
hostnames = ["raw.test"]
upstream = "{h2c}"
http_version = "h2c"
[[tunnel]]
name = "fwd-h1"
hostnames = ["localhost"]
upstream = "{fwd_h1}"
[[tunnel]]
name = "fwd-h2c"
hostnames = ["connect.test"]
upstream = "{h2c}"
http_version = "h2c"
"#
    ));
    // The CONNECT target, for every CONNECT test.
    std::env::set_var("H2_TEST_TARGET", target.to_string());
    Setup {
        edge,
        h2c_addr,
        _origins: vec![o1, o2],
    }
}

fn target() -> String {
    std::env::var("H2_TEST_TARGET").unwrap()
}

fn tls_args(edge: &Edge) -> Vec<String> {
    vec![
        "--connect".into(),
        edge.tls_addr.to_string(),
        "--tls".into(),
        "--cafile".into(),
        edge.cert_pem.to_str().unwrap().into(),
        "--sni".into(),
        "localhost".into(),
    ]
}

fn run_h2(prefix: &[String], rest: &[&str]) -> (i32, String, String) {
    let mut args: Vec<&str> = prefix.iter().map(String::as_str).collect();
    args.extend_from_slice(rest);
    h2_client(&args)
}

/// h1 WebSocket client (tokio-tungstenite) through the edge: 16 × 1 MiB
/// binary messages echoed exactly.
async fn h1_ws_16mib(edge: &Edge, host: &str) {
    let url = format!("ws://{host}:{}/chat", edge.addr.port());
    let tcp = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    assert_eq!(resp.status(), 101);
    let mut sent = Vec::new();
    let mut got = Vec::new();
    for i in 0..16u64 {
        let m = random_bytes(1 << 20, 1000 + i);
        sent.extend_from_slice(&m);
        ws.send(Message::binary(m)).await.unwrap();
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => got.extend_from_slice(&b),
            other => panic!("{host}: unexpected {other:?}\n{}", edge.log()),
        }
    }
    assert_eq!(sha256(&got), sha256(&sent), "{host}: echo differs");
    let _ = ws.close(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_all_four_combinations_16_mib_each_way() {
    let s = setup().await;
    let edge = &s.edge;
    let bytes = MIB16.to_string();
    // h2 (TLS, ALPN h2) → http/1.1 upstream (tokio-tungstenite echo).
    let r = run_h2(
        &tls_args(edge),
        &[
            "ws",
            "--authority",
            "echo.test",
            "--path",
            "/chat",
            "--bytes",
            &bytes,
            "--streams",
            "2",
        ],
    );
    assert_ok("h2 tls → h1", &r, edge);
    // h2c (prior knowledge) → h2c upstream (RFC 8441 origin).
    let plain = vec!["--connect".to_string(), edge.addr.to_string()];
    let r = run_h2(
        &plain,
        &[
            "ws",
            "--authority",
            "raw.test",
            "--path",
            "/chat",
            "--bytes",
            &bytes,
            "--streams",
            "2",
        ],
    );
    assert_ok("h2c → h2c", &r, edge);
    // h2 TLS → h2c upstream, and h2c → h1 upstream.
    let r = run_h2(
        &tls_args(edge),
        &[
            "ws",
            "--authority",
            "raw.test",
            "--path",
            "/chat",
            "--bytes",
            &bytes,
        ],
    );
    assert_ok("h2 tls → h2c", &r, edge);
    let r = run_h2(
        &plain,
        &[
            "ws",
            "--authority",
            "echo.test",
            "--path",
            "/chat",
            "--bytes",
            &bytes,
        ],
    );
    assert_ok("h2c → h1", &r, edge);
    // h1 → h2c upstream (translated: Key answered with our Accept) and h1 → h1.
    h1_ws_16mib(edge, "raw.test").await;
    h1_ws_16mib(edge, "echo.test").await;
    let _ = s.h2c_addr;
}

/// Plain CONNECT over h1 through the edge: 16 MiB each way, then a
/// half-close once the echo is complete (pproxy closes both ways on EOF).
fn h1_connect_16mib(edge_addr: SocketAddr, target: &str) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(edge_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed in the answer head");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let data = random_bytes(MIB16, 77);
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(&data).unwrap();
        (w, data)
    });
    let mut got = vec![0u8; MIB16];
    s.read_exact(&mut got).unwrap();
    let (w, data) = writer.join().unwrap();
    assert_eq!(sha256(&got), sha256(&data), "{target} via {edge_addr}");
    w.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(s.read(&mut b).unwrap(), 0, "FIN after the half-close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_all_four_combinations_16_mib_each_way() {
    let s = setup().await;
    let edge = &s.edge;
    let target = target();
    let bytes = MIB16.to_string();
    // h2c downstream on @LISTEN@ → pproxy (h1); on @XFF_LISTEN@ → h2c proxy.
    let plain_h1 = vec!["--connect".to_string(), edge.addr.to_string()];
    // pproxy closes both ways on the client's EOF: half-close after the echo.
    let r = run_h2(
        &plain_h1,
        &[
            "connect",
            "--target",
            &target,
            "--bytes",
            &bytes,
            "--streams",
            "2",
            "--close-after-echo",
        ],
    );
    assert_ok("h2c CONNECT → h1 proxy", &r, edge);
    let plain_h2c = vec!["--connect".to_string(), edge.xff_addr.to_string()];
    let r = run_h2(
        &plain_h2c,
        &[
            "connect",
            "--target",
            &target,
            "--bytes",
            &bytes,
            "--streams",
            "2",
        ],
    );
    assert_ok("h2c CONNECT → h2c proxy", &r, edge);
    // h2 over TLS: routed by SNI (connect.test → the h2c proxy).
    let mut tls = tls_args(edge);
    *tls.last_mut().unwrap() = "connect.test".into();
    let r = run_h2(&tls, &["connect", "--target", &target, "--bytes", &bytes]);
    assert_ok("h2 tls CONNECT → h2c proxy (SNI)", &r, edge);
    // h1 downstream → h2c proxy, and → h1 proxy.
    let (xff, addr, t) = (edge.xff_addr, edge.addr, target.clone());
    tokio::task::spawn_blocking(move || {
        h1_connect_16mib(xff, &t);
        h1_connect_16mib(addr, &t);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misdirected_421_both_ways_on_one_connection() {
    let s = setup().await;
    let edge = &s.edge;
    let target = target();
    let plain = vec!["--connect".to_string(), edge.addr.to_string()];
    // CONNECT first, then a reverse request and a WebSocket: both 421.
    let connect = format!("connect:{target}");
    let (_, out, err) = run_h2(
        &plain,
        &[
            "sequence",
            "--step",
            &connect,
            "--step",
            "get:echo.test:/",
            "--step",
            "ws:echo.test:/chat",
        ],
    );
    assert_eq!(
        statuses(&out),
        vec![200, 421, 421],
        "{out}\n{err}\n{}",
        edge.log()
    );
    // A reverse request first, then CONNECT: 421.
    let (_, out, err) = run_h2(
        &plain,
        &[
            "sequence",
            "--step",
            "ws:echo.test:/chat",
            "--step",
            &connect,
        ],
    );
    assert_eq!(statuses(&out), vec![200, 421], "{out}\n{err}");
    assert!(edge
        .log()
        .contains("on a connection already used for the other kind"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_leaves_the_edge_serving_with_bounded_memory() {
    let s = setup().await;
    let edge = &s.edge;
    let pid = edge.pid();
    let before = rss_kib(pid);
    let plain = vec!["--connect".to_string(), edge.addr.to_string()];
    // The flood comes from 127.0.0.2: early resets are also charged to the
    // client's address, and the good client below connects from 127.0.0.1.
    let flood = vec![
        "--connect".to_string(),
        edge.addr.to_string(),
        "--bind".to_string(),
        "127.0.0.2".to_string(),
    ];
    let (code, out, err) = run_h2(
        &flood,
        &[
            "rapid-reset",
            "--count",
            "20000",
            "--authority",
            "echo.test",
            "--path",
            "/",
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let summary = json_lines(&out).pop().unwrap();
    let after = rss_kib(pid);
    println!("rapid reset: {summary}; edge RSS {before} KiB → {after} KiB");
    // h2's pending-reset limit answers the flood with GOAWAY(ENHANCE_YOUR_CALM).
    assert_eq!(summary["goaway"].as_i64(), Some(11), "{summary}");
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
    // Everyone else is still served.
    let r = run_h2(
        &plain,
        &[
            "ws",
            "--authority",
            "echo.test",
            "--path",
            "/chat",
            "--bytes",
            "65536",
        ],
    );
    assert_ok("after the flood", &r, edge);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_stalls_the_upstream_then_gets_everything() {
    let s = setup().await;
    let edge = &s.edge;
    let pid = edge.pid();
    let before = rss_kib(pid);
    let plain = vec!["--connect".to_string(), edge.addr.to_string()];
    let pid_copy = pid;
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        for _ in 0..40 {
            peak = peak.max(rss_kib(pid_copy));
            std::thread::sleep(Duration::from_millis(100));
        }
        peak
    });
    let n = (64usize << 20).to_string();
    let r = run_h2(
        &plain,
        &[
            "slow-reader",
            "--authority",
            "raw.test",
            "--path",
            &format!("/source/{n}"),
            "--bytes",
            &n,
            "--pause",
            "3",
        ],
    );
    let peak = sampler.join().unwrap();
    assert_ok("slow reader", &r, edge);
    println!(
        "slow reader: edge RSS {before} KiB, peak while paused {peak} KiB\n{}",
        r.1
    );
    // 64 MiB were sent; flow control keeps the edge's share to its windows.
    assert!(
        peak < before + 24 * 1024,
        "edge buffered: {before} → {peak} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_ordinary_requests_over_h2_and_h2c() {
    let web = scripted_origin(|mut s| async move {
        use tokio::io::AsyncWriteExt;
        let (head, _) = read_head(&mut s).await;
        let path = head.split(' ').nth(1).unwrap_or("?").to_owned();
        let text = format!("hello over h1 path={path}\n");
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Origin: h1\r\n\r\n{text}",
            text.len()
        );
        let _ = s.write_all(resp.as_bytes()).await;
        let _ = s.shutdown().await;
    })
    .await;
    let edge = Edge::start(&format!(
        r#"
[edge]
cores = 1
[[listener]]
addr = "@LISTEN@"
h2c = true
[[listener]]
addr = "@TLS_LISTEN@"
tls = {{ cert = "@CERT@", key = "@KEY@" }}
[[tunnel]]
name = "web"
hostnames = ["echo.test"]
upstream = "{web}"
"#
    ));
    // curl with `args`; returns stdout, panics with stderr on a failed run.
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "15"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (String::from_utf8_lossy(&out.stdout).into_owned(), err)
    };
    let tls = edge.tls_addr.port();
    let cert = edge.cert_pem.to_str().unwrap();
    let resolve = format!("echo.test:{tls}:127.0.0.1");
    let url = format!("https://echo.test:{tls}/over-tls");
    let (text, err) = curl(&[
        "--http2",
        "-w",
        " %{http_version}",
        "--cacert",
        cert,
        "--resolve",
        &resolve,
        &url,
    ]);
    assert_eq!(text, "hello over h1 path=/over-tls\n 2", "{err}");
    let url = format!("http://{}/cleartext", edge.addr);
    let (text, err) = curl(&[
        "--http2-prior-knowledge",
        "-w",
        " %{http_version}",
        "-H",
        "Host: echo.test",
        &url,
    ]);
    assert_eq!(text, "hello over h1 path=/cleartext\n 2", "{err}");
    // An unknown :authority is a stream-level 404; the connection stays up.
    let url = format!("http://{}/", edge.addr);
    let (code, err) = curl(&[
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Host: nobody.test",
        &url,
    ]);
    assert_eq!(code, "404", "{err}");
}

/// Python's h2 stops sending after a GOAWAY, so the drain is checked with
/// the Rust `h2` client: a CONNECT stream keeps working across SIGTERM, new
/// streams are refused, and the edge exits once the stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_goaway_and_lets_open_streams_finish() {
    let mut s = setup().await;
    let target = target();
    let tcp = tokio::net::TcpStream::connect(s.edge.xff_addr)
        .await
        .unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(conn);
    let req = http::Request::builder()
        .method("CONNECT")
        .uri(target.as_str())
        .body(())
        .unwrap();
    let (resp, mut send) = client.send_request(req, false).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut recv = resp.into_body();
    async fn echo(send: &mut h2::SendStream<bytes::Bytes>, recv: &mut h2::RecvStream, seed: u64) {
        let data = random_bytes(1 << 20, seed);
        send.send_data(bytes::Bytes::from(data.clone()), false)
            .unwrap();
        let mut got = Vec::new();
        while got.len() < data.len() {
            let chunk = tokio::time::timeout(Duration::from_secs(10), recv.data())
                .await
                .expect("echo within 10 s")
                .expect("stream open")
                .unwrap();
            recv.flow_control().release_capacity(chunk.len()).unwrap();
            got.extend_from_slice(&chunk);
        }
        assert_eq!(sha256(&got), sha256(&data));
    }
    echo(&mut send, &mut recv, 1).await;
    s.edge.terminate();
    // GOAWAY arrives within the edge's 250 ms shutdown check.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let refused = match client.clone().ready().await {
        Err(_) => true,
        Ok(mut c) => {
            let req = http::Request::builder()
                .method("CONNECT")
                .uri(target.as_str())
                .body(())
                .unwrap();
            match c.send_request(req, true) {
                Err(_) => true,
                Ok((r, _)) => r.await.is_err(),
            }
        }
    };
    assert!(refused, "a new stream after GOAWAY must be refused");
    // The open stream still relays both ways, then ends cleanly.
    echo(&mut send, &mut recv, 2).await;
    send.send_data(bytes::Bytes::new(), true).unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match recv.data().await {
                Some(Ok(b)) if b.is_empty() => continue,
                other => return other.map(|r| r.map(|b| b.len())),
            }
        }
    })
    .await;
    assert!(
        matches!(end, Ok(None)),
        "END_STREAM after our END_STREAM: {end:?}"
    );
    let status = tokio::task::spawn_blocking(move || {
        let st = s.edge.wait(Duration::from_secs(15));
        (st, s)
    })
    .await
    .unwrap();
    assert!(
        status.0.is_some_and(|st| st.success()),
        "edge exit: {:?}",
        status.0
    );
    let log = status.1.edge.log();
    assert!(log.contains("drained=true"), "{log}");
    driver.abort();
}
