//! What one connection does in each mode. Every loop is bounded by the run's
//! deadline and, when given, its request budget.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};

use crate::session::{establish, Failure, Session, Target, Via};
use crate::ws;

/// Load modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Mode {
    /// Echo round trips of `size` bytes over an upgraded stream.
    Echo,
    /// Full-duplex bulk transfer.
    Bulk,
    /// Connection + handshake + one echo + close.
    Setup,
    /// Open and hold connections.
    Idle,
    /// CONNECT-UDP sessions keeping `window` HTTP datagrams in flight.
    Datagrams,
}

/// What one core runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Mode.
    pub mode: Mode,
    /// Handshake.
    pub via: Via,
    /// Where and how to connect.
    pub target: Target,
    /// Message size.
    pub size: usize,
    /// Run length.
    pub duration: Duration,
    /// Operations for this core (None = until the deadline).
    pub requests: Option<u64>,
    /// Operations per second per connection (open loop), if constant-rate.
    pub rate_per_conn: Option<f64>,
    /// Connections on this core.
    pub conns: usize,
    /// Index of this core's first connection among all connections.
    pub first_conn: usize,
    /// Distinct 127.0.0.x source addresses to spread connections over.
    pub sources: usize,
    /// connect-udp: datagrams in flight per session.
    pub window: usize,
}

/// Live counters the main thread reads for the progress line.
#[derive(Debug, Default)]
pub struct Live {
    /// Completed operations.
    pub ops: AtomicU64,
    /// Payload bytes received.
    pub bytes: AtomicU64,
    /// Failures.
    pub errors: AtomicU64,
}

/// What one core measured.
#[derive(Debug)]
pub struct CoreResult {
    /// Latencies in µs.
    pub hist: hdrhistogram::Histogram<u64>,
    /// Completed operations.
    pub ops: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Failures by kind.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Connections that completed the handshake.
    pub established: u64,
}

impl CoreResult {
    fn new() -> CoreResult {
        CoreResult {
            hist: hdrhistogram::Histogram::new_with_bounds(1, 120_000_000, 3)
                .unwrap_or_else(|_| unreachable!("static bounds are valid")),
            ops: 0,
            bytes: 0,
            errors: Default::default(),
            established: 0,
        }
    }
}

pub(crate) struct Ctx {
    pub(crate) plan: Plan,
    live: std::sync::Arc<Live>,
    pub(crate) result: RefCell<CoreResult>,
    deadline: Instant,
    budget: Cell<Option<u64>>,
    payload: Vec<u8>,
}

impl Ctx {
    pub(crate) fn fail(&self, f: Failure) {
        self.live.errors.fetch_add(1, Ordering::Relaxed);
        *self.result.borrow_mut().errors.entry(f.kind()).or_default() += 1;
    }
    pub(crate) fn done(&self, start: Instant, bytes: usize) {
        let us = start.elapsed().as_micros().max(1) as u64;
        let mut r = self.result.borrow_mut();
        let _ = r.hist.record(us.min(120_000_000));
        r.ops += 1;
        r.bytes += bytes as u64;
        drop(r);
        self.live.ops.fetch_add(1, Ordering::Relaxed);
        self.live.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    /// Takes one operation from the budget; false when the run is over.
    pub(crate) fn take(&self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        match self.budget.get() {
            None => true,
            Some(0) => false,
            Some(n) => {
                self.budget.set(Some(n - 1));
                true
            }
        }
    }
    fn source(&self, i: usize) -> Option<IpAddr> {
        (self.plan.sources > 1)
            .then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % self.plan.sources) as u8)))
    }
}

