//! Relay: move bytes both ways between the downstream and the upstream until
//! both directions end, a reset ends everything, or the relay goes idle.
//!
//! ```text
//!  downstream ──(d2u: splice or copy)──► upstream
//!  downstream ◄─(u2d: splice or copy)─── upstream
//! ```
//!
//! * Cleartext TCP on both legs uses [`splice`] (zero-copy through a pipe);
//!   any other pair uses [`copy`] through a pooled buffer.
//! * FIN on one side becomes `shutdown(SHUT_WR)` (TLS: close_notify first) on
//!   the other; each direction ends independently (half-close).
//! * A reset on one side (or a write that fails because the peer is gone) is
//!   propagated as a reset on the other: SO_LINGER 0, then close.
//! * One idle timer covers both directions: it fires only when no byte moved
//!   either way for `idle` (checked in quarters of it, so the relay ends
//!   after `idle` to `1.25 × idle` of silence: a moved byte only sets a
//!   flag, with no clock read on the hot path).

pub mod buffers;
pub mod copy;
pub mod h2;
pub mod h3;
mod idle;
pub mod tcp_leg;
pub mod session;
pub mod splice;

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::sync::Arc;
use std::time::Duration;

use glommio::net::TcpStream;

pub use idle::Activity;
use idle::until_idle;

use crate::stats::{self, CoreStats};
use crate::tls::Downstream;

/// How one direction ended.
#[derive(Debug)]
pub enum DirEnd {
    /// The source sent FIN; the destination was shut down for writing.
    Eof,
    /// The source reset (or failed); the reset goes to the other side.
    SourceReset(io::Error),
    /// Writing to the destination failed: the destination is gone.
    DestinationGone(io::Error),
}

impl DirEnd {
    fn is_abort(&self) -> bool {
        !matches!(self, DirEnd::Eof)
    }
}

/// How the whole relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both directions saw FIN (or the upstream finished a response).
    Closed,
    /// A reset was propagated from one leg to the other.
    Reset,
    /// No byte moved for the idle timeout.
    IdleTimeout,
}

impl RelayEnd {
    /// Its name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RelayEnd::Closed => "closed",
            RelayEnd::Reset => "reset",
            RelayEnd::IdleTimeout => "idle_timeout",
        }
    }
}

/// Whose event ended a relay: the side whose FIN came first, or whose reset
/// (or vanishing) aborted it; the edge for an idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// The client's side.
    Downstream,
    /// The upstream's side.
    Upstream,
    /// This edge (idle timeout, or a relay that could not be set up).
    Edge,
}

impl EndedBy {
    /// Its name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EndedBy::Downstream => "downstream",
            EndedBy::Upstream => "upstream",
            EndedBy::Edge => "edge",
        }
    }
}

/// How `both` ended: whether a reset was propagated, and by whom.
#[derive(Debug, Clone, Copy)]
struct Ended {
    reset: bool,
    by: EndedBy,
}

/// Relay outcome for the log line and counters.
#[derive(Debug)]
pub struct Report {
    /// Bytes downstream → upstream.
    pub down_to_up: u64,
    /// Bytes upstream → downstream.
    pub up_to_down: u64,
    /// How it ended.
    pub end: RelayEnd,
    /// Who ended it.
    pub ended_by: EndedBy,
    /// Whether the splice path was used.
    pub spliced: bool,
}

/// Relay options.
#[derive(Debug, Clone, Copy)]
pub struct RelayOptions {
    /// Close after this long without traffic.
    pub idle: Duration,
    /// Use splice for cleartext pairs.
    pub splice: bool,
    /// End the relay as soon as the upstream has finished sending (one
    /// request per upstream connection: the response is complete).
    pub end_on_upstream_eof: bool,
}

/// Byte counter of one direction: all bytes, and those of them that went
/// through a user-space buffer.
#[derive(Debug, Default)]
pub struct Moved {
    total: Cell<u64>,
    copied: Cell<u64>,
}

