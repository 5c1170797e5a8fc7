//! What operators see: per-tunnel counters on `/stats` and `/metrics`, the
//! Prometheus text format checked by `promtool` and scraped by a real
//! Prometheus server (Debian's), and one access-log line per finished
//! relay — h1 WebSocket, HTTPUpgrade and CONNECT, an h2 and an h3
//! WebSocket stream — with no credential in it.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use support::*;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "observability-secret-token";
/// Bytes the HTTPUpgrade client sends (and gets back from the echo).
const RAW_BYTES: usize = 300_000;

fn require_prometheus() {
    for tool in ["promtool", "prometheus"] {
        let ok = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "`{tool}` not found: `apt-get install -y prometheus` (scripts/test.sh installs it)"
        );
    }
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    c.read_to_string(&mut body).unwrap();
    body.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// HTTPUpgrade through `raw.test`: RAW_BYTES up, the same back, then FIN.
async fn httpupgrade(edge: &Edge) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    s.write_all(b"GET /tunnel HTTP/1.1\r\nHost: raw.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").await.unwrap();
    let (head, rest) = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(rest.is_empty());
    let data = random_bytes(RAW_BYTES, 5);
    let (mut r, mut w) = s.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    assert_eq!(sha256(&back), sha256(&data));
}

/// An h1 WebSocket through `echo.test` with the token in the query.
async fn websocket(edge: &Edge) {
    let url = format!(
        "ws://echo.test:{}/chat?rstream.token={TOKEN}",
        edge.addr.port()
    );
    let tcp = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::binary(random_bytes(1000, 9)))
        .await
        .unwrap();
    assert!(matches!(ws.next().await, Some(Ok(Message::Binary(_)))));
    ws.close(None).await.unwrap();
    while let Some(Ok(m)) = ws.next().await {
        if m.is_close() {
            break;
        }
    }
}

/// A plain h1 CONNECT through the listener's default tunnel to `target`.
fn connect(edge: &Edge, target: SocketAddr) {
    let mut s = std::net::TcpStream::connect(edge.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"ping").unwrap();
    let mut got = [0u8; 4];
    s.read_exact(&mut got).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let _ = s.read(&mut buf);
}

