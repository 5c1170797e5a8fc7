//! HTTP/3 through the edge with a third-party client: Python `aioquic`
//! (`tests/py/h3_client.py`) over QUIC on the TLS listener's port, to h1
//! upstreams (tokio-tungstenite WebSocket echo, a recording HTTP/1.1
//! origin) and Python `pproxy` for plain CONNECT.
//!
//! Covered: an ordinary GET, RFC 9220 WebSocket (1 MiB, then 2 × 16 MiB on
//! one connection, SHA-256 compared by the client), plain CONNECT routed by
//! SNI (16 MiB each way), token auth by header and by query (401 without),
//! and the 421 split both ways on one connection.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use support::*;

const TOKEN: &str = "h3-secret-token";

/// Runs `h3_client.py` against the edge's QUIC port with `sni`; returns
/// (exit code, stdout, stderr).
fn h3(edge: &Edge, sni: &str, rest: &[&str]) -> (i32, String, String) {
    let out = Command::new(python())
        .arg(py_script("h3_client.py"))
        .args(["--timeout", "30", "--deadline", "120"])
        .args(["--connect", &edge.tls_addr.to_string()])
        .args(["--cafile", edge.cert_pem.to_str().unwrap(), "--sni", sni])
        .args(rest)
        .output()
        .expect("python with `aioquic` (scripts/test.sh installs it)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
        "{what}: h3_client failed\nstdout:\n{out}\nstderr:\n{err}\nedge log:\n{}",
        edge.log()
    );
}

struct Setup {
    edge: Edge,
    target: SocketAddr,
    recorded: tokio::sync::mpsc::UnboundedReceiver<Recorded>,
    _proxy: Proc,
}