impl Moved {
    /// Adds `n` bytes moved without a user-space copy (or by the copy path,
    /// where every byte is copied anyway).
    pub fn add(&self, n: usize) {
        self.total.set(self.total.get() + n as u64);
    }
    /// Adds `n` bytes copied through a buffer on the splice path.
    pub fn add_copied(&self, n: usize) {
        self.add(n);
        self.copied.set(self.copied.get() + n as u64);
    }
    fn get(&self) -> u64 {
        self.total.get()
    }
}

/// The two legs of a relay, set up before the relay's future is made.
// The spliced pair is the common case and needs its bytes either way;
// boxing it would add an allocation to every relay.
#[allow(clippy::large_enum_variant)]
enum Legs {
    Spliced(splice::Pair),
    Copied {
        dr: futures_util::io::ReadHalf<Downstream>,
        dw: futures_util::io::WriteHalf<Downstream>,
        ur: futures_util::io::ReadHalf<TcpStream>,
        uw: futures_util::io::WriteHalf<TcpStream>,
    },
    /// Splice set-up failed: the relay ends at once.
    Failed,
}

/// Relays until done. Both streams are closed when the future ends.
///
/// Not an `async fn`: the legs are set up here, and the future only holds
/// them once (an async fn keeps its arguments in their own slots even after
/// they moved into the legs), and borrows them.
pub fn relay(
    down: Downstream,
    up: TcpStream,
    opts: RelayOptions,
    stats: Arc<CoreStats>,
) -> impl Future<Output = Report> {
    let down_fd = down.tcp().as_raw_fd();
    let up_fd = up.as_raw_fd();
    let spliced = opts.splice && matches!(down, Downstream::Plain(_));
    let mut legs = match down {
        Downstream::Plain(down) if opts.splice => match splice::Pair::new(down, up) {
            Ok(pair) => Legs::Spliced(pair),
            Err(e) => {
                tracing::warn!(error = %e, "splice set-up failed; closing relay");
                Legs::Failed
            }
        },
        down => {
            let (dr, dw) = futures_util::io::AsyncReadExt::split(down);
            let (ur, uw) = futures_util::io::AsyncReadExt::split(up);
            Legs::Copied { dr, dw, ur, uw }
        }
    };
    async move {
        let activity = Activity::new();
        let (d2u, u2d) = (Moved::default(), Moved::default());
        // Pinned where it is made: `pin!` on an existing binding moves the
        // future into a second slot of this fn's state, and both would stay.
        let work = pin!(async {
            match &mut legs {
                Legs::Spliced(pair) => {
                    both(
                        pin!(pair.d2u(&activity, &d2u)),
                        pin!(pair.u2d(&activity, &u2d)),
                        opts,
                        linger_zero(down_fd),
                        linger_zero(up_fd),
                    )
                    .await
                }
                // Boxed: the copy path's futures (TLS halves) are several
                // times the splice path's, and a future's state is the union
                // of its branches: inline, every idle spliced relay would
                // carry them.
                Legs::Copied { dr, dw, ur, uw } => {
                    Box::pin(async {
                        both(
                            pin!(copy::direction(dr, uw, &activity, &d2u)),
                            pin!(copy::direction(ur, dw, &activity, &u2d)),
                            opts,
                            linger_zero(down_fd),
                            linger_zero(up_fd),
                        )
                        .await
                    })
                    .await
                }
                Legs::Failed => Ended { reset: false, by: EndedBy::Edge },
            }
        });
        let outcome = until_idle(work, &activity, opts.idle).await;
        book(outcome, &d2u, &u2d, spliced, &stats)
    }
}

