//! HTTP/3 through the edge with a browser: Debian's Chromium, headless,
//! driven by `tests/js/h3_chromium.mjs` (playwright-core over CDP, no
//! browser download; `scripts/test.sh` installs both), to an HTTP/1.1
//! origin that serves a page and a WebSocket echo on one port.
//!
//! Covered, with QUIC forced on the edge's TLS port
//! (`--origin-to-force-quic-on`): the page's GET over h3 (CDP's
//! `response.protocol`), and in that page an RFC 9220 WebSocket (Chromium's
//! `EnableWebsocketsOverHttp3` feature) echoing a text message and 1 MiB of
//! random bytes (SHA-256 compared in the page), seen as an extended CONNECT
//! on the QUIC session by Chromium's net log and as an h3 WebSocket relay
//! by the edge. Then, QUIC not forced: the same page over h2 carries
//! `Alt-Svc: h3=":PORT"; ma=86400`, and Chromium moves to h3 by itself.
//!
//! Missing Chromium, node or node_modules fail the test with what to
//! install: there is no silent skip.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::browser::{require_browser, run_script, script_command};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// The `<title>` of the origin's page (the script reports what it saw).
const TITLE: &str = "switchyard h3";

/// Bytes of the binary WebSocket message.
const WS_BYTES: usize = 1 << 20;

/// What the origin served: the request line, and whether it asked for a
/// WebSocket upgrade.
#[derive(Debug)]
struct Served {
    line: String,
    upgrade: bool,
}

/// An HTTP/1.1 origin like a small web app: a WebSocket echo
/// (tokio-tungstenite) for any request asking to upgrade to `websocket`,
/// and an HTML page titled [`TITLE`] for anything else (`Connection:
/// close`). Reports each request it served.
async fn web_app_origin() -> (SocketAddr, mpsc::UnboundedReceiver<Served>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(serve_web_app(s, tx.clone()));
        }
    });
    (addr, rx)
}

async fn serve_web_app(mut s: TcpStream, tx: mpsc::UnboundedSender<Served>) {
    // Peek at the whole head first: tungstenite reads the upgrade itself.
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    let head = loop {
        let Ok(n) = s.peek(&mut buf).await else {
            return;
        };
        if let Some(i) = find(&buf[..n], b"\r\n\r\n") {
            break String::from_utf8_lossy(&buf[..i]).into_owned();
        }
        if n == 0 || n == buf.len() || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let line = head.lines().next().unwrap_or("").to_owned();
    let upgrade = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .any(|(n, v)| {
            n.trim().eq_ignore_ascii_case("upgrade") && v.trim().eq_ignore_ascii_case("websocket")
        });
    let _ = tx.send(Served { line, upgrade });
    if upgrade {
        use futures_util::{SinkExt, StreamExt};
        let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
            return;
        };
        while let Some(Ok(m)) = ws.next().await {
            if m.is_text() || m.is_binary() {
                if ws.send(m).await.is_err() {
                    break;
                }
            } else if m.is_close() {
                // tungstenite queued the Close reply; send it.
                let _ = ws.flush().await;
                break;
            }
        }
    } else {
        let _ = read_head(&mut s).await;
        let page = format!(
            "<!doctype html><html><head><title>{TITLE}</title></head>\
             <body>served by an HTTP/1.1 origin through the edge</body></html>"
        );
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
            page.len()
        );
        let _ = s.write_all(answer.as_bytes()).await;
        let _ = s.shutdown().await;
    }
}

/// Runs `h3_chromium.mjs` against the edge's TLS port (QUIC and TCP);
/// returns (exit code, stdout, stderr).
async fn h3_chromium(edge: &Edge, netlog_dir: &Path) -> (i32, String, String) {
    let origin = format!("https://localhost:{}", edge.tls_addr.port());
    let mut cmd = script_command("h3_chromium.mjs", edge);
    cmd.args(["--origin", &origin])
        .args(["--page-path", "/", "--ws-path", "/echo"])
        .args(["--ws-bytes", &WS_BYTES.to_string()])
        .args(["--timeout", "30", "--deadline", "150"])
        .arg("--require-alt-svc-switch")
        .arg("--netlog-dir")
        .arg(netlog_dir);
    run_script(&mut cmd, Duration::from_secs(200)).await
}

/// The script's report of check `name`.
fn check<'a>(all: &'a [serde_json::Value], name: &str, ctx: &str) -> &'a serde_json::Value {
    all.iter()
        .find(|v| v["check"] == name)
        .unwrap_or_else(|| panic!("no `{name}` check in the script's output\n{ctx}"))
}