async fn setup() -> Setup {
    let (ws, _) = ws_echo_origin().await;
    let (web, recorded) = lenient_origin().await;
    let target = tcp_echo_origin().await;
    let (proxy, fwd) = pproxy();
    let edge = Edge::start(&format!(
        r#"
[edge]
cores = 1
[[listener]]
addr = "@TLS_LISTEN@"
tls = {{ cert = "@CERT@", key = "@KEY@" }}
quic = true
[[tunnel]]
name = "ws"
hostnames = ["echo.test"]
upstream = "{ws}"
[[tunnel]]
name = "web"
hostnames = ["raw.test"]
upstream = "{web}"
[[tunnel]]
name = "auth"
hostnames = ["auth.test"]
upstream = "{ws}"
token_auth = true
tokens = ["{TOKEN}"]
[[tunnel]]
name = "fwd"
hostnames = ["localhost"]
upstream = "{fwd}"
[[tunnel]]
name = "elsewhere"
hostnames = ["connect.test"]
upstream = "{ws}"
allowed_cidrs = ["10.0.0.0/8"]
"#
    ));
    Setup {
        edge,
        target,
        recorded,
        _proxy: proxy,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_get_websocket_and_connect_with_aioquic() {
    let mut s = setup().await;
    let edge = &s.edge;

    // An ordinary GET, forwarded to the HTTP/1.1 origin.
    let r = h3(
        edge,
        "localhost",
        &["request", "--authority", "raw.test", "--path", "/page?x=1"],
    );
    assert_ok("GET", &r, edge);
    assert_eq!(statuses(&r.1), vec![200], "{}", r.1);
    let seen = s.recorded.recv().await.expect("the origin saw the request");
    assert_eq!(seen.line(), "GET /page?x=1 HTTP/1.1");
    assert_eq!(seen.field("host"), vec!["raw.test"]);

    // A POST body streams up (content-length kept).
    let r = h3(
        edge,
        "localhost",
        &[
            "request",
            "--method",
            "POST",
            "--authority",
            "raw.test",
            "--path",
            "/up",
            "--body",
            "100000",
        ],
    );
    assert_ok("POST", &r, edge);
    let seen = s.recorded.recv().await.expect("the origin saw the POST");
    assert_eq!(seen.body.len(), 100_000, "{}", seen.head);

    // RFC 9220 WebSocket: 1 MiB, then two 16 MiB streams on one connection.
    let r = h3(
        edge,
        "localhost",
        &[
            "ws",
            "--authority",
            "echo.test",
            "--path",
            "/chat",
            "--bytes",
            "1048576",
        ],
    );
    assert_ok("ws 1 MiB", &r, edge);
    let r = h3(
        edge,
        "localhost",
        &[
            "ws",
            "--authority",
            "echo.test",
            "--path",
            "/chat",
            "--bytes",
            &(16 << 20).to_string(),
            "--streams",
            "2",
        ],
    );
    assert_ok("ws 2 × 16 MiB", &r, edge);

    // Plain CONNECT, routed by SNI to the forward proxy, 16 MiB each way
    // (pproxy closes both ways on EOF: the client half-closes after the echo).
    let target = s.target.to_string();
    let r = h3(
        edge,
        "localhost",
        &[
            "connect",
            "--target",
            &target,
            "--bytes",
            &(16 << 20).to_string(),
            "--close-after-echo",
        ],
    );
    assert_ok("CONNECT 16 MiB", &r, edge);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_token_auth_by_header_and_query() {
    let s = setup().await;
    let edge = &s.edge;
    let ws = ["ws", "--authority", "auth.test", "--bytes", "4096"];
    let r = h3(edge, "localhost", &[&ws[..], &["--path", "/chat"]].concat());
    assert_eq!(statuses(&r.1), vec![401], "no token: {}\n{}", r.1, r.2);
    let r = h3(
        edge,
        "localhost",
        &[&ws[..], &["--path", "/chat", "--token", TOKEN]].concat(),
    );
    assert_ok("token by header", &r, edge);
    let query = format!("/chat?rstream.token={TOKEN}");
    let r = h3(edge, "localhost", &[&ws[..], &["--path", &query]].concat());
    assert_ok("token by query", &r, edge);
    let r = h3(
        edge,
        "localhost",
        &[&ws[..], &["--path", "/chat", "--token", "wrong"]].concat(),
    );
    assert_eq!(statuses(&r.1), vec![401], "wrong token: {}", r.1);
    assert!(!edge.log().contains(TOKEN), "the token must not be logged");
}

/// A tunnel open to other networks only answers this client 403 over h3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_trusted_cidrs_refuse_other_clients_with_403() {
    let s = setup().await;
    let r = h3(
        &s.edge,
        "localhost",
        &[
            "ws",
            "--authority",
            "connect.test",
            "--path",
            "/chat",
            "--bytes",
            "1024",
        ],
    );
    assert_eq!(
        statuses(&r.1),
        vec![403],
        "{}\n{}\n{}",
        r.1,
        r.2,
        s.edge.log()
    );
    let r = h3(
        &s.edge,
        "localhost",
        &[
            "ws",
            "--authority",
            "echo.test",
            "--path",
            "/chat",
            "--bytes",
            "1024",
        ],
    );
    assert_ok("another tunnel on the same edge", &r, &s.edge);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_one_connection_is_either_a_reverse_proxy_or_a_forward_proxy() {
    let s = setup().await;
    let edge = &s.edge;
    let target = s.target.to_string();
    let connect = format!("connect:{target}");
    let r = h3(
        edge,
        "localhost",
        &["sequence", "--step", "get:raw.test:/a", "--step", &connect],
    );
    assert_eq!(
        statuses(&r.1),
        vec![200, 421],
        "reverse first: {}\n{}",
        r.1,
        r.2
    );
    let r = h3(
        edge,
        "localhost",
        &[
            "sequence",
            "--step",
            &connect,
            "--step",
            "ws:echo.test:/chat",
            "--step",
            "get:raw.test:/b",
        ],
    );
    assert_eq!(
        statuses(&r.1),
        vec![200, 421, 421],
        "proxy first: {}\n{}",
        r.1,
        r.2
    );
}

/// `Alt-Svc: h3=":PORT"` on the TLS listener's h2 and h1 answers: forwarded
/// responses and the edge's own refusals (curl for h1 and h2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alt_svc_advertises_h3_on_h1_and_h2_answers() {
    let s = setup().await;
    let edge = &s.edge;
    let want = format!("alt-svc: h3=\":{}\"; ma=86400", edge.tls_addr.port());
    // raw.test: forwarded to the origin; nowhere.test: the edge's own 404.
    for (version, host) in [
        ("--http2", "raw.test"),
        ("--http1.1", "raw.test"),
        ("--http2", "nowhere.test"),
        ("--http1.1", "nowhere.test"),
    ] {
        let url = format!("https://localhost:{}/page", edge.tls_addr.port());
        let out = Command::new("curl")
            .args([
                "-sS",
                "-D",
                "-",
                "-o",
                "/dev/null",
                "--max-time",
                "20",
                version,
                "--cacert",
            ])
            .arg(&edge.cert_pem)
            .args(["-H", &format!("Host: {host}")])
            .arg(&url)
            .output()
            .expect("curl");
        let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert!(
            head.contains(&want),
            "{version} {host}: no `{want}` in\n{head}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// An edge of two cores with one QUIC listener and a WebSocket echo
/// tunnel, its datagram steering in the kernel on or off.
async fn two_core_quic_edge(steering: bool) -> Edge {
    let (ws, _) = ws_echo_origin().await;
    Edge::start(&format!(
        r#"
[edge]
cores = 2
admin = "@ADMIN@"
quic_steering = {steering}
[[listener]]
addr = "@TLS_LISTEN@"
tls = {{ cert = "@CERT@", key = "@KEY@" }}
quic = true
[[tunnel]]
name = "ws"
hostnames = ["echo.test"]
upstream = "{ws}"
"#
    ))
}

/// One RFC 9220 WebSocket echo of 4 MiB by aioquic, which rebinds its UDP
/// port after 1 MiB (same connection id, new 4-tuple).
fn echo_with_a_rebinding_client(edge: &Edge) {
    let r = h3(
        edge,
        "localhost",
        &[
            "--rebind-after",
            "1048576",
            "ws",
            "--authority",
            "echo.test",
            "--path",
            "/chat",
            "--bytes",
            "4194304",
        ],
    );
    assert_ok("ws with a rebinding client", &r, edge);
    assert!(r.1.contains("\"new_port\""), "the client rebound: {}", r.1);
}

/// (connections, client address changes, handed over, taken over) per core.
fn quic_owners(edge: &Edge) -> Vec<(u64, u64, u64, u64)> {
    edge.stats()
        .iter()
        .map(|c| {
            (
                c["quic_connections_total"],
                c["quic_client_address_changes"],
                c["quic_datagrams_handed_over"],
                c["quic_datagrams_taken_over"],
            )
        })
        .collect()
}

/// With two cores, a client that rebinds its UDP port mid-transfer keeps
/// its connection and its bytes: the kernel's steering program reads the
/// core from the connection id, so every datagram from the new port reaches
/// the owner at once. Six rebinds: with the kernel's 4-tuple hash instead,
/// each would land on the other core with probability 1/2 (all six on the
/// owner: 1/64); here none is handed over, and the owners count every
/// address change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_client_rebinding_its_port_is_steered_to_its_core_by_the_kernel() {
    let edge = two_core_quic_edge(true).await;
    const REBINDS: u64 = 6;
    for _ in 0..REBINDS {
        echo_with_a_rebinding_client(&edge);
    }
    let per_core = quic_owners(&edge);
    println!("per core (connections, address changes, handed over, taken over): {per_core:?}");
    assert!(
        edge.total("quic_client_address_changes") >= REBINDS,
        "{per_core:?}"
    );
    assert_eq!(edge.total("quic_datagrams_handed_over"), 0, "{per_core:?}");
    assert!(
        edge.log()
            .contains("steered to their connection's core in the kernel"),
        "{}",
        edge.log()
    );
}

/// The same with kernel steering off (`edge.quic_steering = false`): the
/// new 4-tuple's datagrams reach either core, and the one that does not own
/// the connection hands them to the owner. Bounded retries until the new
/// port hashed to the other core at least once (1/2 per attempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_client_rebinding_its_port_keeps_its_connection_across_cores() {
    let edge = two_core_quic_edge(false).await;
    let mut attempts = 0;
    while edge.total("quic_datagrams_handed_over") == 0 {
        attempts += 1;
        assert!(
            attempts <= 12,
            "no rebinding reached the other core in 12 attempts:\n{:?}",
            edge.stats()
        );
        echo_with_a_rebinding_client(&edge);
    }
    let per_core = quic_owners(&edge);
    println!(
        "per core (connections, address changes, handed over, taken over) after {attempts} attempts: {per_core:?}"
    );
    // The owner took them (the last few may still be in a queue).
    assert!(edge.total("quic_datagrams_taken_over") > 0, "{per_core:?}");
}

/// A reset upstream ends the h3 stream with RESET_STREAM(H3_CONNECT_ERROR)
/// (RFC 9114 §4.4): the CONNECT proxy accepts, reads a little, and resets
/// its TCP connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_connect_stream_is_reset_when_the_upstream_resets() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let proxy = scripted_origin(|mut s| async move {
        let (_head, _) = read_head(&mut s).await;
        s.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        // SO_LINGER 0: the close sends RST.
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
    })
    .await;
    let edge = Edge::start(&format!(
        r#"
[edge]
cores = 1
[[listener]]
addr = "@TLS_LISTEN@"
tls = {{ cert = "@CERT@", key = "@KEY@" }}
quic = true
[[tunnel]]
name = "fwd"
hostnames = ["localhost"]
upstream = "{proxy}"
"#
    ));
    let r = h3(
        &edge,
        "localhost",
        &["connect", "--target", "10.0.0.1:80", "--bytes", "1000000"],
    );
    let line = json_lines(&r.1)
        .into_iter()
        .find(|v| v.get("stream").is_some())
        .expect("a stream line");
    assert_eq!(line["status"], 200, "{}", r.1);
    assert_eq!(
        line["reset"],
        0x10f,
        "RESET_STREAM(H3_CONNECT_ERROR) expected: {}\n{}",
        r.1,
        edge.log()
    );
}

