//! The extended CONNECT sessions of one HTTP/3 connection that carry more
//! than their request stream: HTTP datagrams, found by their quarter stream
//! id (RFC 9297 §2.1), and WebTransport streams, found by their session id.
//! A relayed session registers both here on each of its two connections;
//! the connection's datagram task and its stream acceptors deliver to it.
//!
//! Datagrams are forwarded from the receiving connection's task straight
//! into the other hop's connection (quarter id rewritten), without a queue
//! or a task per session. A datagram for a quarter id with no session is
//! dropped and counted: RFC 9297 allows dropping one that arrives before
//! its stream is open or after it closed.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use bytes::Bytes;

use crate::h3::error::Code;
use crate::h3::webtransport::{self as wt, BadDatagram};
use crate::quic::{self, RecvStream, SendStream};
use crate::stats::{self, CoreStats};

/// Streams that arrive for a session not registered (yet) are held, at most
/// this many per connection; past it the oldest is refused
/// (WT_BUFFERED_STREAM_REJECTED).
const MAX_EARLY_STREAMS: usize = 32;

/// Where one session's datagrams go: the other hop's connection and the
/// session's quarter stream id there; toward a hop that takes no QUIC
/// datagrams, DATAGRAM capsules on the session's request stream instead
/// (RFC 9297 §3.5), put in by `capsules`.
#[derive(Clone)]
pub struct DatagramRoute {
    pub to: quic::Connection,
    pub quarter_id: u64,
    pub capsules: Option<Rc<Injection>>,
    /// Payload bytes (after the quarter id) relayed as QUIC datagrams, for
    /// the session's totals (capsuled ones count with the request stream).
    pub moved: Rc<std::cell::Cell<u64>>,
}

/// Bytes of DATAGRAM capsules waiting for a request stream before more
/// datagrams are dropped (they are unreliable; the stream is not).
const MAX_CAPSULED: usize = 256 * 1024;

/// Capsules the edge adds to what a session's request stream reads (toward
/// the other hop): each goes whole between two of the peer's capsules
/// (`relay::h3` reads them in at a capsule boundary).
#[derive(Default)]
pub struct Injection {
    bytes: RefCell<Vec<u8>>,
    reader: RefCell<Option<Waker>>,
}

impl Injection {
    /// Queues one whole capsule and wakes the reader.
    pub fn push(&self, capsule: &[u8]) {
        self.bytes.borrow_mut().extend_from_slice(capsule);
        if let Some(w) = self.reader.borrow_mut().take() {
            w.wake();
        }
    }

    /// What is queued (the reader takes it whole).
    pub fn queued(&self) -> std::cell::RefMut<'_, Vec<u8>> {
        self.bytes.borrow_mut()
    }

    /// The reader waits: a push wakes it.
    pub fn wake_me(&self, waker: &Waker) {
        *self.reader.borrow_mut() = Some(waker.clone());
    }
}

/// A WebTransport stream the peer opened, after its type (the session id
/// and payload are still in `first` and behind it).
pub enum WtStream {
    Bidi(SendStream, RecvStream),
    Uni(RecvStream),
}

/// A WebTransport stream with its session known: the payload follows
/// `rest`.
pub struct Incoming {
    pub stream: WtStream,
    pub rest: Bytes,
}

/// Streams delivered to one session, and the task that takes them.
#[derive(Default)]
pub struct Inbox {
    streams: VecDeque<Incoming>,
    waker: Option<Waker>,
    closed: bool,
}

/// One connection's sessions.
pub struct Sessions {
    stats: Arc<CoreStats>,
    /// The peer sent GOAWAY; who waits for that.
    goaway: std::cell::Cell<bool>,
    goaway_waiters: RefCell<Vec<Waker>>,
    datagrams: RefCell<HashMap<u64, DatagramRoute>>,
    inboxes: RefCell<HashMap<u64, Rc<RefCell<Inbox>>>>,
    /// Streams for a session id not registered yet, oldest first.
    early: RefCell<VecDeque<(u64, Incoming)>>,
}