fn python_client(script: &str, args: &[&str]) {
    let out = Command::new(python())
        .arg(py_script(script))
        .args(["--timeout", "30", "--deadline", "120"])
        .args(args)
        .output()
        .expect("python with h2 and aioquic (scripts/test.sh installs them)");
    assert!(
        out.status.success(),
        "{script}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One sample of `/metrics`: the value of `metric{labels}`.
fn sample(metrics: &str, metric: &str, labels: &str) -> Option<u64> {
    let key = format!("{metric}{{{labels}}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_metrics_prometheus_and_access_log() {
    require_prometheus();
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.log");
    let (ws, _) = ws_echo_origin().await;
    let raw = tcp_echo_origin().await;
    let (_proxy, fwd) = pproxy();
    let edge = Edge::start(&format!(
        r#"
[edge]
cores = 2
admin = "@ADMIN@"
access_log = "json"
access_log_path = "{}"
[[listener]]
addr = "@LISTEN@"
h2c = true
default_tunnel = "fwd"
[[listener]]
addr = "@TLS_LISTEN@"
tls = {{ cert = "@CERT@", key = "@KEY@" }}
quic = true
[[tunnel]]
name = "chat"
hostnames = ["echo.test"]
upstream = "{ws}"
token_auth = true
tokens = ["{TOKEN}"]
[[tunnel]]
name = "raw"
hostnames = ["raw.test"]
upstream = "{raw}"
mode = "httpupgrade"
path = "/tunnel"
[[tunnel]]
name = "fwd"
hostnames = ["localhost"]
upstream = "{fwd}"
allow_connect = true
"#,
        access.display()
    ));

    httpupgrade(&edge).await;
    websocket(&edge).await;
    connect(&edge, raw);
    let h2 = edge.addr.to_string();
    python_client(
        "h2_client.py",
        &[
            "--connect",
            &h2,
            "ws",
            "--authority",
            "echo.test",
            "--path",
            "/chat",
            "--token",
            TOKEN,
            "--bytes",
            "5000",
        ],
    );
    let tls = edge.tls_addr.to_string();
    let cert = edge.cert_pem.to_str().unwrap().to_owned();
    python_client(
        "h3_client.py",
        &[
            "--connect",
            &tls,
            "--cafile",
            &cert,
            "--sni",
            "localhost",
            "ws",
            "--authority",
            "echo.test",
            "--path",
            "/chat",
            "--token",
            TOKEN,
            "--bytes",
            "5000",
        ],
    );
    // An unauthorized try counts against its tunnel.
    let denied = raw_exchange(edge.addr, b"GET /chat HTTP/1.1\r\nHost: echo.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await;
    assert_eq!(status_of(&denied), Some(401));

    // One access-log line per finished relay, every field there, no token.
    let read_log = || std::fs::read_to_string(&access).unwrap_or_default();
    eventually("5 access-log lines", Duration::from_secs(20), || {
        read_log().lines().count() >= 5
    });
    let log = read_log();
    assert!(
        !log.contains(TOKEN),
        "the token is in the access log:\n{log}"
    );
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let mut seen: Vec<(String, String, String)> = Vec::new();
    for l in &lines {
        for field in [
            "time",
            "core",
            "client",
            "tunnel",
            "kind",
            "downstream",
            "upstream",
            "path",
            "status",
            "bytes_up",
            "bytes_down",
            "duration_ms",
            "end",
            "ended_by",
        ] {
            assert!(l.get(field).is_some(), "{field} missing: {l}");
        }
        assert!(
            ["downstream", "upstream", "edge"].contains(&l["ended_by"].as_str().unwrap()),
            "{l}"
        );
        seen.push((
            l["tunnel"].as_str().unwrap().into(),
            l["kind"].as_str().unwrap().into(),
            l["downstream"].as_str().unwrap().into(),
        ));
    }
    for want in [
        ("raw", "httpupgrade", "h1"),
        ("chat", "websocket", "h1"),
        ("fwd", "connect", "h1"),
        ("chat", "websocket", "h2"),
        ("chat", "websocket", "h3"),
    ] {
        assert!(
            seen.iter()
                .any(|(t, k, d)| (t.as_str(), k.as_str(), d.as_str()) == want),
            "no line for {want:?}: {seen:?}"
        );
    }
    let raw_line = lines.iter().find(|l| l["tunnel"] == "raw").unwrap();
    assert_eq!(
        (
            raw_line["bytes_up"].as_u64(),
            raw_line["bytes_down"].as_u64()
        ),
        (Some(RAW_BYTES as u64), Some(RAW_BYTES as u64)),
        "{raw_line}"
    );
    assert_eq!(raw_line["status"], 101);
    // Its client's FIN came first (the echo origin closes only after it).
    assert_eq!(raw_line["ended_by"], "downstream", "{raw_line}");
    // The token the h1 WebSocket carried in its query was consumed by auth:
    // neither forwarded nor logged.
    assert!(
        lines
            .iter()
            .any(|l| l["tunnel"] == "chat" && l["downstream"] == "h1" && l["path"] == "/chat"),
        "{log}"
    );

    // A request that comes in pieces (as a shell health check writes it)
    // is still answered.
    let mut c = std::net::TcpStream::connect(edge.admin).unwrap();
    c.write_all(b"GET /me").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    c.write_all(b"trics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("# TYPE switchyard_"),
        "{answer}"
    );

    // /metrics: promtool finds nothing to complain about; the per-tunnel
    // bytes add up to the per-core totals, on /stats as on /metrics.
    let metrics = get(edge.admin, "/metrics");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool check metrics:\n{}{}\n{metrics}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let stats: Value = serde_json::from_str(&get(edge.admin, "/stats")).unwrap();
    for (core_key, tunnel_key) in [
        (
            "bytes_downstream_to_upstream",
            "bytes_downstream_to_upstream",
        ),
        (
            "bytes_upstream_to_downstream",
            "bytes_upstream_to_downstream",
        ),
        ("relays_total", "relays_total"),
    ] {
        for core in stats["cores"].as_array().unwrap() {
            let per_tunnel: u64 = core["tunnels"]
                .as_object()
                .unwrap()
                .values()
                .map(|t| t[tunnel_key].as_u64().unwrap())
                .sum();
            assert_eq!(
                per_tunnel,
                core[core_key].as_u64().unwrap(),
                "{core_key} on core {}: {core}",
                core["core"]
            );
            let i = core["core"].as_u64().unwrap();
            for (name, t) in core["tunnels"].as_object().unwrap() {
                let metric = format!(
                    "switchyard_tunnel_{tunnel_key}{}",
                    if tunnel_key.ends_with("_total") {
                        ""
                    } else {
                        "_total"
                    }
                );
                assert_eq!(
                    sample(
                        &metrics,
                        &metric,
                        &format!("core=\"{i}\",tunnel=\"{name}\"")
                    ),
                    t[tunnel_key].as_u64(),
                    "{metric} {name}"
                );
            }
        }
    }
    let rejected: u64 = stats["cores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["tunnels"]["chat"]["rejected_total"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(rejected, 1);

    // The labeled families, summed over the cores: every relay above by
    // its downstream version and kind, each with a handshake observation,
    // and the refused try by reason and answer.
    let sum = |metric: &str, labels: &str| -> u64 {
        (0..2)
            .filter_map(|core| sample(&metrics, metric, &format!("core=\"{core}\"{labels}")))
            .sum()
    };
    for (version, kind) in [
        ("h1", "httpupgrade"),
        ("h1", "websocket"),
        ("h1", "connect"),
        ("h2", "websocket"),
        ("h3", "websocket"),
    ] {
        let labels = format!(",downstream=\"{version}\",kind=\"{kind}\"");
        assert_eq!(
            sum("switchyard_relays_started_total", &labels),
            1,
            "{labels}\n{metrics}"
        );
        assert_eq!(
            sum("switchyard_relays_active", &labels),
            0,
            "{labels}\n{metrics}"
        );
    }
    assert_eq!(
        sum("switchyard_handshake_seconds_count", ""),
        5,
        "{metrics}"
    );
    assert_eq!(
        sum("switchyard_handshake_seconds_bucket", ",le=\"+Inf\""),
        5,
        "{metrics}"
    );
    assert_eq!(
        sum(
            "switchyard_rejections_total",
            ",reason=\"unauthorized\",answer=\"401\""
        ),
        1,
        "{metrics}"
    );
    let ended: u64 = ["splice", "copy"]
        .iter()
        .flat_map(|p| ["closed", "reset", "idle_timeout"].map(move |e| (p, e)))
        .map(|(p, e)| {
            sum(
                "switchyard_relays_ended_total",
                &format!(",path=\"{p}\",end=\"{e}\""),
            )
        })
        .sum();
    assert_eq!(ended, 5, "{metrics}");
    assert!(
        sum(
            "switchyard_relays_ended_total",
            ",path=\"splice\",end=\"closed\""
        ) >= 1,
        "{metrics}"
    );
    assert_eq!(
        sum(
            "switchyard_upstream_errors_by_kind_total",
            ",kind=\"timeout\""
        ),
        0,
        "{metrics}"
    );

    // A real Prometheus scrapes the edge; PromQL gives the HTTPUpgrade
    // tunnel's bytes up, equal to what its client sent.
    let port = free_port();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: switchyard\n    static_configs:\n      - targets: ['{}']\n", edge.admin),
    )
    .unwrap();
    let _prometheus = Proc(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let query = "sum(switchyard_tunnel_bytes_downstream_to_upstream_total{tunnel=\"raw\"})";
    let url = format!(
        "http://127.0.0.1:{port}/api/v1/query?query={}",
        percent(query)
    );
    let mut last = String::new();
    eventually(
        "Prometheus to scrape the edge",
        Duration::from_secs(60),
        || {
            let out = Command::new("curl").args(["-s", &url]).output().unwrap();
            last = String::from_utf8_lossy(&out.stdout).into_owned();
            let v: Value = serde_json::from_str(&last).unwrap_or(Value::Null);
            v["data"]["result"][0]["value"][1].as_str() == Some(&RAW_BYTES.to_string())
        },
    );
    eprintln!("PromQL {query} → {last}");
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"_-.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
