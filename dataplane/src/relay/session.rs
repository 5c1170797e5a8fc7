//! An extended CONNECT session relayed between two HTTP/3 connections
//! (WebTransport, CONNECT-UDP, CONNECT-IP): the request stream, the HTTP
//! datagrams, and WebTransport's streams, in both directions.
//!
//! ```text
//! request stream   DATA (a capsule stream) both ways, unchanged, with each protocol's capsule rules checked
//!                  (relay_legs: half-close, reset, idle as for any tunnel)
//! datagrams        quarter stream id rewritten per hop (http3::sessions), payload and context ids untouched
//! WT streams       opened on the other hop with its session id; bytes, FIN, RESET_STREAM and STOP_SENDING
//!                  codes cross unchanged; the session's end resets what is left with WT_SESSION_GONE
//! ```
//!
//! Each hop speaks its own WebTransport draft (draft-02 or draft-15, see
//! `h3::webtransport`): stream payloads, error codes and WT_CLOSE_SESSION
//! are the same in both, so only the session ids of each hop are rewritten
//! here. The session's report counts the request stream's bytes, the
//! datagrams' payloads and the WebTransport streams' bytes, each way.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Poll, Waker};

use bytes::Bytes;
use futures_lite::FutureExt;

use super::h3::H3Stream;
use super::{relay_legs, Leg, Prelude, RelayOptions, Report};
use crate::h3::capsule::{self, Capsule};
use crate::h3::webtransport as wt;
use crate::http3::sessions::{DatagramRoute, Incoming, WtStream};
use crate::intent::SessionProtocol;
use crate::quic::{self, RecvStream, SendStream, StreamError};
use crate::stats::{self, CoreStats};

/// Largest piece a WebTransport stream moves at once.
const CHUNK: usize = 64 * 1024;

/// Relays one session until its request stream is done both ways (or
/// aborted); then its datagrams stop and its WebTransport streams still
/// open are reset on both hops.
pub async fn relay(protocol: SessionProtocol, down: H3Stream, up: H3Stream, opts: RelayOptions, stats: &CoreStats) -> Report {
    let (down_conn, up_conn) = (down.conn.clone(), up.conn.clone());
    let (down_sessions, up_sessions) = (down.sessions.clone(), up.sessions.clone());
    let (down_id, up_id) = (down.send.id(), up.send.id());
    let (down, up) = (down.with_capsules(protocol), up.with_capsules(protocol));
    // What the edge adds toward each hop goes in through the other hop's
    // reader: DATAGRAM capsules for a hop without QUIC datagrams, and
    // WT_DRAIN_SESSION toward the client.
    let (to_up, to_down) = (down.injection(), up.injection());
    // Bytes moved outside the request stream: (downstream → upstream,
    // upstream → downstream).
    let moved: (Rc<Cell<u64>>, Rc<Cell<u64>>) = Default::default();
    let _routes = (
        down_sessions.route_datagrams(
            wt::quarter_id(down_id),
            DatagramRoute { to: up_conn.clone(), quarter_id: wt::quarter_id(up_id), capsules: to_up, moved: moved.0.clone() },
        ),
        up_sessions.route_datagrams(
            wt::quarter_id(up_id),
            DatagramRoute {
                to: down_conn.clone(),
                quarter_id: wt::quarter_id(down_id),
                capsules: to_down.clone(),
                moved: moved.1.clone(),
            },
        ),
    );
    // Booked like the request stream's bytes: in the report (tunnel
    // counters, access log) and in the core's totals (all copied).
    let with_moved = |mut r: Report| {
        let (up, down) = (moved.0.get(), moved.1.get());
        r.down_to_up += up;
        r.up_to_down += down;
        stats::add(&stats.bytes_downstream_to_upstream, up);
        stats::add(&stats.bytes_upstream_to_downstream, down);
        stats::add(&stats.bytes_copied, up + down);
        r
    };
    let legs = relay_legs(Leg::H3(down), Leg::H3(up), Prelude::default(), opts, stats);
    if protocol != SessionProtocol::WebTransport {
        return with_moved(legs.await);
    }
    // The upstream's GOAWAY: the session should end soon; the client hears
    // it as WT_DRAIN_SESSION on its request stream.
    let drain = async {
        up_sessions.goaway().await;
        if let Some(inject) = &to_down {
            let mut capsule = Vec::new();
            let _ = (Capsule { capsule_type: capsule::ty::WT_DRAIN_SESSION, value: Vec::new() }).encode(&mut capsule);
            inject.push(&capsule);
        }
        std::future::pending::<()>().await
    };
    let gone = Gone::default();
    let (down_inbox, up_inbox) = (down_sessions.open_inbox(down_id), up_sessions.open_inbox(up_id));
    let streams = async {
        loop {
            // A stream one hop opened is opened on the other, for the
            // session's id there.
            let (incoming, to, session_id, counts) =
                async { (down_inbox.next().await, up_conn.clone(), up_id, (moved.0.clone(), moved.1.clone())) }
                    .or(async { (up_inbox.next().await, down_conn.clone(), down_id, (moved.1.clone(), moved.0.clone())) })
                    .await;
            stats::add(&stats.webtransport_streams_total, 1);
            glommio::spawn_local(stream(incoming, (to, session_id), counts, gone.clone())).detach();
        }
    };
    let report = legs.or(async { futures_util::future::join(streams, drain).await.0 }).await;
    gone.fire();
    with_moved(report)
}

