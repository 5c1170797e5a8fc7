//! Bad input gets exactly the documented answer (DESIGN §5) and a log line,
//! while a relay opened before keeps working throughout.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An upstream that answers garbage, or a 403 with a body, by request path.
async fn odd_origin() -> SocketAddr {
    scripted_origin(|mut s| async move {
        let (head, _) = read_head(&mut s).await;
        let answer: &[u8] = if head.starts_with("GET /garbage") {
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n"
        } else {
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 11\r\nConnection: keep-alive\r\n\r\nnot for you"
        };
        let _ = s.write_all(answer).await;
        // Keep the connection open: the edge must close after the framed body.
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await
}

fn config(
    echo: SocketAddr,
    raw: SocketAddr,
    odd: SocketAddr,
    silent: SocketAddr,
    refused: SocketAddr,
) -> String {
    format!(
        r#"
[edge]
cores = 2
admin = "@ADMIN@"
handshake_timeout_ms = 400
upstream_handshake_timeout_ms = 400
upstream_connect_timeout_ms = 1000
[[listener]]
addr = "@LISTEN@"
[[listener]]
addr = "@XFF_LISTEN@"
default_tunnel = "noconnect"
[[tunnel]]
name = "echo"
hostnames = ["echo.test"]
upstream = "{echo}"
[[tunnel]]
name = "auth"
hostnames = ["auth.test"]
upstream = "{echo}"
token_auth = true
tokens = ["good-token"]
[[tunnel]]
name = "private"
hostnames = ["private.test"]
upstream = "{echo}"
allowed_cidrs = ["10.0.0.0/8"]
[[tunnel]]
name = "wsonly"
hostnames = ["wsonly.test"]
upstream = "{echo}"
allowed_upgrades = ["websocket"]
[[tunnel]]
name = "noconnect"
upstream = "{echo}"
allow_connect = false
[[tunnel]]
name = "hu-loud"
hostnames = ["loud.test"]
upstream = "{raw}"
mode = "httpupgrade"
path = "/ray"
stealth = false
[[tunnel]]
name = "hu-stealth"
hostnames = ["stealth.test"]
upstream = "{raw}"
mode = "httpupgrade"
path = "/ray"
[[tunnel]]
name = "hu-down"
hostnames = ["hu-down.test"]
upstream = "{refused}"
mode = "httpupgrade"
path = "/ray"
stealth = false
[[tunnel]]
name = "odd"
hostnames = ["odd.test"]
upstream = "{odd}"
[[tunnel]]
name = "silent"
hostnames = ["silent.test"]
upstream = "{silent}"
[[tunnel]]
name = "down"
hostnames = ["down.test"]
upstream = "{refused}"
"#
    )
}

fn ws(host: &str, extra: &str) -> Vec<u8> {
    format!("GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").into_bytes()
}

fn hu(host: &str, path: &str, conn: &str, upgrade: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: {conn}\r\nUpgrade: {upgrade}\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_input_gets_its_documented_answer() {
    let (echo, mut heads) = upgrade_echo_origin().await;
    let raw = tcp_echo_origin().await;
    let odd = odd_origin().await;
    let silent = silent_origin().await;
    let refused = refused_addr();
    let edge = Edge::start(&config(echo, raw, odd, silent, refused));

    // A relay opened before the bad input, used again after it.
    let mut alive = TcpStream::connect(edge.addr).await.unwrap();
    alive
        .write_all(&hu("loud.test", "/ray", "Upgrade", "websocket"))
        .await
        .unwrap();
    let (head, _) = read_head(&mut alive).await;
    assert!(head.starts_with("HTTP/1.1 101"));

    let many: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        ("TLS bytes on cleartext", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(), Some(400)),
        ("missing Host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), Some(400)),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: echo.test\r\nHost: x\r\n\r\n".to_vec(), Some(400)),
        ("CL + TE", b"POST / HTTP/1.1\r\nHost: echo.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), Some(400)),
        ("conflicting CL", b"POST / HTTP/1.1\r\nHost: echo.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n".to_vec(), Some(400)),
        ("bad header name", b"GET / HTTP/1.1\r\nHost: echo.test\r\nBad Name: x\r\n\r\n".to_vec(), Some(400)),
        ("HTTP/2.0 in an h1 head", b"GET / HTTP/2.0\r\nHost: echo.test\r\n\r\n".to_vec(), Some(400)),
        ("oversize head", format!("GET / HTTP/1.1\r\nHost: echo.test\r\nX: {}\r\n\r\n", "a".repeat(20_000)).into_bytes(), Some(400)),
        ("too many headers", format!("GET / HTTP/1.1\r\nHost: echo.test\r\n{many}\r\n").into_bytes(), Some(400)),
        ("CONNECT origin-form", b"CONNECT /x HTTP/1.1\r\nHost: echo.test\r\n\r\n".to_vec(), Some(400)),
        ("CONNECT without port", b"CONNECT example.com HTTP/1.1\r\nHost: example.com\r\n\r\n".to_vec(), Some(400)),
        ("WebSocket with POST", b"POST / HTTP/1.1\r\nHost: echo.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n".to_vec(), Some(400)),
        ("Connection: upgrade without Upgrade", b"GET / HTTP/1.1\r\nHost: echo.test\r\nConnection: Upgrade\r\n\r\n".to_vec(), Some(400)),
        ("slow head", b"GET / HTTP/1.1\r\nHost: ech".to_vec(), Some(408)),
        ("unknown host", ws("nobody.test", ""), Some(404)),
        ("empty host", ws("", ""), Some(404)),
        ("CONNECT without SNI or default tunnel", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec(), Some(404)),
        ("auth missing", ws("auth.test", ""), Some(401)),
        ("auth invalid", ws("auth.test", "Authorization: Bearer wrong\r\n"), Some(401)),
        ("auth header + query", b"GET /ws?rstream.token=good-token HTTP/1.1\r\nHost: auth.test\r\nAuthorization: Bearer good-token\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n".to_vec(), Some(401)),
        ("auth two headers", ws("auth.test", "Authorization: Bearer good-token\r\nAuthorization: Bearer good-token\r\n"), Some(401)),
        ("auth not Bearer", ws("auth.test", "Authorization: Basic Z29vZC10b2tlbg==\r\n"), Some(401)),
        ("client not allowed", ws("private.test", ""), Some(403)),
        ("upgrade token not allowed", hu("wsonly.test", "/", "Upgrade", "h2c"), Some(501)),
        ("CONNECT not allowed", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec(), Some(501)),
        ("httpupgrade wrong path", hu("loud.test", "/other", "Upgrade", "websocket"), Some(404)),
        ("httpupgrade not an upgrade", hu("loud.test", "/ray", "keep-alive", "websocket"), Some(426)),
        ("httpupgrade stealth wrong path", hu("stealth.test", "/other", "Upgrade", "websocket"), None),
        ("httpupgrade stealth not an upgrade", hu("stealth.test", "/ray", "Upgrade", "h2c"), None),
        ("httpupgrade upstream refused", hu("hu-down.test", "/ray", "Upgrade", "websocket"), Some(502)),
        ("upstream refused", ws("down.test", ""), Some(502)),
        ("upstream silent", ws("silent.test", ""), Some(504)),
        ("upstream answers garbage", b"GET /garbage HTTP/1.1\r\nHost: odd.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n".to_vec(), Some(502)),
        ("upstream refuses the upgrade", ws("odd.test", ""), Some(403)),
        // RFC 9112 §6.1, §6.3: only a final, single chunked coding frames a request.
        ("TE xchunked", b"POST / HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: xchunked\r\n\r\n".to_vec(), Some(400)),
        ("TE chunked + identity", b"POST / HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n".to_vec(), Some(400)),
        ("TE on HTTP/1.0", b"POST / HTTP/1.0\r\nHost: echo.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(), Some(400)),
        ("TE gzip, chunked", b"POST / HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(), Some(501)),
        // RFC 9112 §3: a request line over the limit is 414.
        ("20 KB URI", format!("GET /{} HTTP/1.1\r\nHost: echo.test\r\n\r\n", "a".repeat(20_000)).into_bytes(), Some(414)),
        // RFC 9112 §3.2: no fragment in a request target.
        ("fragment in the target", hu("loud.test", "/ray#x", "Upgrade", "websocket"), Some(400)),
        // RFC 9110 §4.2.4, §9.3.6: no userinfo; a CONNECT port is 1..=65535.
        ("userinfo in an absolute-form target", b"GET http://u:p@echo.test/ HTTP/1.1\r\nHost: echo.test\r\n\r\n".to_vec(), Some(400)),
        ("CONNECT with userinfo", b"CONNECT u:p@example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec(), Some(400)),
        ("CONNECT port +443", b"CONNECT example.com:+443 HTTP/1.1\r\nHost: example.com\r\n\r\n".to_vec(), Some(400)),
        // RFC 9110 §7.2 / RFC 9112 §3.2: an invalid Host is 400.
        ("invalid Host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n".to_vec(), Some(400)),
        // RFC 9110 §7.6.1: framing fields are not connection options.
        ("Connection names Content-Length", b"POST / HTTP/1.1\r\nHost: echo.test\r\nConnection: Content-Length\r\nContent-Length: 1\r\n\r\nx".to_vec(), Some(400)),
    ];
    assert!(cases.len() >= 25);
    for (name, request, want) in &cases {
        let target = if name.starts_with("CONNECT not allowed") {
            edge.xff_addr
        } else {
            edge.addr
        };
        let answer = raw_exchange(target, request).await;
        assert_eq!(
            status_of(&answer),
            *want,
            "{name}: {:?}",
            String::from_utf8_lossy(&answer)
        );
        if *name == "upstream refuses the upgrade" {
            assert!(
                answer.ends_with(b"\r\n\r\nnot for you"),
                "relayed as is: {:?}",
                String::from_utf8_lossy(&answer)
            );
        }
        if *name == "auth missing" {
            assert!(String::from_utf8_lossy(&answer).contains("WWW-Authenticate: Bearer\r\n"));
        }
        if *name == "httpupgrade not an upgrade" {
            assert!(String::from_utf8_lossy(&answer).contains("Upgrade: websocket\r\n"));
        }
    }

    // RFC 9110 §8.6: repeated identical Content-Length fields are merged.
    let _ = raw_exchange(
        edge.addr,
        b"POST /cl HTTP/1.1\r\nHost: echo.test\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    let forwarded = loop {
        let h = tokio::time::timeout(Duration::from_secs(5), heads.recv())
            .await
            .unwrap()
            .unwrap();
        if h.starts_with("POST /cl ") {
            break h;
        }
    };
    assert_eq!(
        forwarded.matches("Content-Length: 3\r\n").count(),
        1,
        "{forwarded}"
    );

    // Ten silent clients on the admin listener do not delay /stats: it is
    // answered while every one of them is still connected.
    let silent: Vec<std::net::TcpStream> = (0..10)
        .map(|_| std::net::TcpStream::connect(edge.admin).unwrap())
        .collect();
    assert!(!edge.stats().is_empty());
    for s in &silent {
        s.set_nonblocking(true).unwrap();
        let e = std::io::Read::read(&mut &*s, &mut [0u8; 1]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "still open");
    }

    // The relay opened first still works.
    alive.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(5), alive.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"still here");

    // One log line per edge rejection, with the reason; no credentials. (The
    // upstream's own 403 is relayed, and logged as the upstream's refusal.)
    let log = edge.log();
    let rejected = log.lines().filter(|l| l.contains("rejected:")).count();
    assert!(
        log.contains("upstream refused the websocket; answer relayed"),
        "{log}"
    );
    assert!(
        rejected >= cases.len() - 1,
        "{rejected} rejection lines for {} cases:\n{log}",
        cases.len()
    );
    for reason in [
        "missing Host header",
        "head larger than 16384 bytes",
        // The configured limit (handshake_timeout_ms = 400), not what was
        // left of it when the last read started.
        "request head not complete within 400ms",
        "no tunnel for host \"nobody.test\"",
        "more than one token proof",
        "not in the tunnel's allowed networks",
        "upgrade \"h2c\" is not allowed",
        "httpupgrade: path \"/other\"",
        "closed silently (stealth)",
        "did not answer within",
        "upstream sent an invalid answer",
    ] {
        assert!(log.contains(reason), "log lacks `{reason}`:\n{log}");
    }
    assert!(
        !log.contains("good-token") && !log.contains("Z29vZC10b2tlbg"),
        "credentials redacted"
    );
}

#[test]
fn bad_config_fails_with_one_line_naming_the_field() {
    for (text, field) in [
        ("[[listener]]\naddr = \"127.0.0.1:notaport\"\n", "listener[0].addr"),
        ("[edge]\ncores = 4096\n[[listener]]\naddr = \"127.0.0.1:0\"\n", "edge.cores"),
        ("[[listener]]\naddr = \"127.0.0.1:1\"\n[[tunnel]]\nname = \"t\"\nupstream = \"127.0.0.1:9\"\nmode = \"udp\"\n", "tunnel[0].mode"),
        ("[edge]\nbogus = 1\n", "bogus"),
    ] {
        match Edge::try_start(text) {
            Ok(_) => panic!("config accepted: {text}"),
            Err((status, log)) => {
                assert!(!status.success());
                let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error:")).collect();
                assert_eq!(errors.len(), 1, "{log}");
                assert!(errors[0].contains(field), "{log}");
            }
        }
    }
}

/// Sends `ping-i` on the CONNECT relay of stream 1 and expects it back.
async fn sibling_echo(c: &mut support::h2raw::RawH2, i: usize, wait: Duration) {
    use support::h2raw;
    let msg = format!("ping-{i}").into_bytes();
    c.data(1, &msg, false).await.unwrap();
    let back = c
        .until(wait, |f| f.stream == 1 || f.ty == h2raw::GOAWAY)
        .await
        .unwrap();
    assert_eq!(
        (back.ty, back.payload.as_slice()),
        (h2raw::DATA, msg.as_slice()),
        "sibling after case {i}"
    );
}

/// HTTP/2 malformed requests are stream errors (RFC 9113 §8.1.1, DESIGN §5):
/// the stream gets RST_STREAM(PROTOCOL_ERROR) and a relay on the same
/// connection keeps working. Sent with a raw client, since h2 libraries
/// refuse to send these.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_malformed_requests_are_stream_errors() {
    use support::h2raw::{self, RawH2};
    let (proxy, _) = upgrade_echo_origin().await;
    let (web, _) = lenient_origin().await;
    let edge = Edge::start(&format!(
        r#"
[edge]
cores = 1
[[listener]]
addr = "@LISTEN@"
h2c = true
default_tunnel = "proxy"
[[tunnel]]
name = "proxy"
upstream = "{proxy}"
[[tunnel]]
name = "web"
hostnames = ["web.test"]
upstream = "{web}"
"#
    ));
    let wait = Duration::from_secs(5);
    // Connection A: a CONNECT relay on stream 1, malformed requests beside it.
    let mut c = RawH2::connect(edge.addr, None).await.unwrap();
    c.headers(
        1,
        &[
            (b":method", b"CONNECT"),
            (b":authority", b"target.test:443"),
        ],
        false,
    )
    .await
    .unwrap();
    let answer = c.until(wait, |f| f.stream == 1).await.unwrap();
    assert!(answer.is_status_200(), "{answer:?}");
    sibling_echo(&mut c, 0, wait).await;
    let cases: [(&str, &[u8], &[u8]); 5] = [
        ("uppercase field name", b"X-Upper", b"a"),
        ("NUL in a value", b"x-v", b"a\0b"),
        ("CR in a value", b"x-v", b"a\rb"),
        ("LF in a value", b"x-v", b"a\nb"),
        ("unknown pseudo-header", b":foo", b"bar"),
    ];
    for (i, (name, field, value)) in cases.iter().enumerate() {
        let id = 3 + 2 * i as u32;
        let mut f = h2raw::get("web.test", "/");
        if field.starts_with(b":") {
            f.insert(0, (field.to_vec(), value.to_vec()));
        } else {
            f.push((field.to_vec(), value.to_vec()));
        }
        c.headers(id, &h2raw::fields(&f), true).await.unwrap();
        let rst = c
            .until(wait, |f| f.stream == id || f.ty == h2raw::GOAWAY)
            .await
            .unwrap();
        assert_eq!(
            (rst.ty, rst.error_code()),
            (h2raw::RST_STREAM, Some(1)),
            "{name}: {rst:?}"
        );
        sibling_echo(&mut c, i + 1, wait).await;
    }

    // Connection B: trailers with a pseudo-header; a request with Host and
    // no :authority is routed by Host (RFC 9113 §8.3.1).
    let mut c = RawH2::connect(edge.addr, None).await.unwrap();
    let mut f = h2raw::get("web.test", "/t");
    f[0].1 = b"POST".to_vec();
    c.headers(1, &h2raw::fields(&f), false).await.unwrap();
    c.data(1, b"abc", false).await.unwrap();
    c.headers(1, &[(b":path", b"/x")], true).await.unwrap();
    let rst = c
        .until(wait, |f| {
            (f.stream == 1 && f.ty == h2raw::RST_STREAM) || f.ty == h2raw::GOAWAY
        })
        .await
        .unwrap();
    assert_eq!(
        (rst.ty, rst.error_code()),
        (h2raw::RST_STREAM, Some(1)),
        "trailers: {rst:?}"
    );
    c.headers(
        3,
        &[
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":path", b"/h"),
            (b"host", b"web.test"),
        ],
        true,
    )
    .await
    .unwrap();
    let answer = c
        .until(wait, |f| f.stream == 3 || f.ty == h2raw::GOAWAY)
        .await
        .unwrap();
    assert!(
        answer.is_status_200(),
        "Host without :authority: {answer:?}\n{}",
        edge.log()
    );
}
