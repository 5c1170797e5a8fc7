//! WebTransport through the edge with a browser: Debian's Chromium,
//! headless, driven by `tests/js/wt_chromium.mjs` (playwright-core over
//! CDP, no browser download; `scripts/test.sh` installs both), to
//! `tests/py/wt_server.py` (aioquic, WebTransport draft-02) behind an h3
//! tunnel whose upstream certificate is checked against a test CA.
//!
//! From a page on http://127.0.0.1 (a secure context) served by the script,
//! `new WebTransport("https://localhost:PORT/...")` reaches the edge's QUIC
//! port (its certificate trusted by SPKI hash,
//! `--ignore-certificate-errors-spki-list`): a 64 KiB bidi stream echo and a
//! 16 KiB uni stream echo (SHA-256 compared in the page, and against what
//! the upstream logged), datagram echoes, the upstream's WT_CLOSE_SESSION
//! (code 7, "bye") arriving as `closed`'s code and reason, and the page's
//! `close({closeCode: 42, reason: "done"})` arriving upstream.
//!
//! Missing Chromium, node, node_modules or Python's aioquic fail the test
//! with what to install: there is no silent skip.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::browser::{require_browser, run_script, script_command};
use support::*;

/// Bytes of the bidi and uni streams' payloads.
const BIDI_BYTES: usize = 64 << 10;
const UNI_BYTES: usize = 16 << 10;

/// Fails, saying what to install, unless Chromium, node, playwright-core
/// and Python's aioquic are there.
fn require_tools() {
    require_browser();
    let aioquic = std::process::Command::new(python())
        .args(["-c", "import aioquic"])
        .output();
    assert!(
        matches!(&aioquic, Ok(o) if o.status.success()),
        "{} cannot import aioquic ({aioquic:?}): `pip install -r tests/requirements.txt` \
         into .venv (scripts/test.sh does), or set SWITCHYARD_PYTHON",
        python()
    );
}

/// Runs `wt_chromium.mjs` against the edge's QUIC port; returns (exit
/// code, stdout, stderr).
async fn wt_chromium(edge: &Edge, netlog_dir: &Path) -> (i32, String, String) {
    let url = format!("https://localhost:{}", edge.tls_addr.port());
    let mut cmd = script_command("wt_chromium.mjs", edge);
    cmd.args(["--edge", &url])
        .args(["--echo-path", "/echo"])
        .args(["--bidi-bytes", &BIDI_BYTES.to_string()])
        .args(["--uni-bytes", &UNI_BYTES.to_string()])
        .args(["--datagrams", "20"])
        .args(["--server-close", "7:bye", "--client-close", "42:done"])
        .args(["--timeout", "30", "--deadline", "150"])
        .arg("--netlog-dir")
        .arg(netlog_dir);
    run_script(&mut cmd, Duration::from_secs(200)).await
}

/// The script's report of check `name`.
fn check<'a>(all: &'a [Value], name: &str, ctx: &str) -> &'a Value {
    all.iter()
        .find(|v| v["check"] == name)
        .unwrap_or_else(|| panic!("no `{name}` check in the script's output\n{ctx}"))
}

