//! The seeds' full matrix: every WebSocket and every plain CONNECT
//! combination of downstream {HTTP/1.1, HTTP/2, HTTP/3} × upstream
//! {http/1.1, h2c, h3}, 16 MiB each way compared by SHA-256, then a
//! half-close (WebSocket Close / FIN) both ways.
//!
//! Third-party peers only: tokio-tungstenite (h1 WebSocket client), Python
//! `h2` (`h2_client.py`) and `aioquic` (`h3_client.py`) downstream;
//! tokio-tungstenite echo, `pproxy`, `h2_origin.py` and `h3_origin.py` (its
//! own certificate from a test CA, checked by `upstream_tls.ca`) upstream.
//! A tunnel whose `upstream_tls.ca` is another CA answers 502.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio_tungstenite::tungstenite::Message;

const MIB16: usize = 16 << 20;

fn h2_origin() -> (Proc, SocketAddr) {
    let port = free_port();
    let child = Command::new(python())
        .arg(py_script("h2_origin.py"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python with `h2` and `wsproto`");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_tcp(addr);
    (Proc(child), addr)
}

/// The h3 origin (aioquic) with a certificate for `origin.internal` signed
/// by a fresh test CA; returns it, its address and the CA's PEM path.
fn h3_origin(dir: &Path) -> (Proc, SocketAddr, std::path::PathBuf) {
    let peer = QuicPeer::start("h3_origin.py", dir, &[]);
    (peer.proc, peer.addr, peer.ca)
}

/// Another CA, for the 502 case.
fn other_ca(dir: &Path) -> std::path::PathBuf {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let path = dir.join("other-ca.pem");
    std::fs::write(&path, p.self_signed(&key).unwrap().pem()).unwrap();
    path
}

fn client(script: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(python())
        .arg(py_script(script))
        .args(["--timeout", "30", "--deadline", "150"])
        .args(args)
        .output()
        .expect("python client");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_ok(what: &str, (code, out, err): &(i32, String, String), edge: &Edge) {
    assert_eq!(
        *code,
        0,
        "{what}: client failed\nstdout:\n{out}\nstderr:\n{err}\nedge log:\n{}",
        edge.log()
    );
}

/// h1 WebSocket (tokio-tungstenite): 16 × 1 MiB echoed, then a Close
/// handshake.
async fn h1_ws(edge: &Edge, host: &str) {
    let url = format!("ws://{host}:{}/chat", edge.addr.port());
    let tcp = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    assert_eq!(resp.status(), 101, "{host}");
    let (mut sent, mut got) = (Vec::new(), Vec::new());
    for i in 0..16u64 {
        let m = random_bytes(1 << 20, 3000 + i);
        sent.extend_from_slice(&m);
        ws.send(Message::binary(m)).await.unwrap();
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => got.extend_from_slice(&b),
            other => panic!("h1 ws {host}: unexpected {other:?}\n{}", edge.log()),
        }
    }
    assert_eq!(sha256(&got), sha256(&sent), "h1 ws {host}: echo differs");
    ws.close(None).await.unwrap();
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("h1 ws {host}: close handshake: {e}"),
        }
    }
}