/// Forwards one ordinary request: the rest of its body (as `framing`
/// delimits it) up, its one response down (with `Alt-Svc` added when the
/// listener serves HTTP/3) (framed: the relay ends with it,
/// even if the upstream ignores `Connection: close`). Copy path: this is the
/// side path of the edge.
pub async fn forward_request(
    down: Downstream,
    up: TcpStream,
    request: (&str, crate::message::BodyFraming, Option<&str>),
    max_head: usize,
    opts: RelayOptions,
    stats: &CoreStats,
) -> Report {
    let (method, framing, alt_svc) = request;
    let activity = Activity::new();
    let (d2u, u2d) = (Moved::default(), Moved::default());
    let (down_fd, up_fd) = (down.tcp().as_raw_fd(), up.as_raw_fd());
    let (dr, dw) = futures_util::io::AsyncReadExt::split(down);
    let (ur, uw) = futures_util::io::AsyncReadExt::split(up);
    let opts = RelayOptions {
        end_on_upstream_eof: true,
        ..opts
    };
    let work = pin!(async {
        both(
            pin!(copy::body(framing, dr, uw, &activity, &d2u)),
            pin!(copy::response((method, alt_svc), max_head, ur, dw, &activity, &u2d)),
            opts,
            linger_zero(down_fd),
            linger_zero(up_fd),
        )
        .await
    });
    let outcome = until_idle(work, &activity, opts.idle).await;
    book(outcome, &d2u, &u2d, false, stats)
}

/// Books a relay's outcome (`None`: idle timeout; `Some(reset)`) in the
/// counters. Not an async fn taking the relay future: an async fn keeps its
/// future argument and the copy it awaits both in its state, which every
/// idle relay would carry.
fn book(
    outcome: Option<Ended>,
    d2u: &Moved,
    u2d: &Moved,
    spliced: bool,
    stats: &CoreStats,
) -> Report {
    let (end, ended_by) = match outcome {
        None => {
            stats::add(&stats.idle_timeouts, 1);
            (RelayEnd::IdleTimeout, EndedBy::Edge)
        }
        Some(Ended { reset: true, by }) => {
            stats::add(&stats.resets_propagated, 1);
            (RelayEnd::Reset, by)
        }
        Some(Ended { reset: false, by }) => (RelayEnd::Closed, by),
    };
    stats.families.relay_ended(spliced, end.as_str());
    let total = d2u.get() + u2d.get();
    if spliced {
        let copied = d2u.copied.get() + u2d.copied.get();
        stats::add(&stats.bytes_spliced, total - copied);
        stats::add(&stats.bytes_copied, copied);
    } else {
        stats::add(&stats.bytes_copied, total);
    }
    stats::add(&stats.bytes_downstream_to_upstream, d2u.get());
    stats::add(&stats.bytes_upstream_to_downstream, u2d.get());
    Report {
        down_to_up: d2u.get(),
        up_to_down: u2d.get(),
        end,
        ended_by,
        spliced,
    }
}

/// One end of a relay that is not a cleartext-TCP pair: an h2 stream, a TLS
/// or TCP connection. Everything here goes through the copy path.
pub enum Leg {
    /// The downstream connection (after its h1 handshake).
    Down(Downstream),
    /// An upstream TCP connection.
    Tcp(TcpStream),
    /// An h2 stream (downstream extended CONNECT, or an h2c upstream stream).
    H2(h2::H2Stream),
    /// An h3 request stream (downstream extended or plain CONNECT).
    H3(h3::H3Stream),
}

type Reader = Box<dyn futures_lite::io::AsyncRead + Unpin>;
type Writer = Box<dyn futures_lite::io::AsyncWrite + Unpin>;
type Resetter = Box<dyn FnOnce()>;

