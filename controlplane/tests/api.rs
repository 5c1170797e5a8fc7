//! The API from a third-party client (Python grpcio stubs generated from the
//! repository's .proto): tunnel + token created live, a WebSocket client
//! through the edge with and without the token, bad input → documented
//! statuses, store across restarts, and where secrets never go.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use support::*;

fn py(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(python())
        .args(args)
        .output()
        .expect("python runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn grpc_client(plane: &Plane, args: &[&str]) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/grpc_client.py");
    let addr = plane.grpc.to_string();
    let token = plane.admin_token();
    let mut all = vec![script, addr.as_str(), token.as_str()];
    all.extend_from_slice(args);
    let (code, out, err) = py(&all);
    assert_eq!(code, 0, "grpc_client.py {args:?}: {out}\n{err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The Python `websockets` client toward `ws://HOST:port/chat`.
fn ws_client(plane: &Plane, host: &str, secret: Option<&str>) -> (i32, String) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dataplane/tests/py/ws_client.py"
    );
    let uri = format!("ws://{host}:{}/chat", plane.edge.port());
    let auth = secret.map(|s| format!("Authorization: Bearer {s}"));
    let mut args = vec![script, uri.as_str(), "--count", "5"];
    if let Some(a) = &auth {
        args.extend_from_slice(&["--header", a.as_str()]);
    }
    let (code, out, err) = py(&args);
    (code, format!("{out}{err}"))
}

#[test]
fn python_grpc_client_drives_the_edge_live() {
    let origin = ws_echo();
    let plane = Plane::new("", "");
    let mut up = plane.up();

    // Shared memory is private to the two processes.
    let mode = std::fs::metadata(&plane.shm).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "shm mode");

    let host = "localhost";
    let made = grpc_client(&plane, &["setup", host, &origin.to_string()]);
    let secret = made["secret"].as_str().unwrap().to_owned();
    let token_id = made["token_id"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 32, "{made}");

    // No restart: the tables reach every core through the rings. Each
    // client connection may land on either core; a few tries cover both.
    for _ in 0..4 {
        let (code, out) = ws_client(&plane, host, Some(&secret));
        assert_eq!(code, 0, "with the token: {out}");
        assert!(out.contains("ok 5"), "{out}");
        let (code, out) = ws_client(&plane, host, None);
        assert_eq!(code, 2, "without the token: {out}");
        assert!(out.contains("status 401"), "{out}");
        let (code, out) = ws_client(&plane, host, Some("sy_not-a-real-token"));
        assert!(out.contains("status 401"), "wrong token {code}: {out}");
    }

    // Bad input gets the documented statuses, naming the field.
    let e = grpc_client(&plane, &["errors", host]);
    let expect = [
        ("bad_upstream", "INVALID_ARGUMENT tunnel.upstream"),
        ("bad_name", "INVALID_ARGUMENT tunnel.name"),
        ("bad_cidr", "INVALID_ARGUMENT tunnel.trusted_cidrs"),
        ("bad_http_version", "INVALID_ARGUMENT tunnel.http_version"),
        ("tls_on_h1_upstream", "INVALID_ARGUMENT tunnel.upstream_tls"),
        (
            "insecure_with_server_name",
            "INVALID_ARGUMENT tunnel.upstream_tls",
        ),
        ("h3_tunnel_ok", "OK"),
        (
            "h3_tunnel_read_back",
            "HTTP_VERSION_H3 origin.internal ca=True",
        ),
        ("duplicate_name", "ALREADY_EXISTS"),
        ("duplicate_hostname", "ALREADY_EXISTS tunnel.hostnames"),
        ("unknown_id", "NOT_FOUND"),
        ("unknown_delete", "NOT_FOUND"),
        ("unknown_revoke", "NOT_FOUND"),
        ("token_unknown_scope", "INVALID_ARGUMENT tunnels"),
        ("missing_admin_token", "UNAUTHENTICATED"),
        ("wrong_admin_token", "UNAUTHENTICATED"),
        ("list_ok", "OK"),
    ];
    for (case, want) in expect {
        let got = e[case].as_str().unwrap_or("");
        assert!(got.starts_with(want), "{case}: got `{got}`, want `{want}`");
    }

    // Revocation is live too.
    grpc_client(&plane, &["revoke", &token_id]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        plane
            .client()
            .await
            .converged(Some(0), Duration::from_secs(10))
            .await;
    });
    let (code, out) = ws_client(&plane, host, Some(&secret));
    assert_eq!(code, 2, "revoked token: {out}");

    // The store survives a restart of both processes.
    up.stop();
    let mut up = plane.up();
    let listed = Command::new(env!("CARGO_BIN_EXE_controlplane"))
        .args(["--json", "--config"])
        .arg(&plane.config)
        .args(["tunnel", "list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("\"name\":\"ws\""),
        "after restart: {listed}"
    );
    let (code, out) = ws_client(&plane, host, None);
    assert_eq!(
        code, 2,
        "tunnel routed after restart, still token-protected: {out}"
    );
    up.stop();

    // The secret never reached the store, the shared memory or a log.
    assert!(!file_contains(&plane.store, &secret), "secret in the store");
    assert!(
        !file_contains(&plane.shm, &secret),
        "secret in shared memory"
    );
    let logs = plane.logs();
    assert!(logs.contains("tunnel created"), "logs are captured");
    assert!(!logs.contains(&secret), "secret in a log");
}

