//! Independence of the two processes and ring recovery, over real processes:
//! control plane `kill -9` under relay load, data plane `kill -9` under
//! `controlplane up`, and a burst of token upserts that overflows a tiny ring.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use controlplane::pb;
use support::*;

/// Opens `host` through the edge, retrying briefly (a new tunnel is on
/// every core once `converged`; the retry only absorbs accept races).
fn relay_ok(plane: &Plane, host: &str, token: Option<&str>) -> bool {
    (0..20).any(|_| {
        let ok = open_relay(plane.edge, host, token).is_some_and(|mut s| echo(&mut s, b"ping\n"));
        if !ok {
            std::thread::sleep(Duration::from_millis(50));
        }
        ok
    })
}

#[test]
fn control_plane_kill9_drops_no_relay_and_resyncs_on_restart() {
    let origin = tcp_echo();
    let plane = Plane::new("", "");
    let mut cp = plane.serve();
    let _dp = plane.dataplane();
    let rt = rt();
    rt.block_on(async {
        let mut c = plane.client().await;
        c.create_tunnel(httpupgrade("raw", "raw.test", origin))
            .await;
        c.converged(None, Duration::from_secs(10)).await;
    });

    // Relay load: 16 relays echoing continuously from their own threads.
    let load = RelayLoad::start(&[plane.edge], "raw.test", 16);
    std::thread::sleep(Duration::from_millis(300));
    cp.kill9();
    let at_kill = load.rounds();
    // New connections keep being served with the last tables.
    for _ in 0..10 {
        assert!(
            relay_ok(&plane, "raw.test", None),
            "new relay after kill -9"
        );
    }
    std::thread::sleep(Duration::from_millis(700));
    let after = load.rounds();
    assert!(
        after > at_kill + 16,
        "relays kept moving ({at_kill} → {after})"
    );

    // Restart: it re-attaches, resyncs every core, and changes flow again.
    let _cp = plane.serve();
    rt.block_on(async {
        let mut c = plane.client().await;
        c.create_tunnel(httpupgrade("raw2", "raw2.test", origin))
            .await;
        let s = c.converged(None, Duration::from_secs(10)).await;
        assert!(s.cores.iter().all(|c| c.tunnels == 2), "{s:?}");
    });
    assert!(
        relay_ok(&plane, "raw2.test", None),
        "tunnel created after restart routes"
    );
    assert_eq!(load.dropped(), 0, "relays dropped");
    let logs = plane.logs();
    assert!(
        logs.matches("snapshot applied").count() >= 4,
        "two snapshots per core (attach, control-plane restart):\n{logs}"
    );
}

#[test]
fn dataplane_kill9_under_up_is_restarted_with_every_tunnel() {
    let origin = tcp_echo();
    let plane = Plane::new("", "");
    let _up = plane.up();
    let n = 20;
    let secret = rt().block_on(async {
        let mut c = plane.client().await;
        for i in 0..n {
            let mut t = httpupgrade(&format!("t{i}"), &format!("h{i}.test"), origin);
            t.token_auth = i % 2 == 0;
            c.create_tunnel(t).await;
        }
        let tok = c
            .tokens
            .create_token(pb::CreateTokenRequest::default())
            .await
            .unwrap()
            .into_inner();
        c.converged(Some(1), Duration::from_secs(10)).await;
        tok.secret
    });
    let region = shmring::Region::attach(&plane.shm).unwrap();
    let pid_word = region.header(shmring::layout::H_DATAPLANE_PID);
    let old = pid_word.load(Ordering::Acquire) as u32;
    assert!(old > 0);
    signal(old, "KILL");
    let t0 = Instant::now();
    while pid_word.load(Ordering::Acquire) as u32 == old {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "not restarted:\n{}",
            plane.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    plane.wait_port(plane.edge);
    // Serving again means the snapshot is in: every tunnel routes at once.
    for i in 0..n {
        let host = format!("h{i}.test");
        assert!(
            relay_ok(&plane, &host, Some(&secret)),
            "{host} after restart"
        );
        if i % 2 == 0 {
            assert!(
                open_relay(plane.edge, &host, None).is_none(),
                "{host} needs a token"
            );
        }
    }
    assert!(plane.logs().contains("data plane exited; restarting"));
}

#[test]
fn ring_overflow_burst_converges_on_every_core() {
    let origin = tcp_echo();
    // A 4 KiB ring holds ~60 token records: a burst must overflow it.
    let plane = Plane::new("ring_bytes = 4096", "");
    let _up = plane.up();
    let total = 20_000usize;
    let scoped = rt().block_on(async {
        let mut c = plane.client().await;
        let mut t = httpupgrade("raw", "raw.test", origin);
        t.token_auth = true;
        c.create_tunnel(t).await;
        let mut set = tokio::task::JoinSet::new();
        let per = total / 400;
        for _ in 0..400 {
            let mut tokens = c.tokens.clone();
            set.spawn(async move {
                for _ in 0..per {
                    tokens
                        .create_token(pb::CreateTokenRequest {
                            tunnels: vec!["raw".into()],
                            ..Default::default()
                        })
                        .await
                        .unwrap();
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        let last = c
            .tokens
            .create_token(pb::CreateTokenRequest::default())
            .await
            .unwrap()
            .into_inner();
        let s = c
            .converged(Some(total as u64 + 1), Duration::from_secs(60))
            .await;
        assert!(s.cores.iter().all(|c| c.snapshots >= 2), "resynced: {s:?}");
        last.secret
    });
    let logs = plane.logs();
    assert!(
        logs.contains("ring overflowed"),
        "the burst overflowed the ring"
    );
    assert!(relay_ok(&plane, "raw.test", Some(&scoped)));
}

#[test]
fn up_kill9_leaves_the_data_plane_serving_and_a_new_up_adopts_it() {
    let origin = tcp_echo();
    let plane = Plane::new("", "");
    let mut up = plane.up();
    rt().block_on(async {
        let mut c = plane.client().await;
        c.create_tunnel(httpupgrade("raw", "raw.test", origin))
            .await;
        c.converged(None, Duration::from_secs(10)).await;
    });
    let mut relays: Vec<_> = (0..8)
        .map(|_| open_relay(plane.edge, "raw.test", None).expect("relay opens"))
        .collect();
    up.kill9();
    for r in relays.iter_mut() {
        assert!(echo(r, b"still here\n"), "relay survived kill -9 of up");
    }
    assert!(
        relay_ok(&plane, "raw.test", None),
        "new relay with the last tables"
    );
    let _up = plane.up();
    rt().block_on(async {
        let mut c = plane.client().await;
        c.create_tunnel(httpupgrade("raw2", "raw2.test", origin))
            .await;
        c.converged(None, Duration::from_secs(10)).await;
    });
    assert!(relay_ok(&plane, "raw2.test", None));
    for r in relays.iter_mut() {
        assert!(echo(r, b"and after the new up\n"));
    }
    let logs = plane.logs();
    assert!(logs.contains("adopting the data plane"), "{logs}");
    assert_eq!(
        logs.matches("data plane started").count(),
        1,
        "no second data plane"
    );
}