impl Leg {
    fn halves(self) -> (Reader, Writer, Resetter) {
        match self {
            Leg::Down(d) => {
                let fd = d.tcp().as_raw_fd();
                let (r, w) = futures_util::io::AsyncReadExt::split(d);
                (Box::new(r), Box::new(w), Box::new(linger_zero(fd)))
            }
            Leg::Tcp(t) => {
                let fd = t.as_raw_fd();
                let (r, w) = futures_util::io::AsyncReadExt::split(t);
                (Box::new(r), Box::new(w), Box::new(linger_zero(fd)))
            }
            Leg::H2(s) => {
                let (r, w, reset) = s.split();
                (Box::new(r), Box::new(w), Box::new(move || reset.reset()))
            }
            Leg::H3(s) => {
                let (r, w, reset) = s.split();
                (Box::new(r), Box::new(w), Box::new(move || reset.reset()))
            }
        }
    }
}

/// Bytes that arrived with a handshake and must go first: client early data
/// after its head (to the upstream), upstream bytes after its answer (to the
/// downstream).
#[derive(Debug, Default)]
pub struct Prelude {
    /// Written to the upstream before relaying.
    pub to_up: Vec<u8>,
    /// Written to the downstream before relaying.
    pub to_down: Vec<u8>,
}

/// Relays between any two legs through the copy path, with the same
/// half-close, reset and idle rules as [`relay`].
pub async fn relay_legs(
    down: Leg,
    up: Leg,
    prelude: Prelude,
    opts: RelayOptions,
    stats: &CoreStats,
) -> Report {
    match (down, up) {
        (Leg::H3(h3), Leg::Tcp(tcp)) if h3.capsules.is_none() => {
            relay_h3_tcp(h3, tcp, true, prelude, opts, stats).await
        }
        (Leg::Tcp(tcp) | Leg::Down(Downstream::Plain(tcp)), Leg::H3(h3)) if h3.capsules.is_none() => {
            relay_h3_tcp(h3, tcp, false, prelude, opts, stats).await
        }
        (down, up) => relay_copied(down, up, prelude, opts, stats).await,
    }
}

/// [`relay_legs`] between an h3 stream (the downstream if `h3_down`) and
/// cleartext TCP, through [`tcp_leg`] (the TCP side on the engine's
/// readiness; reads of 4 KiB or more go to quinn-proto without a copy).
async fn relay_h3_tcp(
    h3: h3::H3Stream,
    tcp: TcpStream,
    h3_down: bool,
    prelude: Prelude,
    opts: RelayOptions,
    stats: &CoreStats,
) -> Report {
    let activity = Activity::new();
    let (d2u, u2d) = (Moved::default(), Moved::default());
    let (reader, writer, reset) = h3.split();
    let reset_h3 = move || reset.reset();
    let reset_tcp = linger_zero(tcp.as_raw_fd());
    let (to_h3, to_tcp) = if h3_down {
        (prelude.to_down, prelude.to_up)
    } else {
        (prelude.to_up, prelude.to_down)
    };
    let (h3_in, h3_out) = if h3_down { (&d2u, &u2d) } else { (&u2d, &d2u) };
    let outcome = {
        let from_h3 = pin!(tcp_leg::stream_to_tcp(reader, &tcp, to_tcp, &activity, h3_in));
        let to_h3 = pin!(tcp_leg::tcp_to_h3(&tcp, writer, to_h3, &activity, h3_out));
        let work = pin!(async {
            if h3_down {
                both(from_h3, to_h3, opts, reset_h3, reset_tcp).await
            } else {
                both(to_h3, from_h3, opts, reset_tcp, reset_h3).await
            }
        });
        until_idle(work, &activity, opts.idle).await
    };
    book(outcome, &d2u, &u2d, false, stats)
}

/// [`relay_legs`] through the copy path, for any two legs.
async fn relay_copied(
    down: Leg,
    up: Leg,
    prelude: Prelude,
    opts: RelayOptions,
    stats: &CoreStats,
) -> Report {
    let activity = Activity::new();
    let (d2u, u2d) = (Moved::default(), Moved::default());
    let (dr, dw, reset_down) = down.halves();
    let (ur, uw, reset_up) = up.halves();
    let work = pin!(async {
        both(
            pin!(copy::direction_after(prelude.to_up, dr, uw, &activity, &d2u)),
            pin!(copy::direction_after(prelude.to_down, ur, dw, &activity, &u2d)),
            opts,
            reset_down,
            reset_up,
        )
        .await
    });
    let outcome = until_idle(work, &activity, opts.idle).await;
    book(outcome, &d2u, &u2d, false, stats)
}