#[test]
fn cli_creates_tunnel_and_token() {
    let origin = tcp_echo();
    let plane = Plane::new("", "");
    let _up = plane.up();
    let cli = |args: &[&str]| plane.cli(args);
    let upstream = origin.to_string();
    let made = cli(&[
        "tunnel",
        "create",
        "raw",
        "--hostname",
        "raw.test",
        "--upstream",
        &upstream,
        "--mode",
        "httpupgrade",
        "--path",
        "/t",
        "--token-auth",
    ]);
    assert!(made.contains("raw.test"), "{made}");
    let secret = cli(&["token", "create", "--tunnel", "raw"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        plane
            .client()
            .await
            .converged(Some(1), Duration::from_secs(10))
            .await;
    });
    let mut relay = open_relay(plane.edge, "raw.test", Some(&secret)).expect("101 with the token");
    assert!(echo(&mut relay, b"hello through switchyard\n"));
    assert!(open_relay(plane.edge, "raw.test", None).is_none());
    let stats = cli(&["--json", "stats"]);
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(v["cores"].as_array().unwrap().len(), 2, "{stats}");
    assert!(cli(&["token", "list"]).contains("tunnels=raw"));
    assert!(cli(&["tunnel", "get", "raw"]).contains("raw.test"));
    cli(&["tunnel", "delete", "raw"]);
    assert_eq!(cli(&["tunnel", "list"]), "");
}

