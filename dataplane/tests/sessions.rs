//! Sessions over HTTP/3 through the edge, with aioquic on both sides:
//! CONNECT-UDP (RFC 9298) and CONNECT-IP (RFC 9484) from `masque_client.py`
//! to `masque_server.py` (and a UDP echo behind it), WebTransport draft-02
//! from `wt_client.py` to `wt_server.py`. The edge relays the request
//! stream's capsules, the HTTP datagrams (quarter stream ids rewritten per
//! hop) and WebTransport's streams; it does no UDP or IP itself.
//!
//! The numbers in the test names' comments are the conformance statements
//! of `shared/RELAY-FACTS.md` each check covers.

mod support;

use std::process::{Command, Stdio};

use serde_json::Value;
use support::*;

const TOKEN: &str = "session-secret-token";

/// One tunnel per peer, each also with a token-protected twin, a tunnel
/// whose upstream is not h3 (sessions there are 501), and `capsuling`: a
/// MASQUE upstream that answers in QUIC datagrams whatever came in.
fn edge(masque: &QuicPeer, wt: &QuicPeer, capsuling: &QuicPeer, no_ext: &QuicPeer) -> Edge {
    let tunnel = |name: &str, host: &str, peer: &QuicPeer, auth: bool| {
        let auth = if auth {
            format!("token_auth = true\ntokens = [\"{TOKEN}\"]\n")
        } else {
            String::new()
        };
        format!(
            "[[tunnel]]\nname = \"{name}\"\nhostnames = [\"{host}\"]\nupstream = \"{}\"\nhttp_version = \"h3\"\n\
             upstream_tls = {{ ca = \"{}\", server_name = \"origin.internal\" }}\n{auth}",
            peer.addr,
            peer.ca.display()
        )
    };
    Edge::start(&format!(
        "[edge]\ncores = 1\nadmin = \"@ADMIN@\"\n[[listener]]\naddr = \"@TLS_LISTEN@\"\ntls = {{ cert = \"@CERT@\", key = \"@KEY@\" }}\nquic = true\n\
         {}{}{}{}{}{}[[tunnel]]\nname = \"h1\"\nhostnames = [\"h1.test\"]\nupstream = \"127.0.0.1:9\"\n",
        tunnel("masque", "masque.test", masque, false),
        tunnel("masque-auth", "auth.test", masque, true),
        tunnel("wt", "wt.test", wt, false),
        tunnel("wt-auth", "wt-auth.test", wt, true),
        tunnel("capsuling", "capsule.test", capsuling, false),
        tunnel("no-ext", "no-ext.test", no_ext, false),
    ))
}

/// Runs a Python client against the edge's QUIC port; its exit code and
/// stdout parsed as one JSON object.
fn run(edge: &Edge, script: &str, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(python())
        .arg(py_script(script))
        .args(["--timeout", "30", "--deadline", "120"])
        .args(["--connect", &edge.tls_addr.to_string()])
        .args([
            "--cafile",
            edge.cert_pem.to_str().unwrap(),
            "--sni",
            "localhost",
        ])
        .args(args)
        .output()
        .expect("python with `aioquic` (scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (
        out.status.code().unwrap_or(-1),
        json,
        format!("stdout:\n{stdout}\nstderr:\n{stderr}"),
    )
}