/// h1 plain CONNECT: 16 MiB each way, then a half-close after the echo and
/// the FIN back.
fn h1_connect(edge_addr: SocketAddr, target: &str) {
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
    let data = random_bytes(MIB16, 99);
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(&data).unwrap();
        (w, data)
    });
    let mut got = vec![0u8; MIB16];
    s.read_exact(&mut got).unwrap();
    let (w, data) = writer.join().unwrap();
    assert_eq!(sha256(&got), sha256(&data), "h1 CONNECT via {edge_addr}");
    w.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(s.read(&mut b).unwrap(), 0, "FIN after the half-close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_and_connect_across_h1_h2_h3_both_ways_16_mib() {
    let dir = tempfile::tempdir().unwrap();
    let (ws_h1, _) = ws_echo_origin().await;
    let target = tcp_echo_origin().await.to_string();
    let (_p1, fwd_h1) = pproxy();
    let (_p2, h2c) = h2_origin();
    let (_p3, h3, ca) = h3_origin(dir.path());
    let wrong_ca = other_ca(dir.path());
    let ca = ca.to_str().unwrap();
    let wrong_ca = wrong_ca.to_str().unwrap();
    // WebSocket tunnels are chosen by :authority / Host (ws1-3.test), CONNECT
    // tunnels by SNI (h2, h3) or the listener's default tunnel (h1).
    let edge = Edge::start(&format!(
        r#"
[edge]
cores = 1
[[listener]]
addr = "@LISTEN@"
default_tunnel = "fwd-h1"
[[listener]]
addr = "@XFF_LISTEN@"
default_tunnel = "fwd-h2c"
[[listener]]
addr = "@PP_LISTEN@"
default_tunnel = "fwd-h3"
[[listener]]
addr = "@TLS_LISTEN@"
tls = {{ cert = "@CERT@", key = "@KEY@" }}
quic = true
[[tunnel]]
name = "ws-h1"
hostnames = ["ws1.test"]
upstream = "{ws_h1}"
[[tunnel]]
name = "ws-h2c"
hostnames = ["ws2.test"]
upstream = "{h2c}"
http_version = "h2c"
[[tunnel]]
name = "ws-h3"
hostnames = ["ws3.test"]
upstream = "{h3}"
http_version = "h3"
upstream_tls = {{ ca = "{ca}", server_name = "origin.internal" }}
[[tunnel]]
name = "ws-h3-cold"
hostnames = ["ws4.test"]
upstream = "{h3}"
http_version = "h3"
upstream_tls = {{ ca = "{ca}", server_name = "origin.internal" }}
[[tunnel]]
name = "ws-h3-wrong-ca"
hostnames = ["wrong-ca.test"]
upstream = "{h3}"
http_version = "h3"
upstream_tls = {{ ca = "{wrong_ca}", server_name = "origin.internal" }}
[[tunnel]]
name = "fwd-h1"
hostnames = ["localhost"]
upstream = "{fwd_h1}"
[[tunnel]]
name = "fwd-h2c"
hostnames = ["connect.test"]
upstream = "{h2c}"
http_version = "h2c"
[[tunnel]]
name = "fwd-h3"
hostnames = ["raw.test"]
upstream = "{h3}"
http_version = "h3"
upstream_tls = {{ ca = "{ca}", server_name = "origin.internal" }}
"#
    ));
    let edge = &edge;
    let tls = edge.tls_addr.to_string();
    let cert = edge.cert_pem.to_str().unwrap().to_owned();
    let bytes = MIB16.to_string();
    let h2 = |sni: &str, rest: &[&str]| {
        let mut a = vec!["--connect", &tls, "--tls", "--cafile", &cert, "--sni", sni];
        a.extend_from_slice(rest);
        client("h2_client.py", &a)
    };
    let h3 = |sni: &str, rest: &[&str]| {
        let mut a = vec!["--connect", &tls, "--cafile", &cert, "--sni", sni];
        a.extend_from_slice(rest);
        client("h3_client.py", &a)
    };
    for (up, host) in [
        ("http/1.1", "ws1.test"),
        ("h2c", "ws2.test"),
        ("h3", "ws3.test"),
    ] {
        h1_ws(edge, host).await;
        let ws = [
            "ws",
            "--authority",
            host,
            "--path",
            "/chat",
            "--bytes",
            &bytes,
        ];
        assert_ok(&format!("ws h2 → {up}"), &h2("localhost", &ws), edge);
        assert_ok(&format!("ws h3 → {up}"), &h3("localhost", &ws), edge);
    }
    // pproxy closes both ways on EOF: the clients half-close after the echo.
    let connect = [
        "connect",
        "--target",
        &target,
        "--bytes",
        &bytes,
        "--close-after-echo",
    ];
    for (up, sni, h1_listener) in [
        ("http/1.1", "localhost", edge.addr),
        ("h2c", "connect.test", edge.xff_addr),
        ("h3", "raw.test", edge.pp_addr),
    ] {
        let t = target.clone();
        tokio::task::spawn_blocking(move || h1_connect(h1_listener, &t))
            .await
            .unwrap();
        assert_ok(&format!("CONNECT h2 → {up}"), &h2(sni, &connect), edge);
        assert_ok(&format!("CONNECT h3 → {up}"), &h3(sni, &connect), edge);
    }
    // Streams that open together on a tunnel with no h3 connection yet
    // share one dial, and each keeps working while the others come and go
    // (before the fix, racing dials replaced each other in the pool and
    // the replaced connections lost their control streams).
    let mut clients = Vec::new();
    for i in 0..8u64 {
        let (addr, port) = (edge.addr, edge.addr.port());
        clients.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let url = format!("ws://ws4.test:{port}/chat");
            let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
                .await
                .expect("handshake");
            for j in 0..4u64 {
                let m = random_bytes(64 * 1024, 5000 + i * 10 + j);
                ws.send(Message::binary(m.clone())).await.unwrap();
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) => {
                        assert_eq!(sha256(&b), sha256(&m), "client {i} message {j}")
                    }
                    other => panic!("client {i} message {j}: {other:?}"),
                }
            }
            let _ = ws.close(None).await;
        }));
    }
    for c in clients {
        c.await
            .expect("a concurrent client through the h3 upstream");
    }

    // The h3 upstream's certificate does not chain to the configured CA.
    let r = h3(
        "localhost",
        &[
            "ws",
            "--authority",
            "wrong-ca.test",
            "--path",
            "/chat",
            "--bytes",
            "1024",
        ],
    );
    assert!(
        r.1.contains("\"status\": 502"),
        "wrong CA: {}\n{}",
        r.1,
        r.2
    );
    assert!(
        edge.log().contains("QUIC handshake"),
        "the 502 says why:\n{}",
        edge.log()
    );
}