/// Per-tunnel counters reach the control plane through the shared-memory
/// region: after relays through two tunnels, `stats --tunnel NAME --json`
/// gives each tunnel's relays and bytes (what its clients sent), and the
/// per-tunnel sums equal the per-core totals.
#[test]
fn per_tunnel_counters_through_the_control_plane() {
    let origin = tcp_echo();
    let plane = Plane::new("", "");
    let _up = plane.up();
    let cli = |args: &[&str]| plane.cli(args);
    let upstream = origin.to_string();
    for (name, host) in [("one", "one.test"), ("two", "two.test")] {
        cli(&[
            "tunnel",
            "create",
            name,
            "--hostname",
            host,
            "--upstream",
            &upstream,
            "--mode",
            "httpupgrade",
            "--path",
            "/t",
        ]);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        plane
            .client()
            .await
            .converged(Some(0), Duration::from_secs(10))
            .await
    });
    // `one`: 3 relays of 1000 bytes; `two`: 1 relay of 5000 bytes; each
    // closed, so its bytes are counted.
    for (host, n, size) in [("one.test", 3, 1000), ("two.test", 1, 5000)] {
        for i in 0..n {
            let mut relay = open_relay(plane.edge, host, None).expect("101");
            assert!(echo(&mut relay, &vec![b'a' + i as u8; size]));
            relay.shutdown(std::net::Shutdown::Write).unwrap();
            let mut rest = Vec::new();
            let _ = std::io::Read::read_to_end(&mut relay, &mut rest);
        }
    }
    let tunnel = |name: &str| -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&cli(&["--json", "stats", "--tunnel", name])).unwrap();
        assert_eq!(v["tunnels"].as_array().unwrap().len(), 1, "{v}");
        v["tunnels"][0].clone()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tunnel("two")["bytes_downstream_to_upstream"] != 5000
        || tunnel("one")["bytes_downstream_to_upstream"] != 3000
    {
        assert!(
            std::time::Instant::now() < deadline,
            "one: {}\ntwo: {}",
            tunnel("one"),
            tunnel("two")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (one, two) = (tunnel("one"), tunnel("two"));
    assert_eq!(
        (
            one["relays_total"].as_u64(),
            one["bytes_upstream_to_downstream"].as_u64(),
            one["relays_active"].as_u64()
        ),
        (Some(3), Some(3000), Some(0)),
        "{one}"
    );
    assert_eq!(
        (
            two["relays_total"].as_u64(),
            two["bytes_upstream_to_downstream"].as_u64()
        ),
        (Some(1), Some(5000)),
        "{two}"
    );
    let all: serde_json::Value = serde_json::from_str(&cli(&["--json", "stats"])).unwrap();
    for key in [
        "bytes_downstream_to_upstream",
        "bytes_upstream_to_downstream",
        "relays_total",
    ] {
        let per_core: u64 = all["cores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c[key].as_u64().unwrap())
            .sum();
        let per_tunnel: u64 = all["tunnels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t[key].as_u64().unwrap())
            .sum();
        assert_eq!(per_tunnel, per_core, "{key}: {all}");
    }
    let text = cli(&["stats", "--tunnel", "two"]);
    assert!(
        text.contains(
            "tunnel two: on 2 cores, relays 1 (0 active), bytes up=5000 down=5000, rejected 0"
        ),
        "{text}"
    );

    // The rings' state on the data plane's /metrics: every core applied
    // the two creations (after its first snapshot) and lags by nothing.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = std::net::TcpStream::connect(plane.admin).unwrap();
        std::io::Write::write_all(&mut c, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut metrics = String::new();
        let _ = std::io::Read::read_to_string(&mut c, &mut metrics);
        let ok = (0..2).all(|core| {
            sample(
                &metrics,
                "switchyard_ring_applied_seq",
                &format!("core=\"{core}\""),
            ) >= Some(2)
                && sample(&metrics, "switchyard_ring_lag", &format!("core=\"{core}\"")) == Some(0)
                && sample(
                    &metrics,
                    "switchyard_ring_snapshots_total",
                    &format!("core=\"{core}\""),
                ) >= Some(1)
                && sample(
                    &metrics,
                    "switchyard_ring_pending_bytes",
                    &format!("core=\"{core}\""),
                ) == Some(0)
        });
        if ok {
            // The same per-tunnel totals as the CLI's, summed over the cores.
            for (name, t) in [("one", &one), ("two", &two)] {
                for key in [
                    "relays_total",
                    "bytes_downstream_to_upstream",
                    "bytes_upstream_to_downstream",
                ] {
                    let metric = format!(
                        "switchyard_tunnel_{key}{}",
                        if key.ends_with("_total") {
                            ""
                        } else {
                            "_total"
                        }
                    );
                    let summed: u64 = (0..2)
                        .filter_map(|core| {
                            sample(
                                &metrics,
                                &metric,
                                &format!("core=\"{core}\",tunnel=\"{name}\""),
                            )
                        })
                        .sum();
                    assert_eq!(
                        Some(summed),
                        t[key].as_u64(),
                        "{name} {key}: /metrics vs the CLI\n{metrics}"
                    );
                }
            }
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ring state on /metrics:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