/// Edge log lines with every one of `parts`, waiting (bounded) for one.
fn edge_log_line(edge: &Edge, parts: &[&str]) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found = edge
            .log()
            .lines()
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_owned);
        if found.is_some() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The number after `name=` in a log line.
fn log_field(line: &str, name: &str) -> Option<u64> {
    let key = format!(" {name}=");
    let at = line.find(&key)? + key.len();
    let digits: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_page_and_websocket_over_h3_and_alt_svc_from_h2() {
    require_browser();
    // The edge logs its h3 relays at debug level (this binary's only test).
    std::env::set_var("EDGE_LOG", "info,dataplane::downstream::h3=debug");
    let (web, mut served) = web_app_origin().await;
    let edge = Edge::start(&format!(
        r#"
[edge]
cores = 1
[[listener]]
addr = "@TLS_LISTEN@"
tls = {{ cert = "@CERT@", key = "@KEY@" }}
quic = true
[[tunnel]]
name = "web"
hostnames = ["localhost"]
upstream = "{web}"
"#
    ));
    let netlogs = tempfile::tempdir().unwrap();
    let (code, out, err) = h3_chromium(&edge, netlogs.path()).await;
    println!("{out}");
    let ctx = format!(
        "exit {code}\nstdout:\n{out}\nstderr:\n{err}\nedge log:\n{}",
        edge.log()
    );
    let all = json_lines(&out);

    // The page, over h3 (QUIC forced), from the h1 origin.
    let page = check(&all, "page_h3", &ctx);
    assert_eq!(page["ok"], true, "page_h3\n{ctx}");
    assert_eq!(page["status"], 200, "page_h3\n{ctx}");
    assert_eq!(page["protocol"], "h3", "page_h3\n{ctx}");
    assert_eq!(page["title"], TITLE, "page_h3\n{ctx}");

    // RFC 9220: text and 1 MiB binary echoed, the handshake an extended
    // CONNECT on the QUIC session (Chromium's net log, the edge's log).
    let ws = check(&all, "websocket", &ctx);
    assert_eq!(ws["ok"], true, "websocket\n{ctx}");
    assert_eq!(ws["text_ok"], true, "websocket text\n{ctx}");
    assert_eq!(ws["binary_ok"], true, "websocket binary\n{ctx}");
    assert_eq!(ws["binary_bytes"], WS_BYTES as u64, "websocket\n{ctx}");
    assert_eq!(ws["handshake_status"], 200, "websocket\n{ctx}");
    assert_eq!(
        ws["protocol"], "h3",
        "Chromium did not open the WebSocket over HTTP/3\n{ctx}"
    );
    let started = edge_log_line(&edge, &["h3 relay started", "kind=\"websocket\""]);
    assert!(
        started.is_some(),
        "the edge logged no h3 WebSocket relay\n{ctx}"
    );
    let ended = edge_log_line(&edge, &["h3 relay ended", "kind=\"websocket\""])
        .unwrap_or_else(|| panic!("the h3 WebSocket relay did not end\n{}", edge.log()));
    for dir in ["up", "down"] {
        let n = log_field(&ended, dir).unwrap_or(0);
        assert!(
            n >= WS_BYTES as u64,
            "{dir}={n}: the relay moved less than the 1 MiB message: {ended}"
        );
    }

    // The origin served the page and the WebSocket (as an h1 upgrade).
    let mut seen = Vec::new();
    while let Ok(s) = served.try_recv() {
        seen.push(s);
    }
    assert!(
        seen.iter()
            .any(|s| !s.upgrade && s.line.starts_with("GET / HTTP/1.1")),
        "the origin never served the page: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|s| s.upgrade && s.line.starts_with("GET /echo HTTP/1.1")),
        "the origin never saw the WebSocket upgrade: {seen:?}"
    );

    // QUIC not forced: h2 with the Alt-Svc, then h3 by Chromium's choice.
    let want = format!("h3=\":{}\"; ma=86400", edge.tls_addr.port());
    let alt = check(&all, "alt_svc_h2", &ctx);
    assert_eq!(alt["protocol"], "h2", "alt_svc_h2\n{ctx}");
    assert_eq!(alt["alt_svc"], want, "alt_svc_h2\n{ctx}");
    let switch = check(&all, "alt_svc_switch", &ctx);
    assert_eq!(
        switch["ok"], true,
        "Chromium did not move to h3 after the Alt-Svc\n{ctx}"
    );

    assert_eq!(code, 0, "h3_chromium.mjs failed\n{ctx}");
}