fn linger_zero(fd: RawFd) -> impl FnOnce() {
    move || {
        let _ = crate::sys::set_linger_zero(fd);
    }
}

/// Runs both directions; stops early on an abort in either, or when the
/// upstream finished and `end_on_upstream_eof` is set. On an abort, resets
/// the leg that has not failed yet (TCP: SO_LINGER 0 armed while the socket
/// is still open, so that dropping it sends RST; h2: RST_STREAM). Returns
/// whether a reset was propagated, and whose event ended the relay.
///
/// The directions come pinned by the caller, made in place: pinning them
/// here would move each into a second slot of this fn's state.
async fn both(
    mut d2u: Pin<&mut impl Future<Output = DirEnd>>,
    mut u2d: Pin<&mut impl Future<Output = DirEnd>>,
    opts: RelayOptions,
    down_reset: impl FnOnce(),
    up_reset: impl FnOnce(),
) -> Ended {
    let (mut a, mut b) = (None, None);
    // Whose event ended the first direction to end.
    let mut first = None;
    std::future::poll_fn(|cx| {
        if a.is_none() {
            if let Poll::Ready(r) = d2u.as_mut().poll(cx) {
                first = first.or(Some(culprit(&r, EndedBy::Downstream, EndedBy::Upstream)));
                a = Some(r);
            }
        }
        if b.is_none() {
            if let Poll::Ready(r) = u2d.as_mut().poll(cx) {
                first = first.or(Some(culprit(&r, EndedBy::Upstream, EndedBy::Downstream)));
                b = Some(r);
            }
        }
        let aborted =
            a.as_ref().is_some_and(DirEnd::is_abort) || b.as_ref().is_some_and(DirEnd::is_abort);
        let done = a.is_some() && b.is_some();
        let response_done = opts.end_on_upstream_eof && b.is_some();
        if aborted || done || response_done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    // d2u reads downstream / writes upstream; u2d the reverse.
    let reset_up =
        matches!(a, Some(DirEnd::SourceReset(_))) || matches!(b, Some(DirEnd::DestinationGone(_)));
    let reset_down =
        matches!(b, Some(DirEnd::SourceReset(_))) || matches!(a, Some(DirEnd::DestinationGone(_)));
    if reset_up {
        up_reset();
    }
    if reset_down {
        down_reset();
    }
    if let Some(e) = [&a, &b].into_iter().flatten().find_map(|d| match d {
        DirEnd::SourceReset(e) | DirEnd::DestinationGone(e) => Some(e),
        DirEnd::Eof => None,
    }) {
        tracing::debug!(error = %e, "relay aborted");
    }
    // An abort is blamed on the side that aborted, even if the other side's
    // FIN came first.
    let by = match (&a, &b) {
        (Some(d), _) if d.is_abort() => culprit(d, EndedBy::Downstream, EndedBy::Upstream),
        (_, Some(d)) if d.is_abort() => culprit(d, EndedBy::Upstream, EndedBy::Downstream),
        _ => first.unwrap_or(EndedBy::Edge),
    };
    Ended { reset: reset_up || reset_down, by }
}

/// Whose event ended a direction that reads from `source` and writes to
/// `destination`.
fn culprit(end: &DirEnd, source: EndedBy, destination: EndedBy) -> EndedBy {
    match end {
        DirEnd::Eof | DirEnd::SourceReset(_) => source,
        DirEnd::DestinationGone(_) => destination,
    }
}

/// Whether an I/O error means the peer reset or vanished.
pub fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}
