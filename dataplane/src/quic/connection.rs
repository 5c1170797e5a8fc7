//! One QUIC connection on its core: the quinn-proto state machine, the
//! wakers of the tasks that use its streams, and the driver task that turns
//! its events into packets and timers.
//!
//! Every call that changes the connection (a read that returned flow
//! credit, a write, a reset) marks it dirty and wakes the driver; the
//! driver does the rest in one place: quinn's order — endpoint events in,
//! timeout, transmits, endpoint events out, application events (which wake
//! the stream tasks) — then sleeps until woken or until the next timer.
//! Nothing here blocks: a full socket buffer parks only the driver.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_proto::{ConnectionError, ConnectionEvent, ConnectionHandle, Dir, StreamEvent, StreamId, VarInt};

use super::endpoint::Shared;
use super::stream::{RecvStream, SendStream};

/// Transmits one driver pass sends before it lets other tasks run.
const TRANSMITS_PER_PASS: usize = 32;

/// What the tasks of one connection share (never leaves the core).
pub(crate) struct State {
    pub(crate) inner: quinn_proto::Connection,
    handle: ConnectionHandle,
    /// Datagrams and endpoint answers for this connection, not handled yet.
    pub(crate) incoming: VecDeque<ConnectionEvent>,
    dirty: bool,
    driver: Option<Waker>,
    pub(crate) readers: HashMap<StreamId, Waker>,
    pub(crate) writers: HashMap<StreamId, Waker>,
    accepting: [Option<Waker>; 2],
    opening: [Option<Waker>; 2],
    /// The task reading the peer's QUIC datagrams (RFC 9221).
    datagrams: Option<Waker>,
    connected: bool,
    on_connected: Option<Waker>,
    pub(crate) lost: Option<ConnectionError>,
    /// The code a stream dropped without an explicit end is stopped or
    /// reset with (HTTP/3: H3_REQUEST_CANCELLED).
    pub(crate) drop_code: VarInt,
    /// A server handshake counted in the endpoint's in-flight handshakes.
    pub(crate) counted_handshake: bool,
    /// Where the last datagram came from.
    last_from: Option<SocketAddr>,
}

impl State {
    /// Marks the connection as having work and wakes its driver.
    pub(crate) fn wake_driver(&mut self) {
        self.dirty = true;
        if let Some(w) = self.driver.take() {
            w.wake();
        }
    }

    fn dispatch(&mut self, event: quinn_proto::Event) {
        use quinn_proto::Event as E;
        match event {
            E::HandshakeDataReady => {}
            E::Connected => {
                self.connected = true;
                if let Some(w) = self.on_connected.take() {
                    w.wake();
                }
            }
            E::ConnectionLost { reason } => {
                self.lost = Some(reason);
                self.wake_all();
            }
            E::Stream(StreamEvent::Readable { id }) => {
                if let Some(w) = self.readers.remove(&id) {
                    w.wake();
                }
            }
            E::Stream(StreamEvent::Writable { id } | StreamEvent::Finished { id } | StreamEvent::Stopped { id, .. }) => {
                if let Some(w) = self.writers.remove(&id) {
                    w.wake();
                }
            }
            E::Stream(StreamEvent::Opened { dir }) => {
                if let Some(w) = self.accepting[dir as usize].take() {
                    w.wake();
                }
            }
            E::Stream(StreamEvent::Available { dir }) => {
                if let Some(w) = self.opening[dir as usize].take() {
                    w.wake();
                }
            }
            E::DatagramReceived => {
                if let Some(w) = self.datagrams.take() {
                    w.wake();
                }
            }
            E::DatagramsUnblocked => {}
        }
    }

    fn wake_all(&mut self) {
        let wakers = self
            .readers
            .drain()
            .map(|(_, w)| w)
            .chain(self.writers.drain().map(|(_, w)| w))
            .chain(self.accepting.iter_mut().filter_map(Option::take))
            .chain(self.opening.iter_mut().filter_map(Option::take))
            .chain(self.on_connected.take())
            .chain(self.datagrams.take());
        for w in wakers.collect::<Vec<_>>() {
            w.wake();
        }
    }
}

/// A handle to one connection (cheap to clone; all clones share it).
#[derive(Clone)]
pub struct Connection(pub(crate) Rc<RefCell<State>>);

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("handle", &self.0.borrow().handle.0).finish()
    }
}

impl Connection {
    pub(crate) fn new(inner: quinn_proto::Connection, handle: ConnectionHandle, drop_code: VarInt) -> Connection {
        Connection(Rc::new(RefCell::new(State {
            inner,
            handle,
            incoming: VecDeque::new(),
            dirty: true,
            driver: None,
            readers: HashMap::new(),
            writers: HashMap::new(),
            accepting: [None, None],
            opening: [None, None],
            datagrams: None,
            connected: false,
            on_connected: None,
            lost: None,
            drop_code,
            counted_handshake: false,
            last_from: None,
        })))
    }