/// Runs this core's share of the load and returns what it measured.
pub async fn run_core(plan: Plan, live: std::sync::Arc<Live>) -> CoreResult {
    let payload: Vec<u8> = (0..plan.size).map(|_| rand::random::<u8>()).collect();
    let ctx = Rc::new(Ctx {
        deadline: Instant::now() + plan.duration,
        budget: Cell::new(plan.requests),
        plan,
        live,
        result: RefCell::new(CoreResult::new()),
        payload,
    });
    let tasks: Vec<_> = (0..ctx.plan.conns)
        .map(|i| {
            let ctx = ctx.clone();
            glommio::spawn_local(async move {
                let conn = ctx.plan.first_conn + i;
                match ctx.plan.mode {
                    Mode::Echo => echo(&ctx, conn).await,
                    Mode::Bulk => bulk(&ctx, conn).await,
                    Mode::Setup => setup(&ctx, conn).await,
                    Mode::Idle => idle(&ctx, conn).await,
                    Mode::Datagrams => crate::datagrams::session(&ctx, conn).await,
                }
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
    match Rc::try_unwrap(ctx) {
        Ok(c) => c.result.into_inner(),
        Err(c) => std::mem::replace(&mut *c.result.borrow_mut(), CoreResult::new()),
    }
}

/// Open-loop pacing: waits for the next intended send time and returns it,
/// so that latency counts from when the request should have gone out (no
/// coordinated omission).
async fn pace(rate: Option<f64>, next: &mut Instant) -> Instant {
    match rate {
        None => Instant::now(),
        Some(r) => {
            let now = Instant::now();
            if *next > now {
                glommio::timer::sleep(*next - now).await;
            }
            let intended = *next;
            *next += Duration::from_secs_f64(1.0 / r);
            intended
        }
    }
}

/// When an open-loop connection sends its first operation: spread over one
/// period by a golden-ratio sequence, so that 256 connections established in
/// the same millisecond do not fire in lock-step bursts (which would measure
/// the burst's queue, not the proxy, in p99).
fn first_tick(rate: Option<f64>, conn: usize) -> Instant {
    let now = Instant::now();
    match rate {
        Some(r) if r > 0.0 => {
            let phase = (conn as f64 * 0.618_033_988_749_895).fract();
            now + Duration::from_secs_f64(phase / r)
        }
        _ => now,
    }
}

async fn echo(ctx: &Ctx, conn: usize) {
    let mut sess = match establish(
        &ctx.plan.target,
        ctx.plan.via,
        conn,
        ctx.source(conn),
        &ctx.payload,
    )
    .await
    {
        Ok(s) => s,
        Err(f) => return ctx.fail(f),
    };
    ctx.result.borrow_mut().established += 1;
    let mut next = first_tick(ctx.plan.rate_per_conn, conn);
    let mut acc = std::mem::take(&mut sess.leftover);
    let mut wire = Vec::with_capacity(ctx.payload.len() + 14);
    let mut first = true;
    while ctx.take() {
        let start = pace(ctx.plan.rate_per_conn, &mut next).await;
        let already_sent = first && sess.pending.is_some();
        first = false;
        if let Err(f) = crate::with_timeout(
            ctx.plan.target.timeout,
            one_echo(ctx, &mut sess, &mut acc, &mut wire, already_sent),
        )
        .await
        .unwrap_or(Err(Failure::Timeout))
        {
            return ctx.fail(f);
        }
        ctx.done(start, ctx.payload.len());
    }
    let _ = sess.stream.close().await;
}

async fn one_echo(
    ctx: &Ctx,
    sess: &mut Session,
    acc: &mut Vec<u8>,
    wire: &mut Vec<u8>,
    already_sent: bool,
) -> Result<(), Failure> {
    let io = |e: std::io::Error| Failure::Io(format!("{:?}", e.kind()));
    let framed = ctx.plan.via.framed();
    if !already_sent {
        if framed {
            wire.clear();
            ws::encode_client_frame(&ctx.payload, rand::random(), wire);
            sess.stream.write_all(wire).await.map_err(io)?;
        } else {
            sess.stream.write_all(&ctx.payload).await.map_err(io)?;
        }
    }
    loop {
        if framed {
            if let Some((hl, len, _)) = ws::decode_server_header(acc) {
                if acc.len() >= hl + len {
                    if len != ctx.payload.len() || acc[hl..hl + len] != ctx.payload[..] {
                        return Err(Failure::Mismatch);
                    }
                    acc.drain(..hl + len);
                    return Ok(());
                }
            }
        } else if acc.len() >= ctx.payload.len() {
            if acc[..ctx.payload.len()] != ctx.payload[..] {
                return Err(Failure::Mismatch);
            }
            acc.drain(..ctx.payload.len());
            return Ok(());
        }
        fill(sess, acc).await?;
    }
}

/// `GET` with `Connection: close`; the response must be a 2xx read to EOF.
async fn one_request(ctx: &Ctx, sess: &mut Session) -> Result<(), Failure> {
    let io = |e: std::io::Error| Failure::Io(format!("{:?}", e.kind()));
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        ctx.plan.target.path, ctx.plan.target.host
    );
    sess.stream.write_all(req.as_bytes()).await.map_err(io)?;
    // Done at the end of the response (like wrk), not at the server's FIN:
    // waiting for the close would add the server's teardown to every setup.
    let mut resp = Vec::new();
    loop {
        let n = sess.stream.read(&mut sess.buf).await.map_err(io)?;
        if n == 0 {
            break;
        }
        resp.extend_from_slice(&sess.buf[..n]);
        if response_complete(&resp) {
            break;
        }
    }
    match resp.get(9..10) {
        Some(b"2") if resp.starts_with(b"HTTP/1.") => Ok(()),
        _ => Err(Failure::Handshake("not a 2xx answer".into())),
    }
}

/// Whether `buf` holds a whole response with a Content-Length body (other
/// framings end at EOF).
fn response_complete(buf: &[u8]) -> bool {
    let mut hs = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut hs);
    let Ok(httparse::Status::Complete(head)) = r.parse(buf) else {
        return false;
    };
    let len = r
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    len.is_some_and(|n| buf.len() >= head + n)
}

/// Reads once into `acc`, completing a deferred (`ed`) 101 first.
async fn fill(sess: &mut Session, acc: &mut Vec<u8>) -> Result<(), Failure> {
    let n = sess
        .stream
        .read(&mut sess.buf)
        .await
        .map_err(|e| Failure::Io(format!("{:?}", e.kind())))?;
    let chunk = &sess.buf[..n];
    if n == 0 {
        return Err(Failure::Io("closed".into()));
    }
    match &mut sess.pending {
        Some(reader) => {
            if let Some(rest) = reader
                .feed(chunk)
                .map_err(|e| Failure::Handshake(e.to_string()))?
            {
                acc.extend_from_slice(&rest);
                sess.pending = None;
            }
        }
        None => acc.extend_from_slice(chunk),
    }
    Ok(())
}

async fn bulk(ctx: &Ctx, conn: usize) {
    // Over a WebSocket upgrade the bytes pushed are not framed: proxies relay
    // the upgraded stream without parsing frames, and the origin echoes raw.
    let sess = match establish(&ctx.plan.target, ctx.plan.via, conn, ctx.source(conn), &[]).await {
        Ok(s) => s,
        Err(f) => return ctx.fail(f),
    };
    ctx.result.borrow_mut().established += 1;
    let start = Instant::now();
    let received = sess.leftover.len();
    let mut buf = sess.buf;
    // An h3 stream takes the chunk as it is (no copy into quinn-proto's
    // send buffer): the generator's own cost stays out of the h3 rows.
    let (mut r, mut w, _reset): (Box<dyn futures_lite::AsyncRead + Unpin>, BulkWriter, _) =
        match sess.stream {
            crate::net::Stream::H3(io) => {
                let (r, w, reset) = io.into_parts();
                (Box::new(r), BulkWriter::H3(w), Some(reset))
            }
            other => {
                let (r, w) = futures_lite::io::split(other);
                (Box::new(r), BulkWriter::Io(w), None)
            }
        };
    let chunk = bytes::Bytes::from(vec![0x5au8; 64 * 1024]);
    let deadline = ctx.deadline;
    // Both sides give up after 5 s without progress, so a relay that stalls
    // is reported (as a timeout) instead of hanging the run.
    let writer = async {
        while Instant::now() < deadline {
            match crate::with_timeout(Duration::from_secs(5), w.push(&chunk)).await {
                Some(Ok(())) => {}
                Some(Err(_)) => return false,
                None => return true,
            }
        }
        // A close that does not complete (the end of stream is not taken or
        // not answered) counts as a stall too.
        crate::with_timeout(Duration::from_secs(5), w.close())
            .await
            .is_none()
    };
    let reader = async {
        let mut total = received;
        loop {
            match crate::with_timeout(Duration::from_secs(5), r.read(&mut buf)).await {
                Some(Ok(n)) if n > 0 => {
                    total += n;
                    ctx.live.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                _ => return total,
            }
        }
    };
    let (stalled, total) = futures_lite::future::zip(writer, reader).await;
    {
        let mut res = ctx.result.borrow_mut();
        res.bytes += total as u64;
        res.ops += 1;
        let _ = res.hist.record(start.elapsed().as_micros().max(1) as u64);
    }
    if stalled {
        ctx.fail(Failure::Timeout);
    }
}

/// Where bulk bytes go: any stream (copied into it), or an h3 stream that
/// keeps the chunk itself.
enum BulkWriter {
    Io(futures_lite::io::WriteHalf<crate::net::Stream>),
    H3(dataplane::relay::h3::H3Writer),
}

impl BulkWriter {
    async fn push(&mut self, chunk: &bytes::Bytes) -> std::io::Result<()> {
        match self {
            BulkWriter::Io(w) => w.write_all(chunk).await,
            BulkWriter::H3(w) => w.write_owned(chunk.clone()).await,
        }
    }

    async fn close(&mut self) -> std::io::Result<()> {
        match self {
            BulkWriter::Io(w) => w.close().await,
            BulkWriter::H3(w) => w.close().await,
        }
    }
}

async fn setup(ctx: &Ctx, conn: usize) {
    let mut next = first_tick(ctx.plan.rate_per_conn, conn);
    while ctx.take() {
        let start = pace(ctx.plan.rate_per_conn, &mut next).await;
        let r = async {
            let mut sess = establish(
                &ctx.plan.target,
                ctx.plan.via,
                conn,
                ctx.source(conn),
                &ctx.payload,
            )
            .await?;
            ctx.result.borrow_mut().established += 1;
            let mut acc = std::mem::take(&mut sess.leftover);
            let mut wire = Vec::new();
            let sent = sess.pending.is_some();
            let exchange = async {
                if ctx.plan.via == Via::Http {
                    one_request(ctx, &mut sess).await
                } else {
                    one_echo(ctx, &mut sess, &mut acc, &mut wire, sent).await
                }
            };
            crate::with_timeout(ctx.plan.target.timeout, exchange)
                .await
                .unwrap_or(Err(Failure::Timeout))?;
            let _ = sess.stream.close().await;
            Ok::<(), Failure>(())
        }
        .await;
        match r {
            Ok(()) => ctx.done(start, ctx.payload.len()),
            Err(f) => ctx.fail(f),
        }
    }
}

async fn idle(ctx: &Ctx, conn: usize) {
    let sess = match establish(&ctx.plan.target, ctx.plan.via, conn, ctx.source(conn), &[]).await {
        Ok(s) => s,
        Err(f) => return ctx.fail(f),
    };
    ctx.result.borrow_mut().established += 1;
    ctx.live.ops.fetch_add(1, Ordering::Relaxed);
    let now = Instant::now();
    if ctx.deadline > now {
        glommio::timer::sleep(ctx.deadline - now).await;
    }
    drop(sess);
}
