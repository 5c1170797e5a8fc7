//! `connect-udp`, `connect-ip`, `wt-datagrams`: sessions that carry HTTP
//! datagrams (CONNECT-UDP, RFC 9298; CONNECT-IP, RFC 9484; WebTransport
//! draft-02), each on its own QUIC connection, each keeping `--window`
//! datagrams of `--size` bytes (a UDP payload in context 0; an IPv4 packet
//! in context 0; a WebTransport datagram) in flight against an upstream
//! that echoes them (a MASQUE proxy in front of a UDP echo, one that turns
//! packets around, or loadgen's `h3-echo` origin, which echoes every
//! datagram itself). Every echo is one operation, its round
//! trip the latency. A datagram not back within [`LOSS_WAIT`] of the last
//! echo is counted lost (`errors["datagram lost"]`) and its slot refilled:
//! the run reports loss, it never waits on it.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::modes::Ctx;
use crate::session::{Failure, Via};

/// How long a session waits for an echo before it counts what is in
/// flight as lost.
pub const LOSS_WAIT: Duration = Duration::from_millis(100);

/// Bytes of the payload that carry the sequence number and send time.
const STAMP: usize = 16;

/// An IPv4 header (UDP, 192.0.2.1 → 198.51.100.7, checksum filled in)
/// for a packet of `total` bytes: what a CONNECT-IP datagram carries.
fn ipv4_header(total: usize) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&(total.min(65_535) as u16).to_be_bytes());
    h[8] = 64; // TTL
    h[9] = 17; // UDP
    h[12..16].copy_from_slice(&[192, 0, 2, 1]);
    h[16..20].copy_from_slice(&[198, 51, 100, 7]);
    let sum: u32 = h
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    h[10..12].copy_from_slice(&(!((folded & 0xffff) + (folded >> 16)) as u16).to_be_bytes());
    h
}

/// One session until the run ends.
pub(crate) async fn session(ctx: &Ctx, conn: usize) {
    let t = &ctx.plan.target;
    let Some(tls) = &t.tls else {
        return ctx.fail(Failure::Tls("HTTP/3 needs --tls".into()));
    };
    let auth: Vec<(String, String)> = t
        .token
        .iter()
        .map(|tok| ("authorization".to_owned(), format!("Bearer {tok}")))
        .collect();
    let opening = async {
        // One connection per session: the connection's datagrams are all
        // this session's.
        let client = crate::h3::connection(conn, t.addr, &t.sni, tls).await?;
        let protocol = match ctx.plan.via {
            Via::ConnectIp => "connect-ip",
            Via::Wt => "webtransport",
            _ => "connect-udp",
        };
        let (stream, quarter) =
            crate::h3::open_datagram_session(&client, protocol, &t.host, &t.path, &auth).await?;
        Ok::<_, Failure>((client, stream, quarter))
    };
    let (client, _stream, quarter) = match crate::with_timeout(t.timeout, opening).await {
        Some(Ok(x)) => x,
        Some(Err(f)) => return ctx.fail(f),
        None => return ctx.fail(Failure::Timeout),
    };
    ctx.result.borrow_mut().established += 1;
    // Checked on the way back: the quarter id and context; then (CONNECT-IP)
    // an IPv4 header a proxy may have turned around; then the stamp.
    let mut head = Vec::new();
    let _ = dataplane::h3::varint::encode(quarter, &mut head);
    if ctx.plan.via != Via::Wt {
        head.push(0); // context 0: a UDP payload or an IP packet
    }
    let ip = if ctx.plan.via == Via::ConnectIp {
        20
    } else {
        0
    };
    let size = ctx.plan.size.max(STAMP + ip);
    let epoch = Instant::now();
    let quic = client.quic.clone();
    let mut in_flight: HashSet<u64> = HashSet::new();
    let mut next_seq = 0u64;
    let send = |seq: u64, in_flight: &mut HashSet<u64>| {
        let mut d = Vec::with_capacity(head.len() + size);
        d.extend_from_slice(&head);
        if ip > 0 {
            d.extend_from_slice(&ipv4_header(size));
        }
        d.extend_from_slice(&seq.to_be_bytes());
        d.extend_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
        d.resize(head.len() + size, 0x5a);
        if quic.send_datagram(Bytes::from(d)).is_ok() {
            in_flight.insert(seq);
        }
    };
    let mut batch = Vec::new();
    let mut running = true;
    loop {
        while running && in_flight.len() < ctx.plan.window.max(1) {
            if !ctx.take() {
                running = false;
                break;
            }
            send(next_seq, &mut in_flight);
            next_seq += 1;
        }
        if !running && in_flight.is_empty() {
            break;
        }
        let got = crate::with_timeout(
            LOSS_WAIT,
            std::future::poll_fn(|cx| quic.poll_datagrams(cx, &mut batch)),
        )
        .await;
        match got {
            Some(Ok(())) => {}
            Some(Err(e)) => return ctx.fail(Failure::Io(format!("quic: {e}"))),
            None => {
                // Nothing back in time: what is in flight is lost.
                let lost = in_flight.len() as u64;
                in_flight.clear();
                *ctx.result
                    .borrow_mut()
                    .errors
                    .entry("datagram lost".into())
                    .or_default() += lost;
                if !running {
                    break;
                }
                continue;
            }
        }
        for d in batch.drain(..) {
            let at = head.len() + ip;
            let Some(stamp) = d.get(at..at + STAMP) else {
                continue;
            };
            if !d.starts_with(&head) {
                continue;
            }
            let seq = u64::from_be_bytes(stamp[..8].try_into().unwrap_or_default());
            if !in_flight.remove(&seq) {
                continue; // late: already counted lost
            }
            let sent_ns = u64::from_be_bytes(stamp[8..].try_into().unwrap_or_default());
            ctx.done(epoch + Duration::from_nanos(sent_ns), d.len() - head.len());
        }
    }
}