impl Sessions {
    pub fn new(stats: Arc<CoreStats>) -> Rc<Sessions> {
        Rc::new(Sessions {
            stats,
            goaway: Default::default(),
            goaway_waiters: Default::default(),
            datagrams: Default::default(),
            inboxes: Default::default(),
            early: Default::default(),
        })
    }

    /// The peer said GOAWAY (its sessions should end soon).
    pub fn peer_goaway(&self) {
        self.goaway.set(true);
        for w in self.goaway_waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Waits until the peer says GOAWAY.
    pub async fn goaway(&self) {
        std::future::poll_fn(|cx| {
            if self.goaway.get() {
                return Poll::Ready(());
            }
            let mut waiters = self.goaway_waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// Sends the datagrams of quarter id `quarter_id` to `route` until the
    /// returned guard is dropped.
    pub fn route_datagrams(self: &Rc<Self>, quarter_id: u64, route: DatagramRoute) -> RouteGuard {
        self.datagrams.borrow_mut().insert(quarter_id, route);
        RouteGuard { sessions: self.clone(), quarter_id }
    }

    /// Registers WebTransport session `session_id`: streams for it (and
    /// the ones that came early) go to the returned inbox.
    pub fn open_inbox(self: &Rc<Self>, session_id: u64) -> InboxGuard {
        let inbox = Rc::new(RefCell::new(Inbox::default()));
        {
            let mut early = self.early.borrow_mut();
            let mut i = 0;
            while i < early.len() {
                if early[i].0 == session_id {
                    if let Some((_, s)) = early.remove(i) {
                        inbox.borrow_mut().streams.push_back(s);
                    }
                } else {
                    i += 1;
                }
            }
        }
        self.inboxes.borrow_mut().insert(session_id, inbox.clone());
        InboxGuard { sessions: self.clone(), session_id, inbox }
    }

    /// Hands a WebTransport stream to its session (or holds it briefly).
    pub fn deliver(&self, session_id: u64, incoming: Incoming) {
        if let Some(inbox) = self.inboxes.borrow().get(&session_id) {
            let mut inbox = inbox.borrow_mut();
            if !inbox.closed {
                inbox.streams.push_back(incoming);
                if let Some(w) = inbox.waker.take() {
                    w.wake();
                }
                return;
            }
            drop(inbox);
            reject(incoming, &self.stats);
            return;
        }
        let mut early = self.early.borrow_mut();
        early.push_back((session_id, incoming));
        if early.len() > MAX_EARLY_STREAMS {
            if let Some((_, old)) = early.pop_front() {
                reject(old, &self.stats);
            }
        }
    }

    /// Forwards one HTTP datagram received on this connection; a datagram
    /// that is not one is the connection's error.
    fn forward(&self, datagram: &Bytes, scratch: &mut Vec<u8>) -> Result<(), BadDatagram> {
        let head = wt::datagram_head(datagram)?;
        let route = self.datagrams.borrow().get(&head.quarter_id).cloned();
        let Some(route) = route else {
            stats::add(&self.stats.h3_datagrams_dropped_no_session, 1);
            return Ok(());
        };
        if route.to.max_datagram_size().is_none() {
            // The other hop takes no QUIC datagrams: a DATAGRAM capsule.
            let Some(inject) = &route.capsules else {
                stats::add(&self.stats.h3_datagrams_dropped_unsupported, 1);
                return Ok(());
            };
            if inject.queued().len() > MAX_CAPSULED {
                stats::add(&self.stats.h3_datagrams_dropped_too_large, 1);
                return Ok(());
            }
            scratch.clear();
            let payload = &datagram[head.len..];
            let _ = crate::h3::varint::encode(crate::h3::capsule::ty::DATAGRAM, scratch);
            let _ = crate::h3::varint::encode(payload.len() as u64, scratch);
            scratch.extend_from_slice(payload);
            inject.push(scratch);
            stats::add(&self.stats.h3_datagrams_capsuled, 1);
            return Ok(());
        }
        wt::readdress(&datagram[head.len..], route.quarter_id, scratch);
        // One copy per datagram: quinn-proto takes each as its own `Bytes`.
        match route.to.send_datagram(Bytes::copy_from_slice(scratch)) {
            Ok(()) => {
                stats::add(&self.stats.h3_datagrams_relayed, 1);
                route.moved.set(route.moved.get() + (datagram.len() - head.len) as u64);
            }
            Err(quinn_proto::SendDatagramError::TooLarge) => stats::add(&self.stats.h3_datagrams_dropped_too_large, 1),
            Err(_) => stats::add(&self.stats.h3_datagrams_dropped_unsupported, 1),
        }
        Ok(())
    }
}

/// The stream is refused: WT_BUFFERED_STREAM_REJECTED on each half.
fn reject(incoming: Incoming, stats: &CoreStats) {
    stats::add(&stats.webtransport_streams_rejected, 1);
    match incoming.stream {
        WtStream::Bidi(mut send, mut recv) => {
            send.reset(wt::code::BUFFERED_STREAM_REJECTED);
            recv.stop(wt::code::BUFFERED_STREAM_REJECTED);
        }
        WtStream::Uni(mut recv) => recv.stop(wt::code::BUFFERED_STREAM_REJECTED),
    }
}

/// Removes a datagram route when the session ends.
pub struct RouteGuard {
    sessions: Rc<Sessions>,
    quarter_id: u64,
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        self.sessions.datagrams.borrow_mut().remove(&self.quarter_id);
    }
}

/// A registered session's inbox; dropping it unregisters the session and
/// refuses what was delivered and not taken.
pub struct InboxGuard {
    sessions: Rc<Sessions>,
    session_id: u64,
    inbox: Rc<RefCell<Inbox>>,
}

impl InboxGuard {
    /// The next stream delivered to the session.
    pub async fn next(&self) -> Incoming {
        std::future::poll_fn(|cx| {
            let mut inbox = self.inbox.borrow_mut();
            match inbox.streams.pop_front() {
                Some(s) => Poll::Ready(s),
                None => {
                    inbox.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl Drop for InboxGuard {
    fn drop(&mut self) {
        self.sessions.inboxes.borrow_mut().remove(&self.session_id);
        let mut inbox = self.inbox.borrow_mut();
        inbox.closed = true;
        for s in inbox.streams.drain(..) {
            reject(s, &self.sessions.stats);
        }
    }
}

/// Reads the connection's QUIC datagrams and forwards each to its session,
/// until the connection ends. A datagram without a valid quarter stream id
/// closes the connection with H3_DATAGRAM_ERROR (RFC 9297 §2.1).
pub async fn datagrams(quic: quic::Connection, sessions: Rc<Sessions>) {
    let mut batch = Vec::new();
    let mut scratch = Vec::with_capacity(2048);
    loop {
        if std::future::poll_fn(|cx| quic.poll_datagrams(cx, &mut batch)).await.is_err() {
            return;
        }
        for d in batch.drain(..) {
            if let Err(e) = sessions.forward(&d, &mut scratch) {
                tracing::info!(client = %quic.remote_address(), code = %Code::DATAGRAM_ERROR, "h3 connection closed: {e}");
                quic.close(Code::DATAGRAM_ERROR.0, e.to_string().as_bytes());
                return;
            }
        }
    }
}

/// Reads a WebTransport stream's session id (its type is already read;
/// `first` holds the bytes after it) and delivers the stream. A stream
/// that ends or fails first is dropped; a bad session id closes the
/// connection (H3_ID_ERROR).
pub async fn accept_stream(quic: quic::Connection, sessions: Rc<Sessions>, mut stream: WtStream, first: Bytes) {
    let mut buf = first.to_vec();
    loop {
        match wt::session_id(&buf) {
            Ok(Some(h)) => {
                let rest = Bytes::copy_from_slice(&buf[h.len..]);
                sessions.deliver(h.session_id, Incoming { stream, rest });
                return;
            }
            Ok(None) => {}
            Err(e) => {
                quic.close(e.code.0, e.reason.as_bytes());
                return;
            }
        }
        let recv = match &mut stream {
            WtStream::Bidi(_, r) | WtStream::Uni(r) => r,
        };
        match recv.chunk(16).await {
            Ok(Some(b)) => buf.extend_from_slice(&b),
            _ => return,
        }
    }
}