/// The first line of `log()` with every one of `parts`, waiting (bounded)
/// for one: the peers log when a stream or session ends, which may be a
/// little after the browser saw it.
async fn log_line(log: impl Fn() -> String, parts: &[&str]) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = log()
            .lines()
            .find(|l| parts.iter().all(|p| l.contains(p)))
            .map(str::to_owned);
        if found.is_some() || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_webtransport_streams_datagrams_and_close_codes_through_the_edge() {
    require_tools();
    // The edge logs its session relays at debug level (this binary's only
    // test).
    std::env::set_var("EDGE_LOG", "info,dataplane::downstream::h3=debug");
    let dir = tempfile::tempdir().unwrap();
    let wt = QuicPeer::start("wt_server.py", dir.path(), &[]);
    // The tunnel is chosen by :authority: the WebTransport URL's host,
    // "localhost" (a name in the edge's test certificate).
    let edge = Edge::start(&format!(
        r#"
[edge]
cores = 1
[[listener]]
addr = "@TLS_LISTEN@"
tls = {{ cert = "@CERT@", key = "@KEY@" }}
quic = true
[[tunnel]]
name = "wt"
hostnames = ["localhost"]
upstream = "{}"
http_version = "h3"
upstream_tls = {{ ca = "{}", server_name = "origin.internal" }}
"#,
        wt.addr,
        wt.ca.display()
    ));
    let netlogs = tempfile::tempdir().unwrap();
    let (code, out, err) = wt_chromium(&edge, netlogs.path()).await;
    println!("{out}");
    let ctx = || {
        format!(
            "exit {code}\nstdout:\n{out}\nstderr:\n{err}\nedge log:\n{}\nwt_server.py log:\n{}",
            edge.log(),
            wt.log()
        )
    };
    let all = json_lines(&out);

    // Every required check of the script passed.
    for name in [
        "page",
        "ready",
        "bidi_echo",
        "uni_echo",
        "datagram_echo",
        "server_close",
        "client_close",
    ] {
        let c = check(&all, name, &ctx());
        assert_eq!(c["ok"], true, "{name}: {c}\n{}", ctx());
    }

    // Bidi: the page's bytes reached the upstream and came back unchanged.
    let bidi = check(&all, "bidi_echo", &ctx());
    assert_eq!(bidi["received"], BIDI_BYTES as u64, "{bidi}");
    let sha = bidi["sha_sent"].as_str().unwrap().to_owned();
    assert_eq!(bidi["sha_received"], sha.as_str(), "{bidi}");
    let want = format!("in={BIDI_BYTES} out={BIDI_BYTES} sha_in={sha} sha_out={sha}");
    let line = log_line(|| wt.log(), &["done kind=bidi", want.as_str()]).await;
    assert!(
        line.is_some(),
        "wt_server.py did not echo the page's bidi stream\n{}",
        ctx()
    );

    // Uni: the page's stream upstream, the server's echo stream back.
    let uni = check(&all, "uni_echo", &ctx());
    assert_eq!(uni["received"], UNI_BYTES as u64, "{uni}");
    let sha = uni["sha_sent"].as_str().unwrap().to_owned();
    assert_eq!(uni["sha_received"], sha.as_str(), "{uni}");
    for (kind, field) in [("uni", "sha_in"), ("echo-uni", "sha_out")] {
        let (k, f) = (format!("done kind={kind} "), format!("{field}={sha}"));
        let line = log_line(|| wt.log(), &[k.as_str(), f.as_str()]).await;
        assert!(
            line.is_some(),
            "wt_server.py logged no {kind} stream with {field}={sha}\n{}",
            ctx()
        );
    }

    // Datagrams: unreliable, but on loopback some come back.
    let dgrams = check(&all, "datagram_echo", &ctx());
    assert!(
        dgrams["received"].as_u64().unwrap_or(0) >= 1,
        "no datagram echoed: {dgrams}\n{}",
        ctx()
    );
    println!(
        "datagrams: {} of {} echoed",
        dgrams["received"], dgrams["sent"]
    );

    // The upstream's WT_CLOSE_SESSION (7, "bye") reached the page as
    // `closed`'s code and reason.
    let close = check(&all, "server_close", &ctx());
    assert_eq!(close["closed"]["closeCode"], 7, "{close}\n{}", ctx());
    assert_eq!(close["closed"]["reason"], "bye", "{close}\n{}", ctx());
    assert!(
        log_line(|| wt.log(), &["close_session out code=7 reason=627965"])
            .await
            .is_some(),
        "wt_server.py did not close the /close session\n{}",
        ctx()
    );

    // The page's close({closeCode: 42, reason: "done"}) reached the
    // upstream as WT_CLOSE_SESSION 42 "done" (hex 646f6e65).
    let line = log_line(|| wt.log(), &["close_session code=42 reason=646f6e65"]).await;
    assert!(
        line.is_some(),
        "the page's close code and reason did not reach wt_server.py\n{}",
        ctx()
    );

    // Chromium negotiated WebTransport draft-02 with the edge (its net log)
    // for each of the three sessions, and the edge relayed them as sessions.
    let net = check(&all, "netlog", &ctx());
    let sessions = net["sessions"].as_array().cloned().unwrap_or_default();
    assert!(
        sessions.len() >= 3,
        "Chromium's net log has {} WebTransport sessions: {net}",
        sessions.len()
    );
    for s in &sessions {
        assert_eq!(s["webtransport_http3_version"], "draft-02", "{s}");
    }
    let started = edge
        .log()
        .lines()
        .filter(|l| l.contains("h3 session relay started") && l.contains("kind=\"webtransport\""))
        .count();
    assert!(
        started >= 3,
        "the edge logged {started} WebTransport session relays, not 3\n{}",
        ctx()
    );

    assert_eq!(code, 0, "wt_chromium.mjs failed\n{}", ctx());
}
