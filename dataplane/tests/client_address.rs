//! Client address: PROXY v1/v2 (required when enabled, before TLS), and
//! X-Forwarded-For only on listeners that trust it.

mod support;

use std::net::SocketAddr;

use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn config(origin: SocketAddr) -> String {
    format!(
        r#"
[edge]
cores = 1
[[listener]]
addr = "@LISTEN@"
[[listener]]
addr = "@PP_LISTEN@"
proxy_protocol = true
[[listener]]
addr = "@XFF_LISTEN@"
trusted_forwarded_for = true
[[listener]]
addr = "@TLS_LISTEN@"
proxy_protocol = true
tls = {{ cert = "@CERT@", key = "@KEY@" }}
[[tunnel]]
name = "echo"
hostnames = ["echo.test"]
upstream = "{origin}"
[[tunnel]]
name = "docs-only"
hostnames = ["docs.test"]
upstream = "{origin}"
allowed_cidrs = ["192.0.2.0/24", "2001:db8::/32"]
"#
    )
}

const REQ: &[u8] =
    b"GET / HTTP/1.1\r\nHost: echo.test\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n";

fn v2_header(src: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&443u16.to_be_bytes());
    h
}

async fn upgrade_via(addr: SocketAddr, prefix: &[u8], req: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut all = prefix.to_vec();
    all.extend_from_slice(req);
    s.write_all(&all).await.unwrap();
    let (head, _) = read_head(&mut s).await;
    head
}

fn xff_of(upstream_head: &str) -> String {
    upstream_head
        .lines()
        .find_map(|l| l.strip_prefix("X-Forwarded-For: "))
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_v1_and_v2_give_the_client_address() {
    let (origin, mut heads) = upgrade_echo_origin().await;
    let edge = Edge::start(&config(origin));

    let head = upgrade_via(
        edge.pp_addr,
        b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n",
        REQ,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(xff_of(&heads.recv().await.unwrap()), "203.0.113.7");

    let head = upgrade_via(edge.pp_addr, &v2_header([198, 51, 100, 9], 4000), REQ).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(xff_of(&heads.recv().await.unwrap()), "198.51.100.9");

    // PROXY header split over several writes, and v6.
    let mut s = TcpStream::connect(edge.pp_addr).await.unwrap();
    for part in [&b"PROXY TCP6 2001:db8::5 "[..], b"::1 1 2\r", b"\n", REQ] {
        s.write_all(part).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (head, _) = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(xff_of(&heads.recv().await.unwrap()), "2001:db8::5");

    // The PROXY address drives access control too.
    let docs = b"GET / HTTP/1.1\r\nHost: docs.test\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n";
    let head = upgrade_via(
        edge.pp_addr,
        b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\n",
        docs,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    heads.recv().await.unwrap();
    let head = upgrade_via(
        edge.pp_addr,
        b"PROXY TCP4 203.0.113.1 127.0.0.1 1 2\r\n",
        docs,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_header_before_tls() {
    let (origin, mut heads) = upgrade_echo_origin().await;
    let edge = Edge::start(&config(origin));
    let mut tcp = TcpStream::connect(edge.tls_addr).await.unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.113.99 127.0.0.1 7 443\r\n")
        .await
        .unwrap();
    let cfg = tls_client(&edge.cert_pem, &[b"http/1.1"]);
    let sni = rustls::pki_types::ServerName::try_from("echo.test").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(sni, tcp)
        .await
        .unwrap();
    tls.write_all(REQ).await.unwrap();
    let (head, _) = read_head(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let up = heads.recv().await.unwrap();
    assert_eq!(xff_of(&up), "203.0.113.99");
    assert!(up.contains("X-Forwarded-Proto: https"), "{up}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_bad_proxy_header_closes_the_connection() {
    let (origin, mut heads) = upgrade_echo_origin().await;
    let edge = Edge::start(&config(origin));
    for bad in [
        REQ,
        b"PROXY TCP4 nope 127.0.0.1 1 2\r\nGET / HTTP/1.1\r\n\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x99\x11\x00\x00",
    ] {
        let answer = raw_exchange(edge.pp_addr, bad).await;
        assert!(
            answer.is_empty(),
            "closed without an answer: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    assert!(heads.try_recv().is_err());
    let log = edge.log();
    assert!(log.contains("missing PROXY protocol header"), "{log}");
    assert!(log.contains("invalid PROXY protocol header"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_is_trusted_only_when_configured() {
    let (origin, mut heads) = upgrade_echo_origin().await;
    let edge = Edge::start(&config(origin));
    let req = b"GET / HTTP/1.1\r\nHost: docs.test\r\nX-Forwarded-For: 192.0.2.44, 10.9.9.9\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n";
    // Trusted listener: the first XFF element is the client (allowed network).
    let head = upgrade_via(edge.xff_addr, b"", req).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // The edge appends the hop that connected to it.
    assert_eq!(
        xff_of(&heads.recv().await.unwrap()),
        "192.0.2.44, 10.9.9.9, 127.0.0.1"
    );
    // Untrusted listener: XFF is ignored for the client address → 403.
    let head = upgrade_via(edge.addr, b"", req).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(edge
        .log()
        .contains("client 127.0.0.1 is not in the tunnel's allowed networks"));
}
