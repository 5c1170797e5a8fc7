//! `connect-udp`: CONNECT-UDP sessions (RFC 9298), each on its own QUIC
//! connection, each keeping `--window` HTTP datagrams (context 0, `--size`
//! bytes of UDP payload) in flight against an upstream that echoes them
//! (a MASQUE proxy in front of a UDP echo, or loadgen's `h3-echo` origin,
//! which echoes datagrams itself). Every echo is one operation, its round
//! trip the latency. A datagram not back within [`LOSS_WAIT`] of the last
//! echo is counted lost (`errors["datagram lost"]`) and its slot refilled:
//! the run reports loss, it never waits on it.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::modes::Ctx;
use crate::session::Failure;

/// How long a session waits for an echo before it counts what is in
/// flight as lost.
pub const LOSS_WAIT: Duration = Duration::from_millis(100);

/// Bytes of the payload that carry the sequence number and send time.
const STAMP: usize = 16;

/// One CONNECT-UDP session until the run ends.
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
        let (stream, quarter) = crate::h3::open_connect_udp(&client, &t.host, &t.path, &auth).await?;
        Ok::<_, Failure>((client, stream, quarter))
    };
    let (client, _stream, quarter) = match crate::with_timeout(t.timeout, opening).await {
        Some(Ok(x)) => x,
        Some(Err(f)) => return ctx.fail(f),
        None => return ctx.fail(Failure::Timeout),
    };
    ctx.result.borrow_mut().established += 1;
    let mut head = Vec::new();
    let _ = dataplane::h3::varint::encode(quarter, &mut head);
    head.push(0); // context 0: a UDP payload
    let size = ctx.plan.size.max(STAMP);
    let epoch = Instant::now();
    let quic = client.quic.clone();
    let mut in_flight: HashSet<u64> = HashSet::new();
    let mut next_seq = 0u64;
    let send = |seq: u64, in_flight: &mut HashSet<u64>| {
        let mut d = Vec::with_capacity(head.len() + size);
        d.extend_from_slice(&head);
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
        let got = crate::with_timeout(LOSS_WAIT, std::future::poll_fn(|cx| quic.poll_datagrams(cx, &mut batch))).await;
        match got {
            Some(Ok(())) => {}
            Some(Err(e)) => return ctx.fail(Failure::Io(format!("quic: {e}"))),
            None => {
                // Nothing back in time: what is in flight is lost.
                let lost = in_flight.len() as u64;
                in_flight.clear();
                *ctx.result.borrow_mut().errors.entry("datagram lost".into()).or_default() += lost;
                if !running {
                    break;
                }
                continue;
            }
        }
        for d in batch.drain(..) {
            let Some(stamp) = d.get(head.len()..head.len() + STAMP) else { continue };
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