/// Relays one WebTransport stream: opens its twin on `to` for `session_id`,
/// then moves bytes each way until both directions end, counting them in
/// `(forth, back)` (toward `to`, and back from it).
async fn stream(incoming: Incoming, (to, session_id): (quic::Connection, u64), (forth, back): (Rc<Cell<u64>>, Rc<Cell<u64>>), gone: Gone) {
    let Incoming { stream, rest } = incoming;
    match stream {
        WtStream::Uni(recv) => {
            let opened = async { to.open_uni().await.ok() }.or(async {
                gone.wait().await;
                None
            });
            let Some(send) = opened.await else { return refuse_uni(recv) };
            forth.set(forth.get() + rest.len() as u64);
            pipe(recv, send, (header(false, session_id, &rest), &forth), &gone).await;
        }
        WtStream::Bidi(send, recv) => {
            let opened = async { to.open_bi().await.ok() }.or(async {
                gone.wait().await;
                None
            });
            let Some((twin_send, twin_recv)) = opened.await else { return refuse_bidi(send, recv) };
            forth.set(forth.get() + rest.len() as u64);
            let there = pipe(recv, twin_send, (header(true, session_id, &rest), &forth), &gone);
            let back_again = pipe(twin_recv, send, (Vec::new(), &back), &gone);
            futures_util::future::join(there, back_again).await;
        }
    }
}

/// The stream's header on the other hop, and the payload that came with
/// the header on this one (read while looking for its session id).
fn header(bidi: bool, session_id: u64, rest: &Bytes) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + rest.len());
    wt::stream_header(bidi, session_id, &mut out);
    out.extend_from_slice(rest);
    out
}

fn refuse_uni(mut recv: RecvStream) {
    recv.stop(wt::code::SESSION_GONE);
}

fn refuse_bidi(mut send: SendStream, mut recv: RecvStream) {
    send.reset(wt::code::SESSION_GONE);
    recv.stop(wt::code::SESSION_GONE);
}

/// How one direction of a stream ended.
enum End {
    /// FIN, reset or stop passed on; nothing left to do.
    Done,
    /// The session ended first.
    Gone,
}

/// Moves `first`, then what `from` receives, to `to`: FIN as FIN, the
/// peer's RESET_STREAM as a reset with its code, a STOP_SENDING on `to`
/// as a STOP_SENDING on `from` with its code.
async fn pipe(mut from: RecvStream, mut to: SendStream, (first, moved): (Vec<u8>, &Cell<u64>), gone: &Gone) {
    let work = async {
        if !first.is_empty() {
            if let Err(e) = to.write_all(&first).await {
                from.stop(code_of(&e));
                return End::Done;
            }
        }
        loop {
            let next = std::future::poll_fn(|cx| {
                if let Poll::Ready(stopped) = to.poll_stopped(cx) {
                    return Poll::Ready(Err(stopped));
                }
                from.poll_chunk(cx, CHUNK).map(Ok)
            })
            .await;
            match next {
                Err(Some(code)) => {
                    // STOP_SENDING: the stream ends here with a reset of
                    // the same code (RFC 9000 §3.5), and the sender is
                    // asked to stop with it too.
                    to.reset(code);
                    from.stop(code);
                    return End::Done;
                }
                Err(None) => {
                    from.stop(wt::code::SESSION_GONE);
                    return End::Done;
                }
                Ok(Ok(Some(bytes))) => {
                    if let Err(e) = to.write_all(&bytes).await {
                        from.stop(code_of(&e));
                        return End::Done;
                    }
                    moved.set(moved.get() + bytes.len() as u64);
                }
                Ok(Ok(None)) => {
                    let _ = to.finish();
                    return End::Done;
                }
                Ok(Err(e)) => {
                    to.reset(code_of(&e));
                    return End::Done;
                }
            }
        }
    };
    let end = work
        .or(async {
            gone.wait().await;
            End::Gone
        })
        .await;
    if let End::Gone = end {
        to.reset(wt::code::SESSION_GONE);
        from.stop(wt::code::SESSION_GONE);
    }
}

/// The code a failure is passed on with: the peer's own, else
/// WT_SESSION_GONE (its connection ended).
fn code_of(e: &StreamError) -> u64 {
    match e {
        StreamError::Reset(code) => *code,
        _ => wt::code::SESSION_GONE,
    }
}

/// Raised once when the session ends; every stream of it waits on it.
#[derive(Clone, Default)]
struct Gone(Rc<RefCell<GoneState>>);

#[derive(Default)]
struct GoneState {
    fired: bool,
    next: u64,
    /// One waker per stream direction waiting (removed when it stops waiting).
    waiting: std::collections::HashMap<u64, Waker>,
}

impl Gone {
    fn fire(&self) {
        let wakers = {
            let mut g = self.0.borrow_mut();
            g.fired = true;
            std::mem::take(&mut g.waiting)
        };
        for w in wakers.into_values() {
            w.wake();
        }
    }

    async fn wait(&self) {
        struct Waiting<'a>(&'a Gone, u64);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0 .0.borrow_mut().waiting.remove(&self.1);
            }
        }
        let key = {
            let mut g = self.0.borrow_mut();
            g.next += 1;
            g.next
        };
        let _waiting = Waiting(self, key);
        std::future::poll_fn(|cx| {
            let mut g = self.0.borrow_mut();
            if g.fired {
                return Poll::Ready(());
            }
            g.waiting.insert(key, cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}