/// Address validation: with `quic_handshakes_before_retry = 0` every new
/// client gets a Retry first (aioquic answers it with the token), and the
/// relay works on the validated connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_clients_prove_their_address_with_a_retry() {
    let (ws, _) = ws_echo_origin().await;
    let edge = Edge::start(&format!(
        r#"
[edge]
cores = 1
admin = "@ADMIN@"
quic_handshakes_before_retry = 0
[[listener]]
addr = "@TLS_LISTEN@"
tls = {{ cert = "@CERT@", key = "@KEY@" }}
quic = true
[[tunnel]]
name = "ws"
hostnames = ["echo.test"]
upstream = "{ws}"
"#
    ));
    for _ in 0..2 {
        let r = h3(
            &edge,
            "localhost",
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
        assert_ok("ws after a Retry", &r, &edge);
    }
    assert_eq!(edge.total("quic_retries"), 2, "{:?}", edge.stats());
    assert_eq!(edge.total("quic_connections_total"), 2);
}

/// Shutdown: the edge sends GOAWAY on its control stream and lets the
/// stream in flight finish (32 MiB echoed after the signal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_shutdown_sends_goaway_and_drains_the_stream_in_flight() {
    let (ws, _) = ws_echo_origin().await;
    let mut edge = Edge::start(&format!(
        r#"
[edge]
cores = 1
shutdown_grace_ms = 20000
admin = "@ADMIN@"
[[listener]]
addr = "@TLS_LISTEN@"
tls = {{ cert = "@CERT@", key = "@KEY@" }}
quic = true
[[tunnel]]
name = "ws"
hostnames = ["echo.test"]
upstream = "{ws}"
"#
    ));
    let client = {
        let (addr, cert) = (edge.tls_addr.to_string(), edge.cert_pem.clone());
        std::thread::spawn(move || {
            Command::new(python())
                .arg(py_script("h3_client.py"))
                .args([
                    "--timeout",
                    "30",
                    "--deadline",
                    "120",
                    "--connect",
                    &addr,
                    "--cafile",
                ])
                .arg(&cert)
                .args([
                    "--sni",
                    "localhost",
                    "ws",
                    "--authority",
                    "echo.test",
                    "--path",
                    "/chat",
                    "--bytes",
                    &(32 << 20).to_string(),
                ])
                .output()
                .expect("h3 client")
        })
    };
    // The client is a Python process: on a loaded machine it can take longer
    // than any fixed sleep to start. Signal once its stream is relaying.
    edge.wait_until(
        "the client's stream is relaying",
        Duration::from_secs(60),
        |e| e.tunnel_total("ws", "relays_active") >= 1,
    );
    std::thread::sleep(Duration::from_millis(100));
    edge.terminate();
    let out = client.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the stream in flight finished:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = json_lines(&stdout)
        .into_iter()
        .find(|v| v.get("summary").is_some())
        .expect("summary");
    assert!(summary["goaway"].is_u64(), "GOAWAY seen: {stdout}");
    assert!(
        edge.wait(Duration::from_secs(30)).is_some(),
        "the edge exits after draining"
    );
}
