//! A fleet on etcd, over real processes: a 3-member etcd cluster on
//! loopback (Debian's `etcd-server`) and `controlplane up` nodes (control
//! plane + data plane, 2 cores each) that share its prefix.

mod support;

use std::time::{Duration, Instant};

use controlplane::pb;
use support::etcd::Cluster;
use support::*;

const TOKEN: &str = "fleet-admin-token-for-tests-0123456789";

/// `n` nodes on the cluster's prefix `prefix`, each running `up`.
fn nodes(etcd: &Cluster, prefix: &str, names: &[&str]) -> Vec<(Plane, Proc)> {
    names
        .iter()
        .map(|n| {
            let p = Plane::fleet_node(&etcd.endpoints(), prefix, n, TOKEN);
            let up = p.up();
            (p, up)
        })
        .collect()
}

/// Waits until the node's tables are at `rev` or later and every core of
/// it is attached and has applied them.
async fn current(plane: &Plane, rev: u64, within: Duration) -> pb::StatsSnapshot {
    let mut c = plane.client().await;
    let t0 = Instant::now();
    loop {
        let s = c
            .stats
            .get_stats(pb::GetStatsRequest {})
            .await
            .unwrap()
            .into_inner();
        if s.store_version >= rev
            && !s.cores.is_empty()
            && s.cores
                .iter()
                .all(|c| c.attached && c.applied_seq == s.store_version)
        {
            return s;
        }
        assert!(
            t0.elapsed() < within,
            "node not current at {rev}: {s:?}\n{}",
            plane.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Creates `t` through `plane`, retrying while etcd recovers; then the
/// revision of that node's tables and how long the write took to succeed.
async fn create_retrying(plane: &Plane, t: pb::Tunnel, within: Duration) -> (u64, Duration) {
    let mut c = plane.client().await;
    let t0 = Instant::now();
    loop {
        let req = pb::CreateTunnelRequest {
            tunnel: Some(t.clone()),
        };
        match c.tunnels.create_tunnel(req).await {
            Ok(_) => break,
            Err(e) => {
                assert!(t0.elapsed() < within, "writes resume: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let took = t0.elapsed();
    (revision(plane).await, took)
}

/// The revision of a node's tables (as its list answers carry it).
async fn revision(plane: &Plane) -> u64 {
    let mut c = plane.client().await;
    c.tunnels
        .list_tunnels(pb::ListTunnelsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .revision
}

/// Creates `t` through the first node and waits until every node has it on
/// every core: the revision.
fn create_everywhere(rt: &tokio::runtime::Runtime, fleet: &[(Plane, Proc)], t: pb::Tunnel) -> u64 {
    let rev = rt
        .block_on(create_retrying(&fleet[0].0, t, Duration::from_secs(10)))
        .0;
    for (node, _) in fleet {
        rt.block_on(current(node, rev, Duration::from_secs(20)));
    }
    rev
}

/// A relay through `plane` to `host` that echoes, retried for up to 5 s.
fn relays(plane: &Plane, host: &str, token: Option<&str>) -> bool {
    // Bounded in time rather than in tries: under the whole suite's load a
    // fleet that just lost its etcd leader can take longer than ten quick
    // tries (seen once in a whole-suite run with 10 x 50 ms).
    let t0 = Instant::now();
    loop {
        if open_relay(plane.edge, host, token).is_some_and(|mut s| echo(&mut s, b"ping\n")) {
            return true;
        }
        if t0.elapsed() > Duration::from_secs(5) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn token_tunnel(name: &str, host: &str, origin: std::net::SocketAddr) -> pb::Tunnel {
    pb::Tunnel {
        token_auth: true,
        ..httpupgrade(name, host, origin)
    }
}

#[test]
fn changes_through_one_node_route_on_every_core_of_every_node() {
    let etcd = Cluster::start(3);
    let origin = tcp_echo();
    let fleet = nodes(&etcd, "sy", &["a", "b", "c"]);
    let (a, b, c) = (&fleet[0].0, &fleet[1].0, &fleet[2].0);
    let rt = rt();
    let (secret, token_id, rev) = rt.block_on(async {
        let mut ca = a.client().await;
        let t = ca
            .create_tunnel(token_tunnel("raw", "raw.test", origin))
            .await;
        assert!(t.id.starts_with("tun_"), "{t:?}");
        let made = ca
            .tokens
            .create_token(pb::CreateTokenRequest {
                name: "t".into(),
                tunnels: vec!["raw".into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let rev = ca
            .tokens
            .list_tokens(pb::ListTokensRequest {})
            .await
            .unwrap()
            .into_inner()
            .revision;
        (made.secret, made.token.unwrap().id, rev)
    });
    for node in [a, b, c] {
        let s = rt.block_on(current(node, rev, Duration::from_secs(10)));
        assert!(
            s.cores.iter().all(|c| c.tunnels == 1 && c.tokens == 1),
            "{s:?}"
        );
        assert!(
            relays(node, "raw.test", Some(&secret)),
            "routes with the token"
        );
        assert!(
            open_relay(node.edge, "raw.test", None).is_none(),
            "401 without"
        );
    }

    // Revoked through C: A and B refuse it.
    let rev = rt.block_on(async {
        let mut cc = c.client().await;
        cc.tokens
            .revoke_token(pb::RevokeTokenRequest { id: token_id })
            .await
            .unwrap();
        cc.tokens
            .list_tokens(pb::ListTokensRequest {})
            .await
            .unwrap()
            .into_inner()
            .revision
    });
    for node in [a, b] {
        let s = rt.block_on(current(node, rev, Duration::from_secs(10)));
        assert!(s.cores.iter().all(|c| c.tokens == 0), "{s:?}");
        assert!(
            open_relay(node.edge, "raw.test", Some(&secret)).is_none(),
            "revoked token refused"
        );
    }

    // The fleet view: three nodes, each current, none lagging.
    // (Registration is asynchronous: wait for the three keys.)
    let t0 = Instant::now();
    let (out, v) = loop {
        let out = a.cli(&["stats", "--fleet", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        if v["nodes"].as_array().is_some_and(|n| n.len() == 3) {
            break (out, v);
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{out}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let nodes = v["nodes"].as_array().unwrap();
    for n in nodes {
        assert_eq!(n["reachable"], true, "{out}");
        assert_eq!(n["cores_current"], 2, "{out}");
        assert_eq!(n["etcd_connected"], true, "{out}");
    }
    println!("{}", a.cli(&["stats", "--fleet"]));
}

#[test]
fn one_name_created_on_two_nodes_at_once_succeeds_once_and_no_secret_reaches_etcd() {
    let etcd = Cluster::start(3);
    let origin = tcp_echo();
    let fleet = nodes(&etcd, "race", &["a", "b"]);
    let rt = rt();
    rt.block_on(async {
        let mut ca = fleet[0].0.client().await;
        let mut cb = fleet[1].0.client().await;
        for i in 0..20 {
            let name = format!("dup{i}");
            let (ra, rb) = tokio::join!(
                ca.tunnels.create_tunnel(pb::CreateTunnelRequest {
                    tunnel: Some(httpupgrade(&name, &format!("a{i}.test"), origin)),
                }),
                cb.tunnels.create_tunnel(pb::CreateTunnelRequest {
                    tunnel: Some(httpupgrade(&name, &format!("b{i}.test"), origin)),
                }),
            );
            let oks = [ra.is_ok(), rb.is_ok()].iter().filter(|x| **x).count();
            assert_eq!(oks, 1, "{name}: {ra:?} {rb:?}");
            let err = ra.err().or(rb.err()).unwrap();
            assert_eq!(err.code(), tonic::Code::AlreadyExists, "{err:?}");
        }
        // The same hostname claimed by two names at once: one wins too.
        let (ra, rb) = tokio::join!(
            ca.tunnels.create_tunnel(pb::CreateTunnelRequest {
                tunnel: Some(httpupgrade("hx", "shared.test", origin)),
            }),
            cb.tunnels.create_tunnel(pb::CreateTunnelRequest {
                tunnel: Some(httpupgrade("hy", "shared.test", origin)),
            }),
        );
        assert_eq!(ra.is_ok() as u8 + rb.is_ok() as u8, 1, "{ra:?} {rb:?}");

        let mut secrets = Vec::new();
        for i in 0..10 {
            let c = if i % 2 == 0 { &mut ca } else { &mut cb };
            let made = c
                .tokens
                .create_token(pb::CreateTokenRequest {
                    name: format!("t{i}"),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            secrets.push(made.secret);
        }
        let all = etcd.dump("/race/").await;
        let tokens = all
            .iter()
            .filter(|(k, _)| k.starts_with("/race/tokens/"))
            .count();
        assert_eq!(tokens, 10, "{all:?}");
        for (k, v) in &all {
            for s in &secrets {
                assert!(
                    !k.contains(s.as_str()) && !v.contains(s.as_str()),
                    "secret in etcd at {k}"
                );
            }
        }
    });
}

#[test]
fn etcd_down_nodes_serve_their_last_tables_and_a_restarted_node_its_cache() {
    let mut etcd = Cluster::start(3);
    let origin = tcp_echo();
    let mut fleet = nodes(&etcd, "down", &["a", "b"]);
    let rt = rt();
    let rev = create_everywhere(&rt, &fleet, httpupgrade("raw", "raw.test", origin));
    let mut held = open_relay(fleet[1].0.edge, "raw.test", None).expect("relay opens");

    etcd.kill_all();
    std::thread::sleep(Duration::from_millis(300));
    for (node, _) in &fleet {
        assert!(relays(node, "raw.test", None), "new relays with etcd down");
    }
    assert!(echo(&mut held, b"still here\n"), "established relay");
    rt.block_on(async {
        let mut ca = fleet[0].0.client().await;
        let t0 = Instant::now();
        let err = ca
            .tunnels
            .create_tunnel(pb::CreateTunnelRequest {
                tunnel: Some(httpupgrade("new", "new.test", origin)),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "answered in {:?}",
            t0.elapsed()
        );
        let list = ca
            .tunnels
            .list_tunnels(pb::ListTunnelsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (list.tunnels.len(), list.revision),
            (1, rev),
            "reads from the last state"
        );
    });

    // Node B restarted while etcd is down: it serves its cached tables.
    fleet[1].1.stop();
    let b_up = fleet[1].0.up();
    fleet[1].1 = b_up;
    assert!(
        relays(&fleet[1].0, "raw.test", None),
        "restarted node serves its cache"
    );
    assert!(
        fleet[1]
            .0
            .logs()
            .contains("etcd unreachable at start: serving the cached tables"),
        "{}",
        fleet[1].0.logs()
    );

    // etcd back: writes work again and both nodes converge on one revision.
    etcd.restart_all();
    let (rev, _) = rt.block_on(create_retrying(
        &fleet[0].0,
        httpupgrade("after", "after.test", origin),
        Duration::from_secs(20),
    ));
    for (node, _) in &fleet {
        rt.block_on(current(node, rev, Duration::from_secs(20)));
    }
    // Converged: every node has followed etcd to its current revision, every
    // core of every node is current, and the nodes hold the same tables. A
    // member still coming back may refuse the listing for a moment: that is
    // "not converged yet" too.
    let t0 = Instant::now();
    loop {
        let out = match fleet[0].0.try_cli(&["stats", "--fleet", "--json"]) {
            Ok(out) => out,
            Err(err) => {
                assert!(
                    t0.elapsed() < Duration::from_secs(20),
                    "stats --fleet: {err}"
                );
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let cluster = v["cluster_revision"].as_u64().unwrap();
        let nodes = v["nodes"].as_array().unwrap();
        if nodes.len() == 2
            && nodes.iter().all(|n| {
                n["followed_revision"].as_u64() == Some(cluster) && n["cores_current"] == 2
            })
        {
            println!("converged at revision {cluster}: {out}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "not converged: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let lists: Vec<Vec<String>> = rt.block_on(async {
        let mut out = Vec::new();
        for (node, _) in &fleet {
            let mut c = node.client().await;
            let l = c
                .tunnels
                .list_tunnels(pb::ListTunnelsRequest::default())
                .await
                .unwrap()
                .into_inner();
            out.push(
                l.tunnels
                    .iter()
                    .map(|t| format!("{}:{}", t.name, t.id))
                    .collect(),
            );
        }
        out
    });
    assert_eq!(lists[0], lists[1]);
    for (node, _) in &fleet {
        assert!(relays(node, "after.test", None), "{}", node.logs());
    }
}

#[test]
fn leader_killed_under_relay_load_drops_no_relay_and_writes_resume() {
    let mut etcd = Cluster::start(3);
    let origin = tcp_echo();
    let fleet = nodes(&etcd, "lead", &["a", "b"]);
    let rt = rt();
    create_everywhere(&rt, &fleet, httpupgrade("raw", "raw.test", origin));
    let edges = [fleet[0].0.edge, fleet[1].0.edge];
    let load = RelayLoad::start(&edges, "raw.test", 16);
    let leader = etcd.wait_leader(Duration::from_secs(5));
    etcd.kill(leader);
    let (rev, took) = rt.block_on(create_retrying(
        &fleet[1].0,
        httpupgrade("after", "after.test", origin),
        Duration::from_secs(20),
    ));
    println!("write accepted {took:?} after the leader was killed");
    for (node, _) in &fleet {
        rt.block_on(current(node, rev, Duration::from_secs(20)));
        assert!(relays(node, "after.test", None), "{}", node.logs());
    }
    let before = load.rounds();
    std::thread::sleep(Duration::from_millis(300));
    assert!(load.rounds() > before, "relays keep moving");
    assert_eq!(load.dropped(), 0, "relays dropped");
}

#[test]
fn a_node_behind_a_compaction_reads_the_tables_again() {
    let etcd = Cluster::start(3);
    let origin = tcp_echo();
    let fleet = nodes(&etcd, "compact", &["a", "b"]);
    let rt = rt();
    // Node B's control plane is frozen while A makes changes and etcd
    // compacts them away: B cannot resume its watch where it stopped.
    // More changes than a frozen watcher can take in flight (gRPC's 64 KiB
    // stream window and etcd's per-stream send buffer): with only a few,
    // etcd may already have pushed them all into B's socket before the
    // compaction, and B then resumes without meeting it (seen once in CI).
    const CHANGES: usize = 600;
    let b_pid = fleet[1].1.pid();
    signal(b_pid, "STOP");
    let rev = rt.block_on(async {
        let mut ca = fleet[0].0.client().await;
        for i in 0..CHANGES {
            ca.create_tunnel(httpupgrade(&format!("t{i}"), &format!("t{i}.test"), origin))
                .await;
        }
        let rev = revision(&fleet[0].0).await;
        let mut c = etcd.connect(vec![], None).await.unwrap();
        c.compact(
            rev as i64,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .unwrap();
        rev
    });
    std::thread::sleep(Duration::from_secs(6));
    signal(b_pid, "CONT");
    let s = rt.block_on(current(&fleet[1].0, rev, Duration::from_secs(20)));
    assert!(s.cores.iter().all(|c| c.tunnels == CHANGES as u64), "{s:?}");
    assert!(relays(&fleet[1].0, "t4.test", None));
    let logs = fleet[1].0.logs();
    assert!(
        logs.contains("etcd compacted past this node's revision"),
        "{logs}"
    );
}

/// `[control.etcd]` lines for a node of `etcd` (its TLS files, a user).
fn etcd_section(etcd: &Cluster, user: Option<(&str, &std::path::Path)>) -> String {
    let mut s = String::from("[control.etcd]\n");
    if let Some(t) = etcd.tls() {
        s.push_str(&format!(
            "ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            t.ca.display(),
            t.client.0.display(),
            t.client.1.display()
        ));
    }
    if let Some((u, file)) = user {
        s.push_str(&format!(
            "user = \"{u}\"\npassword_file = \"{}\"\n",
            file.display()
        ));
    }
    s
}

#[test]
fn a_node_reaches_etcd_over_mutual_tls_with_a_user() {
    let etcd = Cluster::start_with(1, true);
    let rt = rt();
    // etcd with authentication on: a root user, then auth enabled.
    rt.block_on(async {
        let mut c = etcd.connect(vec![], None).await.unwrap();
        c.user_add("root", "root-pw", None).await.unwrap();
        c.user_grant_role("root", "root").await.unwrap();
        c.auth_enable().await.unwrap();
    });
    let origin = tcp_echo();
    let pw = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pw.path(), "root-pw\n").unwrap();
    let node = Plane::with_store(
        Some(format!("etcd://{}/sec", etcd.endpoints())),
        &format!(
            "node = \"s\"\n{}",
            etcd_section(&etcd, Some(("root", pw.path())))
        ),
        "",
    );
    let token = node.dir.path().join("var/admin.token");
    std::fs::create_dir_all(token.parent().unwrap()).unwrap();
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let _up = node.up();
    rt.block_on(async {
        let mut c = node.client().await;
        c.create_tunnel(httpupgrade("raw", "raw.test", origin))
            .await;
    });
    assert!(relays(&node, "raw.test", None), "{}", node.logs());
    // What the node wrote is there for the user, over TLS.
    let keys = rt.block_on(async {
        let mut c = etcd
            .connect(vec![], Some(("root", "root-pw")))
            .await
            .unwrap();
        let r = c
            .get(
                "/sec/tunnels/",
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .unwrap();
        r.kvs().len()
    });
    assert_eq!(keys, 1);

    // Without the user, etcd refuses: the node says why and writes answer
    // UNAVAILABLE.
    let anonymous = Plane::with_store(
        Some(format!("etcd://{}/sec", etcd.endpoints())),
        &format!("node = \"anon\"\n{}", etcd_section(&etcd, None)),
        "",
    );
    std::fs::create_dir_all(anonymous.dir.path().join("var")).unwrap();
    std::fs::write(
        anonymous.dir.path().join("var/admin.token"),
        format!("{TOKEN}\n"),
    )
    .unwrap();
    let _up2 = anonymous.up();
    rt.block_on(async {
        let mut c = anonymous.client().await;
        let err = c
            .tunnels
            .create_tunnel(pb::CreateTunnelRequest {
                tunnel: Some(httpupgrade("x", "x.test", origin)),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    });
    assert!(
        anonymous.logs().contains("etcd unreachable"),
        "{}",
        anonymous.logs()
    );
}

#[test]
fn a_restarted_node_resumes_its_watch_from_its_cache() {
    let etcd = Cluster::start(3);
    let origin = tcp_echo();
    let mut fleet = nodes(&etcd, "resume", &["a", "b"]);
    let rt = rt();
    create_everywhere(&rt, &fleet, httpupgrade("one", "one.test", origin));
    fleet[1].1.stop();
    let (rev, _) = rt.block_on(create_retrying(
        &fleet[0].0,
        httpupgrade("two", "two.test", origin),
        Duration::from_secs(10),
    ));
    fleet[1].1 = fleet[1].0.up();
    let s = rt.block_on(current(&fleet[1].0, rev, Duration::from_secs(20)));
    assert!(s.cores.iter().all(|c| c.tunnels == 2), "{s:?}");
    assert!(relays(&fleet[1].0, "two.test", None));
    // One full read (the first start); the restart resumed from its cache.
    let logs = fleet[1].0.logs();
    assert_eq!(
        logs.matches("fleet tables read from etcd").count(),
        1,
        "{logs}"
    );
}