    /// Queues a datagram (or endpoint answer) that came `from` the peer for
    /// the driver; says whether the peer's address changed since its last
    /// datagram (NAT rebinding or migration).
    pub(crate) fn deliver(&self, event: ConnectionEvent, from: SocketAddr) -> bool {
        let mut st = self.0.borrow_mut();
        st.incoming.push_back(event);
        st.wake_driver();
        let moved = st.last_from.is_some_and(|last| last != from);
        st.last_from = Some(from);
        moved
    }

    /// The peer's address (it changes when the peer migrates).
    pub fn remote_address(&self) -> SocketAddr {
        self.0.borrow().inner.remote_address()
    }

    /// The TLS server name the client asked for, and the ALPN protocol.
    pub fn handshake(&self) -> (Option<String>, Option<Vec<u8>>) {
        let st = self.0.borrow();
        let data = st
            .inner
            .crypto_session()
            .handshake_data()
            .and_then(|d| d.downcast::<quinn_proto::crypto::rustls::HandshakeData>().ok());
        match data {
            Some(d) => (d.server_name, d.protocol),
            None => (None, None),
        }
    }

    /// The largest datagram the peer accepts (`None`: it takes no QUIC
    /// datagrams, RFC 9221).
    pub fn max_datagram_size(&self) -> Option<usize> {
        self.0.borrow_mut().inner.datagrams().max_size()
    }

    /// Queues a QUIC datagram (RFC 9221). Datagrams are unreliable: when
    /// the send buffer is full the oldest queued one is dropped, never the
    /// caller blocked; `TooLarge` and `UnsupportedByPeer` are the caller's
    /// to count.
    pub fn send_datagram(&self, data: Bytes) -> Result<(), quinn_proto::SendDatagramError> {
        let mut st = self.0.borrow_mut();
        st.inner.datagrams().send(data, true)?;
        st.wake_driver();
        Ok(())
    }

