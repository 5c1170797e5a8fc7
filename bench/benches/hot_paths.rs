//! Micro-benchmarks of the edge's hot pure functions.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dataplane::auth::TokenSet;
use dataplane::codec::h1::parse_request;
use dataplane::config::{TunnelConfig, TunnelMode};
use dataplane::intent::classify;
use dataplane::route::RouteTable;
use dataplane::tunnel::Tunnel;

const WS_REQUEST: &[u8] = b"GET /chat?room=42 HTTP/1.1\r\nHost: chat.edge.test\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0\r\nAccept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\nSec-WebSocket-Version: 13\r\nOrigin: https://chat.edge.test\r\nSec-WebSocket-Extensions: permessage-deflate\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nConnection: keep-alive, Upgrade\r\nCookie: session=abc\r\nUpgrade: websocket\r\n\r\n";

fn h1_head(c: &mut Criterion) {
    let mut g = c.benchmark_group("h1");
    g.throughput(Throughput::Bytes(WS_REQUEST.len() as u64));
    g.bench_function("parse+classify websocket head", |b| {
        b.iter(|| {
            let (head, _) = parse_request(black_box(WS_REQUEST), 16 * 1024)
                .unwrap()
                .unwrap();
            black_box(classify(&head).unwrap())
        })
    });
    g.finish();
}

fn ws_accept(c: &mut Criterion) {
    c.bench_function("websocket accept key", |b| {
        b.iter(|| dataplane::websocket::accept_key(black_box(b"dGhlIHNhbXBsZSBub25jZQ==")))
    });
}

fn tunnel(i: usize) -> Tunnel {
    Tunnel {
        config: TunnelConfig {
            name: format!("t{i}"),
            hostnames: vec![format!("host-{i}.edge.test")],
            upstream: "127.0.0.1:9000".into(),
            mode: TunnelMode::Http,
            path: "/".into(),
            token_auth: false,
            tokens: vec![],
            stealth: true,
            allowed_cidrs: vec![],
            allowed_upgrades: vec![],
            allow_connect: true,
            http_version: dataplane::config::UpstreamVersion::Http1,
            upstream_tls: Default::default(),
        },
        tokens: TokenSet::default(),
        upstream: dataplane::target::Upstream::Addr("127.0.0.1:9000".parse().unwrap()),
    }
}

fn routing(c: &mut Criterion) {
    let mut table = RouteTable::default();
    for i in 0..100_000 {
        table.insert(tunnel(i));
    }
    let hosts: Vec<String> = (0..1024)
        .map(|i| format!("Host-{}.Edge.Test:443", i * 97 % 100_000))
        .collect();
    let mut i = 0;
    c.bench_function("route lookup, 100k tunnels", |b| {
        b.iter(|| {
            i = (i + 1) % hosts.len();
            black_box(table.by_host(black_box(&hosts[i])).is_some())
        })
    });
}

fn tokens(c: &mut Criterion) {
    let plain: Vec<String> = (0..1_000_000u32).map(|i| format!("token-{i}")).collect();
    let set = TokenSet::from_plain(&plain);
    let good = b"token-777777".to_vec();
    let bad = b"token-x777777".to_vec();
    let mut g = c.benchmark_group("token check, 1M tokens");
    g.bench_function("valid", |b| {
        b.iter(|| black_box(set.accepts(black_box(&good))))
    });
    g.bench_function("invalid", |b| {
        b.iter(|| black_box(set.accepts(black_box(&bad))))
    });
    g.finish();
}

fn proxy_v2(c: &mut Criterion) {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[
        0x21, 0x11, 0, 12, 10, 0, 0, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb,
    ]);
    h.extend_from_slice(b"\x16\x03\x01\x02\x00");
    c.bench_function("PROXY v2 parse", |b| {
        b.iter_batched(
            || h.clone(),
            |h| black_box(dataplane::proxy_protocol::parse(&h).unwrap()),
            BatchSize::SmallInput,
        )
    });
}

/// What every datagram of a multi-core QUIC listener pays to learn whether
/// another core owns it: the core its connection id names (the kernel's
/// steering mix), against the full check with the id's HMAC tag.
fn quic_owner(c: &mut Criterion) {
    use dataplane::quic::cid::{named_core, owner, CidKey, CoreCids};
    use quinn_proto::ConnectionIdGenerator;
    let key = CidKey::random();
    let id = CoreCids::new(key.clone(), 1).generate_cid();
    let mut g = c.benchmark_group("quic connection id owner");
    g.bench_function("named core (steering mix)", |b| {
        b.iter(|| named_core(&key, std::hint::black_box(&id[..])))
    });
    g.bench_function("owner with HMAC tag", |b| {
        b.iter(|| owner(&key, std::hint::black_box(&id[..])))
    });
    g.finish();
}

criterion_group!(benches, h1_head, ws_accept, routing, tokens, proxy_v2, quic_owner);
criterion_main!(benches);