/// Ordinary requests reach an h3 upstream from h2 (curl) and h3 (aioquic)
/// clients: HEADERS with `:authority` from the request, the body streamed
/// up as DATA (content-length kept), the answer streamed back: 8 MiB
/// exactly (SHA-256), and an answer the upstream resets midway resets the
/// client's stream (h2 INTERNAL_ERROR, H3_INTERNAL_ERROR) instead of ending
/// it as if complete. The origin (`h3_origin.py`) answers `h3 origin:
/// METHOD PATH body=N` and lists what it saw in `x-origin-saw`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_requests_from_h2_and_h3_to_an_h3_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let (_p3, h3, ca) = h3_origin(dir.path());
    let ca = ca.to_str().unwrap();
    let edge = Edge::start(&format!(
        r#"
[edge]
cores = 1
[[listener]]
addr = "@TLS_LISTEN@"
tls = {{ cert = "@CERT@", key = "@KEY@" }}
quic = true
[[tunnel]]
name = "web-h3"
hostnames = ["echo.test"]
upstream = "{h3}"
http_version = "h3"
upstream_tls = {{ ca = "{ca}", server_name = "origin.internal" }}
"#
    ));
    let tls = edge.tls_addr.port();
    let cert = edge.cert_pem.to_str().unwrap().to_owned();
    let body = dir.path().join("body.bin");
    std::fs::write(&body, random_bytes(100_000, 7)).unwrap();
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "15", "--http2", "--cacert", &cert])
            .args(["--resolve", &format!("echo.test:{tls}:127.0.0.1")])
            .args(args)
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (text, err) = curl(&[
        "-w",
        " %{http_version}",
        &format!("https://echo.test:{tls}/page?x=1"),
    ]);
    assert_eq!(
        text,
        "h3 origin: GET /page?x=1 body=0 2",
        "h2 GET: {err}\n{}",
        edge.log()
    );
    let (text, err) = curl(&[
        "--data-binary",
        &format!("@{}", body.display()),
        &format!("https://echo.test:{tls}/up"),
    ]);
    assert_eq!(
        text,
        "h3 origin: POST /up body=100000",
        "h2 POST: {err}\n{}",
        edge.log()
    );
    let (text, err) = curl(&["-i", &format!("https://echo.test:{tls}/seen")]);
    let saw = text
        .lines()
        .find(|l| l.starts_with("x-origin-saw:"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        saw.contains(&format!(r#"":authority":"echo.test:{tls}""#))
            && saw.contains(r#"":path":"/seen""#)
            && saw.contains(r#""x-forwarded-for":"127.0.0.1""#),
        "{saw}\n{err}"
    );

    let h3 = |rest: &[&str]| {
        let tls = edge.tls_addr.to_string();
        let mut a = vec!["--connect", &tls, "--cafile", &cert, "--sni", "localhost"];
        a.extend_from_slice(rest);
        client("h3_client.py", &a)
    };
    // 8 MiB streamed back within each client's flow control, exactly.
    const BIG: usize = 8 << 20;
    let want_sha = {
        let out = Command::new(python())
            .args(["-c", &format!("import random,hashlib;print(hashlib.sha256(random.Random(1).randbytes({BIG})).hexdigest())")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--http2", "--cacert", &cert])
        .args(["--resolve", &format!("echo.test:{tls}:127.0.0.1")])
        .arg(format!("https://echo.test:{tls}/big/{BIG}"))
        .output()
        .unwrap();
    assert_eq!(
        out.stdout.len(),
        BIG,
        "h2 big: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256(&out.stdout), want_sha);
    // An upstream that resets its answer midway: the h2 client's stream is
    // reset (curl fails), not ended as if complete.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "--http2", "--cacert", &cert])
        .args(["--resolve", &format!("echo.test:{tls}:127.0.0.1")])
        .arg(format!("https://echo.test:{tls}/reset-after/100000"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("INTERNAL_ERROR"),
        "h2 reset: {err}\n{}",
        edge.log()
    );

    let r = h3(&[
        "request",
        "--authority",
        "echo.test",
        "--path",
        &format!("/big/{BIG}"),
    ]);
    assert_ok("h3 big", &r, &edge);
    assert!(
        r.1.contains(&format!("\"sha_received\": \"{want_sha}\"")),
        "h3 big: {}",
        r.1
    );
    let r = h3(&[
        "request",
        "--authority",
        "echo.test",
        "--path",
        "/reset-after/100000",
    ]);
    let line =
        r.1.lines()
            .find(|l| l.contains("\"kind\": \"request\""))
            .unwrap_or_default();
    assert!(
        line.contains("\"reset_stream\": 258"),
        "h3 reset: H3_INTERNAL_ERROR (0x102) expected: {}",
        r.1
    );

    for (method, path, size) in [("GET", "/page?y=2", 0), ("POST", "/up", 100_000)] {
        let size_arg = size.to_string();
        let r = h3(&[
            "request",
            "--method",
            method,
            "--authority",
            "echo.test",
            "--path",
            path,
            "--body",
            &size_arg,
        ]);
        assert_ok(&format!("h3 {method}"), &r, &edge);
        let want = format!("h3 origin: {method} {path} body={size}");
        let line =
            r.1.lines()
                .find(|l| l.contains("\"kind\": \"request\""))
                .unwrap_or_default();
        assert!(line.contains("\"status\": 200"), "h3 {method}: {}", r.1);
        assert!(
            line.contains(&format!(
                "\"sha_received\": \"{}\"",
                sha256(want.as_bytes())
            )),
            "h3 {method}: the answer is {want:?}: {}",
            r.1
        );
    }
}
