//! HTTP/3 bad input gets the answer RFC 9114 / RFC 9204 require, while a
//! good client keeps relaying through the same edge.
//!
//! `tests/py/h3_bad.py` (aioquic's QuicConnection with hand-built HTTP/3
//! bytes) runs its whole catalogue against the edge's QUIC port: each case
//! on a fresh connection, each answer (CONNECTION_CLOSE code, RESET_STREAM
//! code, status, or "ignored: a good GET still works") checked by the
//! script. Meanwhile `tests/py/h3_client.py ws` relays 4 MiB WebSocket
//! echoes to a tungstenite origin, one connection after another, until the
//! catalogue is done; every one of them must succeed. The HTTP/1.1 origin
//! behind the reverse-proxy tunnel is the lenient one: it must never see
//! the request smuggled in an h3 body longer than its content-length.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use support::*;

/// Runs a helper script with the test venv's Python; (exit code, stdout,
/// stderr).
fn run_py(script: &str, args: &[String]) -> (i32, String, String) {
    let out = Command::new(python())
        .arg(py_script(script))
        .args(args)
        .output()
        .expect("python with `aioquic` and `pylsqpack` (scripts/test.sh installs them)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `h3_client.py` arguments for the edge's QUIC port, then `rest`.
fn h3_client_args(quic: &str, cert: &str, rest: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "--timeout",
        "30",
        "--deadline",
        "120",
        "--connect",
        quic,
        "--cafile",
        cert,
        "--sni",
        "localhost",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(rest.iter().map(|s| s.to_string()));
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_bad_input_gets_the_rfc_answers_while_a_relay_keeps_working() {
    let (web, mut recorded) = lenient_origin().await;
    let (ws, _) = ws_echo_origin().await;
    let edge = Edge::start(&format!(
        r#"
[edge]
cores = 1
upstream_handshake_timeout_ms = 2000
[[listener]]
addr = "@TLS_LISTEN@"
tls = {{ cert = "@CERT@", key = "@KEY@" }}
quic = true
[[tunnel]]
name = "web"
hostnames = ["localhost"]
upstream = "{web}"
[[tunnel]]
name = "ws"
hostnames = ["echo.test"]
upstream = "{ws}"
"#
    ));
    let quic = edge.tls_addr.to_string();
    let cert = edge.cert_pem.to_str().unwrap().to_owned();

    // The good client: 4 MiB WebSocket echoes over h3, connection after
    // connection, until the catalogue is done (at least one; stops at the
    // first failure).
    let stop = Arc::new(AtomicBool::new(false));
    let good = {
        let (stop, quic, cert) = (stop.clone(), quic.clone(), cert.clone());
        std::thread::spawn(move || {
            let args = h3_client_args(
                &quic,
                &cert,
                &[
                    "ws",
                    "--authority",
                    "echo.test",
                    "--path",
                    "/chat",
                    "--bytes",
                    "4194304",
                ],
            );
            let mut runs = Vec::new();
            loop {
                let r = run_py("h3_client.py", &args);
                let failed = r.0 != 0;
                runs.push(r);
                if failed || stop.load(Ordering::Relaxed) {
                    return runs;
                }
            }
        })
    };

    // The catalogue, every case. Off the runtime's workers: the origins are
    // tasks of this runtime.
    let bad = {
        let args: Vec<String> = [
            "--connect",
            quic.as_str(),
            "--cafile",
            cert.as_str(),
            "--sni",
            "localhost",
            "--authority",
            "localhost",
            "--path",
            "/h3-bad",
            "--timeout",
            "10",
            "--settle",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        tokio::task::spawn_blocking(move || run_py("h3_bad.py", &args))
            .await
            .unwrap()
    };
    stop.store(true, Ordering::Relaxed);
    let runs = tokio::task::spawn_blocking(move || good.join().unwrap())
        .await
        .unwrap();

    // After the catalogue: the edge still serves a plain GET.
    let after = {
        let args = h3_client_args(
            &quic,
            &cert,
            &["request", "--authority", "localhost", "--path", "/after"],
        );
        tokio::task::spawn_blocking(move || run_py("h3_client.py", &args))
            .await
            .unwrap()
    };

    let mut problems = Vec::new();

    let (code, out, err) = &bad;
    let lines = json_lines(out);
    let cases: Vec<&serde_json::Value> = lines.iter().filter(|v| v.get("case").is_some()).collect();
    let failed: Vec<String> = cases
        .iter()
        .filter(|v| v["ok"] != true)
        .map(|v| v.to_string())
        .collect();
    let summary = lines.iter().find_map(|v| v.get("summary"));
    if *code != 0 || !failed.is_empty() {
        problems.push(format!(
            "h3_bad.py exit {code}, {} case(s) not answered as the RFCs require:\n{}\n\nall output:\n{out}\nstderr:\n{err}",
            failed.len(),
            failed.join("\n")
        ));
    }
    match summary.and_then(|s| s["cases"].as_u64()) {
        Some(n) if n >= 24 && n as usize == cases.len() => {
            println!("h3_bad.py: {n} cases, {} failed", failed.len())
        }
        other => problems.push(format!(
            "h3_bad.py summary: {other:?} cases for {} case lines (want at least 24)\nstdout:\n{out}\nstderr:\n{err}",
            cases.len()
        )),
    }

    if runs.is_empty() {
        problems.push("the good ws client never ran".into());
    }
    for (i, (code, out, err)) in runs.iter().enumerate() {
        if *code != 0 {
            problems.push(format!(
                "good ws client, run {i} (4 MiB echo during the catalogue), exit {code}\nstdout:\n{out}\nstderr:\n{err}"
            ));
        }
    }
    println!(
        "good ws client: {} × 4 MiB echo during the catalogue",
        runs.len()
    );

    if after.0 != 0 {
        problems.push(format!(
            "GET after the catalogue, exit {}\nstdout:\n{}\nstderr:\n{}",
            after.0, after.1, after.2
        ));
    }

    // What the HTTP/1.1 origin parsed: never the request hidden in a body
    // longer than its content-length.
    let mut seen = Vec::new();
    while let Ok(r) = recorded.try_recv() {
        seen.push(r.line().to_owned());
    }
    if seen.iter().any(|l| l.contains("/smuggled")) {
        problems.push(format!(
            "the origin parsed a request smuggled in an h3 request body:\n{}",
            seen.join("\n")
        ));
    }

    assert!(
        problems.is_empty(),
        "{}\n\nedge log:\n{}",
        problems.join("\n\n----\n\n"),
        edge.log()
    );
}
