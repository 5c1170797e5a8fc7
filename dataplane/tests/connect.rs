//! Plain CONNECT through the edge with real curl to a real forward proxy
//! (Python `pproxy`) reaching a target; ordinary requests with curl.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;
use tokio::io::AsyncWriteExt;

/// A tiny HTTP/1.1 target: answers every request with its path and body size,
/// then closes.
async fn http_target() -> SocketAddr {
    scripted_origin(|mut s| async move {
        let (head, mut body) = read_head(&mut s).await;
        let path = head.split(' ').nth(1).unwrap_or("?").to_owned();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        while body.len() < len {
            let mut b = vec![0u8; 65536];
            let n = tokio::io::AsyncReadExt::read(&mut s, &mut b)
                .await
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            body.extend_from_slice(&b[..n]);
        }
        let conn_close = head.to_ascii_lowercase().contains("connection: close");
        let text = format!(
            "hello from target path={path} body={} close={conn_close}\n",
            body.len()
        );
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{text}",
            text.len()
        );
        let _ = s.write_all(resp.as_bytes()).await;
        let _ = s.shutdown().await;
    })
    .await
}

struct Pproxy(Child);

impl Drop for Pproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pproxy(auth: Option<&str>) -> (Pproxy, SocketAddr) {
    let port = free_port();
    let mut listen = format!("http://127.0.0.1:{port}");
    if let Some(a) = auth {
        listen.push('#');
        listen.push_str(a);
    }
    let child = Command::new(python())
        .args(["-m", "pproxy", "--auth", "0", "-l", &listen])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with `pproxy` (scripts/test.sh installs it)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "pproxy did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Pproxy(child), addr)
}

fn curl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "15"])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config(fwd: SocketAddr, fwd_auth: SocketAddr, web: SocketAddr) -> String {
    format!(
        r#"
[edge]
cores = 1
[[listener]]
addr = "@LISTEN@"
default_tunnel = "fwd"
[[listener]]
addr = "@TLS_LISTEN@"
tls = {{ cert = "@CERT@", key = "@KEY@" }}
[[listener]]
addr = "@XFF_LISTEN@"
default_tunnel = "fwd-auth"
[[tunnel]]
name = "fwd"
hostnames = ["localhost"]
upstream = "{fwd}"
[[tunnel]]
name = "fwd-auth"
upstream = "{fwd_auth}"
[[tunnel]]
name = "web"
hostnames = ["web.test"]
upstream = "{web}"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_proxytunnel_through_edge_to_pproxy() {
    let target = http_target().await;
    let (_p1, fwd) = pproxy(None);
    let (_p2, fwd_auth) = pproxy(Some("user:pa55"));
    let edge = Edge::start(&config(fwd, fwd_auth, target));
    let url = format!("http://{target}/via-connect");
    let edge_proxy = format!("http://{}", edge.addr);
    let tls_proxy = format!("https://localhost:{}", edge.tls_addr.port());
    let auth_proxy = format!("http://{}", edge.xff_addr);
    let cert = edge.cert_pem.to_str().unwrap().to_owned();
    let results = tokio::task::spawn_blocking(move || {
        vec![
            // Cleartext listener: CONNECT routed by default_tunnel.
            curl(&["-p", "-x", &edge_proxy, &url]),
            // TLS listener: CONNECT routed by SNI (localhost → fwd).
            curl(&["-p", "-x", &tls_proxy, "--proxy-cacert", &cert, &url]),
            // Proxy-Authorization passes through to the upstream proxy.
            curl(&["-p", "-x", &auth_proxy, "-U", "user:pa55", &url]),
            // ...and its 407 comes back through the edge.
            curl(&["-p", "-x", &auth_proxy, "-v", &url]),
        ]
    })
    .await
    .unwrap();
    for (i, (code, out, err)) in results[..3].iter().enumerate() {
        assert_eq!(*code, 0, "case {i}: {err}");
        assert!(
            out.starts_with("hello from target path=/via-connect"),
            "case {i}: {out}"
        );
    }
    let (code, _, err) = &results[3];
    assert_ne!(*code, 0);
    assert!(err.contains("407"), "{err}");
    let log = edge.log();
    assert!(
        !log.contains("pa55") && !log.contains("dXNlcjpwYTU1"),
        "credentials never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_requests_are_forwarded_one_per_connection() {
    let target = http_target().await;
    let edge = Edge::start(&config(target, target, target));
    let base = format!("http://{}", edge.addr);
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        curl(&[
            "-H",
            "Host: web.test",
            "-d",
            &"x".repeat(100_000),
            &format!("{base}/post"),
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hello from target path=/post body=100000 close=true\n");
}