fn udp_echo() -> (Proc, u16) {
    let mut child = Command::new(python())
        .arg(py_script("udp_echo.py"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python");
    let port = listening_port(child.stdout.take().unwrap());
    (Proc(child), port)
}

/// The sha256s the client saw in `key` (a list of capsules).
fn shas(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["sha"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn connect_udp_and_connect_ip_relay_datagrams_and_capsules() {
    let dir = tempfile::tempdir().unwrap();
    let masque = QuicPeer::start("masque_server.py", dir.path(), &[]);
    let wt = QuicPeer::start("wt_server.py", dir.path(), &[]);
    let (_echo, echo_port) = udp_echo();
    let capsuling = QuicPeer::start(
        "masque_server.py",
        &dir.path().join("capsuling"),
        &["--reply-datagrams"],
    );
    let no_ext = QuicPeer::start(
        "h3_origin.py",
        &dir.path().join("no-ext"),
        &["--no-connect-protocol"],
    );
    let edge = edge(&masque, &wt, &capsuling, &no_ext);
    let port = echo_port.to_string();
    let udp = |host: &str, extra: &[&str]| {
        let mut a = vec![
            "udp",
            "--authority",
            host,
            "--target-host",
            "127.0.0.1",
            "--target-port",
            &port,
        ];
        a.extend_from_slice(extra);
        run(&edge, "masque_client.py", &a)
    };

    // 10,000 datagrams on each of contexts 0 (UDP payload, echoed by the
    // target), 2 and 3 (echoed by the proxy): every one accounted for (14);
    // GREASE and DATAGRAM capsules come back byte-identical (11), and the
    // edge turned no QUIC datagram into a capsule (16).
    let (code, r, out) = udp(
        "masque.test",
        &[
            "--count",
            "10000",
            "--contexts",
            "0,2,3",
            "--grease-capsule",
            "--capsule-datagrams",
            "2",
        ],
    );
    assert_eq!(
        code,
        0,
        "{out}\nedge:\n{}\nmasque:\n{}",
        edge.log(),
        masque.log()
    );
    assert_eq!(r["status"], 200);
    assert_eq!(r["headers"]["capsule-protocol"], "?1");
    for ctx in ["0", "2", "3"] {
        let (sent, got, lost) = (
            r["sent"][ctx].as_u64().unwrap(),
            r["received"][ctx].as_u64().unwrap(),
            r["lost"][ctx].as_u64().unwrap(),
        );
        assert_eq!(sent, 10_000, "{r}");
        assert_eq!(
            got + lost,
            sent,
            "context {ctx}: every datagram received or counted lost: {r}"
        );
        assert!(got > 9_000, "context {ctx}: {got} of {sent} came back: {r}");
        eprintln!("context {ctx}: {got} received, {lost} lost");
    }
    assert_eq!(r["corrupt"], 0);
    assert_eq!(r["grease"]["back"], true, "{r}");
    assert_eq!(r["capsule_datagrams"]["identical"], 2, "{r}");
    assert_eq!(
        r["received_via"]["capsule"], 2,
        "only the capsules sent as capsules came back as capsules: {r}"
    );
    let line = masque
        .log()
        .lines()
        .find(|l| l.contains("connect-udp CONNECT"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains("capsules_in=3 "),
        "the upstream got the 3 capsules and nothing converted: {line}"
    );
    assert!(line.contains("ctx_seen=[0,2,3]"), "{line}");
    let relayed = edge.total("h3_datagrams_relayed");
    assert!(relayed >= 2 * 29_000, "h3_datagrams_relayed = {relayed}");
    eprintln!(
        "edge: relayed {relayed}, dropped: no session {}, too large {}, unsupported {}",
        edge.total("h3_datagrams_dropped_no_session"),
        edge.total("h3_datagrams_dropped_too_large"),
        edge.total("h3_datagrams_dropped_unsupported")
    );

    // A DATAGRAM capsule with a UDP payload over 65,527 bytes aborts the
    // request stream (15), here at the edge (H3_DATAGRAM_ERROR).
    let (code, r, out) = udp("masque.test", &["--oversize-capsule"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        r["reset"] == 0x33 || r["stop_sending"] == 0x33,
        "{r}\n{}",
        edge.log()
    );

    // Token auth: 401 without, 200 with the header or the query parameter.
    let (_, r, _) = udp("auth.test", &[]);
    assert_eq!(r["status"], 401, "{r}");
    let (code, r, out) = udp("auth.test", &["--token", TOKEN, "--count", "10"]);
    assert_eq!((code, r["status"].as_u64()), (0, Some(200)), "{out}");
    let (code, r, out) = udp(
        "auth.test",
        &[
            "--token",
            TOKEN,
            "--token-query",
            "rstream.token",
            "--count",
            "10",
        ],
    );
    assert_eq!(
        (code, r["status"].as_u64()),
        (0, Some(200)),
        "{out}\n{}",
        edge.log()
    );
    assert!(
        !masque.log().contains(TOKEN),
        "the token never reaches the upstream"
    );
    // A client without QUIC datagrams sends DATAGRAM capsules (passed on
    // as they are); what the upstream sends it as QUIC datagrams reaches the
    // client as DATAGRAM capsules the edge writes between the upstream's
    // capsules (RFC 9297 §3.5; 16: only toward a hop without datagrams).
    let (code, r, out) = run(
        &edge,
        "masque_client.py",
        &[
            "--no-datagram",
            "udp",
            "--authority",
            "capsule.test",
            "--target-host",
            "127.0.0.1",
            "--target-port",
            &port,
            "--count",
            "2000",
            "--contexts",
            "0",
        ],
    );
    assert_eq!(code, 0, "{out}\nedge:\n{}", edge.log());
    let via_capsule = r["received_via"]["capsule"].as_u64().unwrap();
    assert_eq!(via_capsule + r["lost"]["0"].as_u64().unwrap(), 2000, "{r}");
    assert!(via_capsule > 1900, "{r}");
    assert!(
        capsuling.log().contains("dgrams_out=2000"),
        "the upstream answered in QUIC datagrams:\n{}",
        capsuling.log()
    );
    assert!(edge.total("h3_datagrams_capsuled") >= 1900);
    // An upstream whose SETTINGS do not enable extended CONNECT never gets
    // one (19): 502, and it saw no request.
    let (_, r, _) = udp("no-ext.test", &[]);
    assert_eq!(r["status"], 502, "{r}");
    assert!(!no_ext.log().contains("stream c"), "{}", no_ext.log());
    // A tunnel whose upstream is not h3 cannot carry datagrams: 501.
    let (_, r, _) = udp("h1.test", &[]);
    assert_eq!(r["status"], 501, "{r}");

    // CONNECT-IP: ADDRESS_ASSIGN, ROUTE_ADVERTISEMENT and the answer to an
    // ADDRESS_REQUEST arrive as the upstream sent them, and the client's
    // capsules as it sent them (17, 11); IP packets both ways identical.
    let (code, r, out) = run(
        &edge,
        "masque_client.py",
        &[
            "ip",
            "--authority",
            "masque.test",
            "--request-address",
            "--packets",
            "50",
            "--grease-capsule",
        ],
    );
    assert_eq!(code, 0, "{out}\nedge:\n{}", edge.log());
    assert_eq!(
        (r["packets_sent"].as_u64(), r["packets_identical"].as_u64()),
        (Some(50), Some(50)),
        "{r}"
    );
    let log = masque.log();
    let got = shas(&r, "capsules");
    let sent = shas(&r, "capsules_sent");
    assert!(got.len() >= 3 && sent.len() >= 2, "{r}");
    for sha in got.iter().filter(|s| !sent.contains(s)) {
        assert!(
            log.lines()
                .any(|l| l.contains("capsule out") && l.contains(sha.as_str())),
            "upstream capsule {sha} not byte-identical:\n{log}"
        );
    }
    for sha in &sent {
        assert!(
            log.contains(sha.as_str()),
            "client capsule {sha} did not reach the upstream unchanged:\n{log}"
        );
    }
}

#[test]
fn webtransport_streams_datagrams_and_close_through_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let masque = QuicPeer::start("masque_server.py", dir.path(), &[]);
    let wt = QuicPeer::start("wt_server.py", dir.path(), &[]);
    let capsuling = QuicPeer::start(
        "masque_server.py",
        &dir.path().join("capsuling"),
        &["--reply-datagrams"],
    );
    let no_ext = QuicPeer::start(
        "h3_origin.py",
        &dir.path().join("no-ext"),
        &["--no-connect-protocol"],
    );
    let edge = edge(&masque, &wt, &capsuling, &no_ext);
    let session = |host: &str, path: &str, extra: &[&str]| {
        let mut a = vec!["--authority", host, "--path", path];
        a.extend_from_slice(extra);
        run(&edge, "wt_client.py", &a)
    };
    let ok = |what: &str, (code, r, out): &(i32, Value, String)| {
        assert_eq!(
            *code,
            0,
            "{what}: {out}\nedge:\n{}\nupstream:\n{}",
            edge.log(),
            wt.log()
        );
        r.clone()
    };

    // Bidirectional, unidirectional and datagram echo (2); the edge's
    // SETTINGS offer what the drafts need (1).
    let r = ok(
        "echo",
        &session(
            "wt.test",
            "/echo",
            &[
                "--bidi",
                "4",
                "--uni",
                "4",
                "--datagrams",
                "50",
                "--bytes",
                "100000",
            ],
        ),
    );
    assert_eq!(r["bidi"]["ok"], true);
    assert_eq!(r["uni"]["ok"], true);
    assert!(r["datagrams"]["received"].as_u64().unwrap() > 0, "{r}");
    for (id, v) in [
        ("0x8", 1),
        ("0x33", 1),
        ("0x2b603742", 1),
        ("0x2c7cf000", 1),
    ] {
        assert_eq!(r["settings"][id], v, "setting {id}: {}", r["settings"]);
    }
    // The session's bytes (counters, access log) include its streams'
    // (4 bidi echoed, 4 uni echoed on server streams: 800,000 B each way)
    // and its datagrams', not only its request stream's.
    let t0 = std::time::Instant::now();
    while edge.total("bytes_upstream_to_downstream") < 800_000 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            edge.stats()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        edge.total("bytes_downstream_to_upstream") > 800_000,
        "{:?}",
        edge.stats()
    );

    // Streams the server opens reach the client, on the client's session
    // id (5).
    let r = ok(
        "server streams",
        &session(
            "wt.test",
            "/server-streams?n=2",
            &["--expect-server-streams", "2"],
        ),
    );
    let contents: Vec<&str> = ["bidi", "uni"]
        .iter()
        .flat_map(|k| {
            r["server_streams"][k]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|s| s["content"].as_str())
        })
        .collect();
    assert_eq!(contents.len(), 4, "{r}");

    // WT_CLOSE_SESSION both ways, byte-identical, then FIN (7).
    let r = ok(
        "server close",
        &session(
            "wt.test",
            "/close?code=7&reason=bye",
            &["--bidi", "1", "--expect-close"],
        ),
    );
    assert_eq!(
        (
            r["close_session"]["code"].as_u64(),
            r["close_session"]["reason"].as_str()
        ),
        (Some(7), Some("bye")),
        "{r}"
    );
    let sha = r["close_session"]["sha"].as_str().unwrap().to_owned();
    assert!(
        wt.log().contains(&sha),
        "the close capsule the client got is the one the server sent"
    );
    assert_eq!(r["connect_stream_fin"], true);
    let r = ok(
        "client close",
        &session("wt.test", "/echo", &["--bidi", "1", "--close", "42:done"]),
    );
    let sha = r["close_sent"]["sha"].as_str().unwrap();
    assert!(
        wt.log()
            .lines()
            .any(|l| l.contains("close_session code=42 reason=646f6e65") && l.contains(sha)),
        "{}",
        wt.log()
    );

    // Reset and STOP_SENDING codes cross unchanged (6).
    let r = ok(
        "reset",
        &session("wt.test", "/echo", &["--reset-bidi", "9"]),
    );
    assert_eq!(r["reset_seen"]["reset_stream"], 9, "{r}");
    let r = ok("stop", &session("wt.test", "/echo", &["--stop-bidi", "11"]));
    assert_eq!(
        (
            r["reset_seen"]["stop_sending"].as_u64(),
            r["reset_seen"]["reset_stream"].as_u64()
        ),
        (Some(11), Some(11)),
        "{r}"
    );

    // The session's end resets its streams still open with WT_SESSION_GONE (9).
    let r = ok(
        "held",
        &session("wt.test", "/echo", &["--hold-bidi", "2", "--close", "1:x"]),
    );
    let held = r["held"].as_array().unwrap();
    assert_eq!(held.len(), 2, "{r}");
    for h in held {
        assert_eq!(h["reset_stream"], 0x170d_7b68u64, "{r}");
    }

    // Unknown and GREASE capsules cross unchanged (11); a WT_CLOSE_SESSION
    // whose reason is over 1,024 bytes is malformed: the edge resets the
    // request stream with H3_MESSAGE_ERROR (8).
    let grease = "2a0b3c4d5e";
    let r = ok(
        "grease",
        &session(
            "wt.test",
            "/echo",
            &[
                "--send-capsule",
                &format!("{:#x}:{grease}", 0x29u64 * 77 + 0x17),
                "--bidi",
                "1",
            ],
        ),
    );
    assert_eq!(r["status"], 200);
    let want = format!("capsule in type={:#x} len=5", 0x29u64 * 77 + 0x17);
    assert!(
        wt.log().contains(&want),
        "{want} not in the upstream log:\n{}",
        wt.log()
    );
    let long = format!("0x2843:00000001{}", "61".repeat(1100));
    let (_, r, out) = session(
        "wt.test",
        "/echo",
        &["--send-capsule", &long, "--bidi", "1"],
    );
    assert_eq!(
        r["connect_stream_reset"],
        0x10e,
        "{out}\nedge:\n{}",
        edge.log()
    );

    // A token of no draft the edge knows is an unknown protocol (18); the
    // draft-15 token is accepted (3, `webtransport_drafts_are_rewritten_per_hop`).
    let r = ok(
        "webtransport-h9",
        &session(
            "wt.test",
            "/echo",
            &[
                "--protocol",
                "webtransport-h9",
                "--expect-status",
                "501",
                "--no-settings-check",
            ],
        ),
    );
    assert_eq!(r["status"], 501);

    // The upstream's GOAWAY reaches the client as WT_DRAIN_SESSION on its
    // session's request stream (10); the session still echoes.
    let r = ok("drain", &session("wt.test", "/goaway", &["--bidi", "1"]));
    let types: Vec<&Value> = r["capsules_in"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["type"])
        .collect();
    assert!(
        types.iter().any(|t| **t == 0x78ae || **t == "0x78ae"),
        "{r}\nupstream:\n{}",
        wt.log()
    );

    // Two sessions never share an upstream connection (WebTransport draft-02
    // has no flow control per session) (20): every session the upstream
    // saw came on a connection of its own.
    let log = wt.log();
    let conns: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("session c") && l.contains(" accepted "))
        .filter_map(|l| l.split('#').next())
        .collect();
    let distinct: std::collections::HashSet<&&str> = conns.iter().collect();
    assert!(
        conns.len() >= 8 && distinct.len() == conns.len(),
        "sessions per upstream connection: {conns:?}"
    );

    // Refusals: the upstream's 404 passes back; token auth 401 / 200 by
    // header / 200 by query; a non-h3 upstream 501; an unknown :protocol
    // 501 (18).
    let r = ok(
        "404",
        &session("wt.test", "/reject", &["--expect-status", "404"]),
    );
    assert_eq!(r["status"], 404);
    let r = ok(
        "401",
        &session("wt-auth.test", "/echo", &["--expect-status", "401"]),
    );
    assert_eq!(r["status"], 401);
    ok(
        "token header",
        &session("wt-auth.test", "/echo", &["--token", TOKEN, "--bidi", "1"]),
    );
    ok(
        "token query",
        &session(
            "wt-auth.test",
            "/echo",
            &[
                "--token",
                TOKEN,
                "--token-query",
                "rstream.token",
                "--bidi",
                "1",
            ],
        ),
    );
    assert!(
        !wt.log().contains(TOKEN),
        "the token never reaches the upstream"
    );
    let r = ok(
        "501",
        &session("h1.test", "/echo", &["--expect-status", "501"]),
    );
    assert_eq!(r["status"], 501);
    let r = ok(
        "unknown protocol",
        &session(
            "wt.test",
            "/echo",
            &[
                "--protocol",
                "not-a-protocol",
                "--expect-status",
                "501",
                "--no-settings-check",
            ],
        ),
    );
    assert_eq!(r["status"], 501);
    assert!(edge.total("webtransport_streams_total") > 0);
}

/// Each hop speaks its own WebTransport draft (3, 4): a draft-02 client
/// (aioquic) reaches a draft-15 server, and a draft-15 client a draft-02
/// server, with only `:protocol` and the draft-02 headers rewritten; the
/// edge advertises SETTINGS_WT_ENABLED (0x2c7cf000) next to draft-02's
/// setting, and accepts `webtransport-h3`.
#[test]
fn webtransport_drafts_are_rewritten_per_hop() {
    let dir = tempfile::tempdir().unwrap();
    let old = QuicPeer::start("wt_server.py", &dir.path().join("draft02"), &[]);
    let new = QuicPeer::start(
        "wt_server.py",
        &dir.path().join("draft15"),
        &["--draft", "15"],
    );
    let tunnel = |name: &str, peer: &QuicPeer| {
        format!(
            "[[tunnel]]\nname = \"{name}\"\nhostnames = [\"{name}.test\"]\nupstream = \"{}\"\nhttp_version = \"h3\"\n\
             upstream_tls = {{ ca = \"{}\", server_name = \"origin.internal\" }}\n",
            peer.addr,
            peer.ca.display()
        )
    };
    let edge = Edge::start(&format!(
        "[edge]\ncores = 1\n[[listener]]\naddr = \"@TLS_LISTEN@\"\ntls = {{ cert = \"@CERT@\", key = \"@KEY@\" }}\nquic = true\n{}{}",
        tunnel("wt02", &old),
        tunnel("wt15", &new),
    ));
    let session = |host: &str, draft: &str| {
        let (code, r, out) = run(
            &edge,
            "wt_client.py",
            &[
                "--authority",
                host,
                "--path",
                "/echo",
                "--draft",
                draft,
                "--bidi",
                "2",
                "--uni",
                "2",
                "--datagrams",
                "20",
                "--bytes",
                "50000",
            ],
        );
        assert_eq!(
            code,
            0,
            "{host} with draft {draft}: {out}\nedge:\n{}\ndraft-02 upstream:\n{}\ndraft-15 upstream:\n{}",
            edge.log(),
            old.log(),
            new.log()
        );
        assert_eq!(
            (r["bidi"]["ok"].as_bool(), r["uni"]["ok"].as_bool()),
            (Some(true), Some(true)),
            "{r}"
        );
        assert!(r["datagrams"]["received"].as_u64().unwrap() > 0, "{r}");
        r
    };
    // What an upstream saw: the `saw=` JSON of its last session line
    // (written when the session ends, soon after the client is done).
    let sessions_seen = std::cell::Cell::new((0, 0));
    let saw = |peer: &QuicPeer| -> Value {
        let count = |log: &str| log.lines().filter(|l| l.contains(" saw=")).count();
        let is_new = std::ptr::eq(peer, &new);
        let (old_n, new_n) = sessions_seen.get();
        let want = if is_new { new_n } else { old_n } + 1;
        let t0 = std::time::Instant::now();
        while count(&peer.log()) < want {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(10),
                "no session line:\n{}",
                peer.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        sessions_seen.set(if is_new { (old_n, want) } else { (want, new_n) });
        let log = peer.log();
        let line = log.lines().rev().find(|l| l.contains(" saw=")).unwrap();
        serde_json::from_str(line.split(" saw=").nth(1).unwrap()).unwrap()
    };

    // draft-02 client → draft-15 upstream (4): `webtransport-h3` and no
    // draft-02 header upstream (the server answers 400 to one); the client
    // still gets draft-02's answer header.
    let r = session("wt15.test", "2");
    let up = saw(&new);
    assert_eq!(up[":protocol"], "webtransport-h3", "{up}");
    assert!(up.get("sec-webtransport-http3-draft02").is_none(), "{up}");
    assert_eq!(
        r["headers"]["sec-webtransport-http3-draft"], "draft02",
        "{r}"
    );
    assert_eq!(r["settings"]["0x2b603742"], 1, "{}", r["settings"]);

    // draft-15 client → draft-02 upstream (3): the edge advertised
    // 0x2c7cf000 and took `webtransport-h3`; upstream it is `webtransport`
    // with the draft-02 header, and the client gets no draft header back.
    let r = session("wt02.test", "15");
    assert_eq!(r["settings"]["0x2c7cf000"], 1, "{}", r["settings"]);
    let up = saw(&old);
    assert_eq!(up[":protocol"], "webtransport", "{up}");
    assert_eq!(up["sec-webtransport-http3-draft02"], "1", "{up}");
    assert!(
        r["headers"].get("sec-webtransport-http3-draft").is_none(),
        "{r}"
    );

    // draft-15 on both hops.
    let r = session("wt15.test", "15");
    assert!(
        r["headers"].get("sec-webtransport-http3-draft").is_none(),
        "{r}"
    );
    assert_eq!(saw(&new)[":protocol"], "webtransport-h3");
}
