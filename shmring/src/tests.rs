//! Region and ring tests over a real mapping (a file in the temp dir).

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;

use crate::layout::{self, stat};
use crate::{Body, Drained, Pop, Record, Region};

fn path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("shmring-test-{}-{name}", std::process::id()))
}

#[test]
fn create_attach_mode_and_header() {
    let p = path("hdr");
    let r = Region::create(&p, 2, 8192).unwrap();
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    r.header(layout::H_GENERATION).store(5, Ordering::Relaxed);
    let a = Region::attach(&p).unwrap();
    assert_eq!(a.layout(), r.layout());
    assert_eq!(a.header(layout::H_GENERATION).load(Ordering::Relaxed), 5);
    assert!(a.stat(1, stat::APPLIED_SEQ).is_some());
    assert!(a.stat(2, stat::APPLIED_SEQ).is_none());
    assert!(a.ring(2).is_none());
    // Replacing retires the old file for its mappers.
    let _new = Region::create(&p, 2, 8192).unwrap();
    assert_eq!(a.header(layout::H_RETIRED).load(Ordering::Relaxed), 1);
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn attach_refuses_garbage() {
    let p = path("garbage");
    std::fs::write(&p, vec![7u8; 8192]).unwrap();
    assert!(Region::attach(&p).is_err());
    std::fs::write(&p, b"short").unwrap();
    assert!(Region::attach(&p).is_err());
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn frames_wrap_and_fill() {
    let p = path("wrap");
    let producer = Region::create(&p, 1, 4096).unwrap();
    let consumer = Region::attach(&p).unwrap();
    let (tx, rx) = (producer.ring(0).unwrap(), consumer.ring(0).unwrap());
    let mut buf = Vec::new();
    // Many rounds of odd-sized frames force every wrap position.
    for round in 0..500u64 {
        let body: Vec<u8> = (0..(round % 97) as u8 + 1).collect();
        assert!(tx.push(&body));
        assert_eq!(rx.pop(&mut buf), Pop::Frame);
        assert_eq!(buf, body);
    }
    assert_eq!(rx.pop(&mut buf), Pop::Empty);
    // Fill until full, then drain in order.
    let mut n = 0u32;
    while tx.push(&n.to_le_bytes()) {
        n += 1;
    }
    assert_eq!(n, 4096 / 8);
    for i in 0..n {
        assert_eq!(rx.pop(&mut buf), Pop::Frame);
        assert_eq!(buf, i.to_le_bytes());
    }
    assert_eq!(rx.pop(&mut buf), Pop::Empty);
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn batched_frames_wrap_fill_and_stop() {
    let p = path("batch");
    let producer = Region::create(&p, 1, 4096).unwrap();
    let consumer = Region::attach(&p).unwrap();
    let (tx, rx) = (producer.ring(0).unwrap(), consumer.ring(0).unwrap());
    let mut frames = Vec::new();
    let mut bodies = Vec::new();
    for seq in 1..=2000u64 {
        let r = Record {
            seq,
            body: Body::TunnelDelete {
                name: "x".repeat((seq % 53) as usize),
            },
        };
        r.encode_frame(&mut frames).unwrap();
        bodies.push(r.to_bytes().unwrap());
    }
    let mut buf = Vec::new();
    let (mut rest, mut got) = (&frames[..], 0usize);
    while !rest.is_empty() {
        let n = tx.push_frames(rest);
        // Only whole frames, and never more than the ring holds.
        assert!(n as u64 <= 4096);
        rest = &rest[n..];
        // Drain in two steps: a bounded batch, then one that stops early.
        let step = rx.pop_many(7, &mut buf, |b| {
            assert_eq!(b, &bodies[got][..]);
            got += 1;
            true
        });
        assert!(matches!(step, Drained::Frames(k) if k <= 7));
        let mut once = 0;
        rx.pop_many(usize::MAX, &mut buf, |b| {
            assert_eq!(b, &bodies[got][..]);
            got += 1;
            once += 1;
            once < 3
        });
    }
    while let Drained::Frames(k) = rx.pop_many(usize::MAX, &mut buf, |b| {
        assert_eq!(b, &bodies[got][..]);
        got += 1;
        true
    }) {
        if k == 0 {
            break;
        }
    }
    assert_eq!(got, bodies.len());
    assert_eq!(rx.used(), 0);
    // A frame longer than MAX_RECORD is never published.
    let mut bad = (u32::MAX).to_le_bytes().to_vec();
    bad.extend_from_slice(&[0; 16]);
    assert_eq!(tx.push_frames(&bad), 0);
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn records_cross_threads_in_order() {
    let p = path("threads");
    let producer = Region::create(&p, 1, 4096).unwrap();
    let consumer = Region::attach(&p).unwrap();
    let total = 20_000u64;
    let t = std::thread::spawn(move || {
        let ring = producer.ring(0).unwrap();
        for seq in 1..=total {
            let body = Record {
                seq,
                body: Body::TunnelDelete {
                    name: format!("t{seq}"),
                },
            }
            .to_bytes()
            .unwrap();
            while !ring.push(&body) {
                std::thread::yield_now();
            }
        }
    });
    let ring = consumer.ring(0).unwrap();
    let mut buf = Vec::new();
    let mut next = 1;
    while next <= total {
        match ring.pop(&mut buf) {
            Pop::Empty => std::thread::yield_now(),
            Pop::Frame => {
                let r = Record::decode(&buf).unwrap();
                assert_eq!(r.seq, next);
                next += 1;
            }
            Pop::Corrupt => panic!("corrupt frame"),
        }
    }
    t.join().unwrap();
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn skip_all_discards_published_frames() {
    let p = path("skip");
    let r = Region::create(&p, 1, 4096).unwrap();
    let ring = r.ring(0).unwrap();
    assert!(ring.push(&[1, 2, 3]));
    assert!(ring.push(&[0u8; 100]));
    let mut buf = Vec::new();
    assert_eq!(ring.pop(&mut buf), Pop::Frame);
    ring.skip_all();
    assert_eq!(ring.pop(&mut buf), Pop::Empty);
    assert_eq!(ring.used(), 0);
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn fuzz_corpus_round_trips() {
    // The same check as fuzz/fuzz_targets/ring_record.rs, over the committed
    // corpus (hand-written seeds plus what libFuzzer kept).
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/ring_record");
    let mut decoded = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let b = std::fs::read(e.path()).unwrap();
        if let Ok(r) = Record::decode(&b) {
            assert_eq!(r.to_bytes().unwrap(), b, "{:?}", e.path());
            decoded += 1;
        }
    }
    for seed in [
        "snap_begin",
        "snap_end",
        "tunnel_upsert",
        "tunnel_delete",
        "token_upsert",
        "token_revoke",
    ] {
        let b = std::fs::read(format!("{dir}/{seed}")).unwrap();
        assert!(Record::decode(&b).is_ok(), "{seed}");
    }
    assert!(decoded >= 6);
}