    /// Every QUIC datagram received and not read yet, in order (empty:
    /// waits for the next one).
    pub fn poll_datagrams(&self, cx: &mut Context<'_>, out: &mut Vec<Bytes>) -> Poll<Result<(), ConnectionError>> {
        let mut st = self.0.borrow_mut();
        while let Some(d) = st.inner.datagrams().recv() {
            out.push(d);
        }
        if !out.is_empty() {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = &st.lost {
            return Poll::Ready(Err(e.clone()));
        }
        st.datagrams = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Sets the connection's receive credit (MAX_DATA follows if it grew).
    pub fn set_receive_window(&self, bytes: u64) {
        let mut st = self.0.borrow_mut();
        st.inner.set_receive_window(VarInt::from_u64(bytes).unwrap_or(VarInt::MAX));
        st.wake_driver();
    }

    /// quinn-proto's counters of this connection (RTT, window, losses).
    pub fn stats(&self) -> quinn_proto::ConnectionStats {
        self.0.borrow().inner.stats()
    }

    /// Why the connection ended, if it did.
    pub fn close_reason(&self) -> Option<ConnectionError> {
        self.0.borrow().lost.clone()
    }

    /// Waits for the handshake to complete.
    pub async fn connected(&self) -> Result<(), ConnectionError> {
        std::future::poll_fn(|cx| {
            let mut st = self.0.borrow_mut();
            if let Some(e) = &st.lost {
                return Poll::Ready(Err(e.clone()));
            }
            if st.connected {
                return Poll::Ready(Ok(()));
            }
            st.on_connected = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The next stream the peer opened in `dir`.
    fn poll_accept(&self, cx: &mut Context<'_>, dir: Dir) -> Poll<Result<StreamId, ConnectionError>> {
        let mut st = self.0.borrow_mut();
        if let Some(e) = &st.lost {
            return Poll::Ready(Err(e.clone()));
        }
        if let Some(id) = st.inner.streams().accept(dir) {
            // Accepting may raise the peer's stream limit: tell it.
            st.wake_driver();
            return Poll::Ready(Ok(id));
        }
        st.accepting[dir as usize] = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The next bidirectional stream the peer opened.
    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        let id = std::future::poll_fn(|cx| self.poll_accept(cx, Dir::Bi)).await?;
        Ok((SendStream::new(self.clone(), id), RecvStream::new(self.clone(), id)))
    }

    /// The next unidirectional stream the peer opened.
    pub async fn accept_uni(&self) -> Result<RecvStream, ConnectionError> {
        let id = std::future::poll_fn(|cx| self.poll_accept(cx, Dir::Uni)).await?;
        Ok(RecvStream::new(self.clone(), id))
    }

    fn poll_open(&self, cx: &mut Context<'_>, dir: Dir) -> Poll<Result<StreamId, ConnectionError>> {
        let mut st = self.0.borrow_mut();
        if let Some(e) = &st.lost {
            return Poll::Ready(Err(e.clone()));
        }
        if let Some(id) = st.inner.streams().open(dir) {
            return Poll::Ready(Ok(id));
        }
        st.opening[dir as usize] = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Opens a unidirectional stream (waits while the peer's limit is reached).
    pub async fn open_uni(&self) -> Result<SendStream, ConnectionError> {
        let id = std::future::poll_fn(|cx| self.poll_open(cx, Dir::Uni)).await?;
        Ok(SendStream::new(self.clone(), id))
    }

    /// Opens a bidirectional stream (waits while the peer's limit is reached).
    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        let id = std::future::poll_fn(|cx| self.poll_open(cx, Dir::Bi)).await?;
        Ok((SendStream::new(self.clone(), id), RecvStream::new(self.clone(), id)))
    }

    /// Resets the sending half of stream `id` (RESET_STREAM with `code`)
    /// wherever its [`SendStream`] is; a later reset or drop of it is a
    /// no-op.
    pub fn reset_send(&self, id: u64, code: u64) {
        let mut st = self.0.borrow_mut();
        let Ok(id) = VarInt::from_u64(id).map(StreamId::from) else { return };
        let _ = st.inner.send_stream(id).reset(VarInt::from_u64(code).unwrap_or(VarInt::MAX));
        st.wake_driver();
    }

    /// Closes the connection with an application error code and reason
    /// (CONNECTION_CLOSE); streams fail from here on.
    pub fn close(&self, code: u64, reason: &[u8]) {
        let mut st = self.0.borrow_mut();
        let code = VarInt::from_u64(code).unwrap_or(VarInt::MAX);
        st.inner.close(Instant::now(), code, Bytes::copy_from_slice(reason));
        st.wake_driver();
    }
}

/// Drives one connection until it is drained, then forgets it in the
/// endpoint.
pub(crate) async fn drive(conn: Connection, ep: Rc<Shared>) {
    let mut timer = glommio::timer::Timer::new(Duration::from_secs(3600));
    let mut armed: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let handle;
        let mut more = false;
        let mut drained = false;
        {
            let mut guard = conn.0.borrow_mut();
            let st = &mut *guard;
            handle = st.handle;
            st.dirty = false;
            while let Some(ev) = st.incoming.pop_front() {
                st.inner.handle_event(ev);
            }
            if st.inner.poll_timeout().is_some_and(|t| t <= now) {
                st.inner.handle_timeout(now);
            }
        }
        // Transmits: built into the core's buffer and sent at once; only a
        // full socket buffer makes the driver wait (holding no borrow).
        for sent in 0.. {
            if sent == TRANSMITS_PER_PASS {
                more = true;
                break;
            }
            let blocked = {
                let mut st = conn.0.borrow_mut();
                let mut buf = ep.tx_buf.borrow_mut();
                buf.clear();
                // One GSO send carries at most 64 KiB (a UDP datagram's
                // limit): more segments of this path's size fail whole.
                let max = ep.max_datagrams.get().min((usize::from(u16::MAX) / usize::from(st.inner.current_mtu())).max(1));
                match st.inner.poll_transmit(now, max, &mut buf) {
                    None => break,
                    Some(t) => ep.try_send(&t, &buf),
                }
            };
            if let Some((t, owned)) = blocked {
                ep.send_owned(&t, &owned).await;
            }
        }
        {
            let mut guard = conn.0.borrow_mut();
            let st = &mut *guard;
            while let Some(ev) = st.inner.poll_endpoint_events() {
                drained |= ev.is_drained();
                if let Some(back) = ep.endpoint.borrow_mut().handle_event(handle, ev) {
                    st.inner.handle_event(back);
                    more = true;
                }
            }
            while let Some(ev) = st.inner.poll() {
                st.dispatch(ev);
            }
            if st.counted_handshake && (st.connected || st.lost.is_some() || drained) {
                st.counted_handshake = false;
                ep.handshaking.set(ep.handshaking.get().saturating_sub(1));
            }
            if drained || st.inner.is_drained() {
                if st.lost.is_none() {
                    st.lost = Some(ConnectionError::LocallyClosed);
                }
                st.wake_all();
                drained = true;
            }
        }
        if drained {
            ep.forget(handle);
            return;
        }
        if more {
            glommio::executor().yield_if_needed().await;
            continue;
        }
        // Sleep until a stream task or a datagram wakes us, or the timer.
        std::future::poll_fn(|cx| {
            let mut st = conn.0.borrow_mut();
            if st.dirty || !st.incoming.is_empty() {
                return Poll::Ready(());
            }
            st.driver = Some(cx.waker().clone());
            match st.inner.poll_timeout() {
                Some(t) => {
                    let now = Instant::now();
                    if t <= now {
                        return Poll::Ready(());
                    }
                    if armed != Some(t) {
                        timer.reset(t - now);
                        armed = Some(t);
                    }
                    std::pin::Pin::new(&mut timer).poll(cx).map(|_| armed = None)
                }
                None => Poll::Pending,
            }
        })
        .await;
    }
}

use std::future::Future as _;
