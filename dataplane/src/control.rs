//! Managed mode: each core consumes its ring of the control plane's shared
//! region and applies the records to its own [`Managed`] tables.
//!
//! ```text
//! every 250 µs while records flow, every 1 ms after 100 ms without any
//! (glommio timer: a core cannot block on an eventfd; each wake-up costs
//! ~35 µs of CPU, so an idle core backs off); right away, after yielding to
//! connections, while a full batch was found (a snapshot streams in):
//!   overflow flag? ─► request snapshot
//!   pop ≤ BATCH frames, ≤ SLICE of CPU ─► decode ─► Synced:     delta seq == applied+1 → apply in place
//!                                               Rebase from == applied → applied = seq
//!                                               seq gap → request snapshot
//!                                   Resyncing:  drop until SnapshotBegin
//!                                   Building:   add to a fresh table; SnapshotEnd → swap
//! every 50 ms: counters, table sizes and a heartbeat → this core's stats block
//! ```
//!
//! "Request snapshot" = store 1 into the core's `need_snapshot` word; the
//! control plane's producer answers with SnapshotBegin … SnapshotEnd. If the
//! control plane is gone the core keeps serving with its last tables.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmring::layout::{self, stat};
use shmring::{Body, Drained, Record, Region};

use crate::core::CoreCtx;
use crate::managed::{tunnel_from, Managed};

/// Time between two polls of the ring while records flow.
pub const POLL: Duration = Duration::from_micros(250);
/// Time between two polls once the ring has been quiet for [`QUIET`].
pub const POLL_IDLE: Duration = Duration::from_millis(1);
/// Quiet time after which polling backs off.
pub const QUIET: Duration = Duration::from_millis(100);
/// Frames applied per poll before yielding to connections.
pub const BATCH: usize = 8192;
/// CPU time one poll may take before yielding to connections (a tunnel
/// record costs microseconds: 8192 of them would stall this core's relays).
pub const SLICE: Duration = Duration::from_millis(1);
/// Largest table size a snapshot's announced counts may pre-reserve.
const MAX_PRESIZE: u64 = 4 << 20;
/// Time between two stats flushes.
pub const FLUSH: Duration = Duration::from_millis(50);

/// Maps the region named by `[control] shm`.
pub fn attach(path: &Path) -> Result<Arc<Region>, shmring::AttachError> {
    let r = Region::attach(path)?;
    r.header(layout::H_DATAPLANE_PID)
        .store(u64::from(std::process::id()), Ordering::Release);
    Ok(Arc::new(r))
}

/// What one poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Nothing,
    /// Some frames; the ring is drained.
    Some,
    /// A batch or a time slice ended with frames left: poll again soon.
    More,
}

enum Phase {
    Synced,
    Resyncing,
    Building {
        table: Managed,
        started: Instant,
        seq: u64,
    },
}

struct Poller {
    ctx: Rc<CoreCtx>,
    region: Arc<Region>,
    path: PathBuf,
    managed: Rc<RefCell<Managed>>,
    phase: Phase,
    applied: u64,
    synced_once: Rc<Cell<bool>>,
    counter_slots: Vec<Option<usize>>,
    /// Tunnel names by tunnel slot (assigned on first report, kept).
    tunnel_slots: Vec<String>,
}

/// Runs this core's poller until the executor ends. `synced` turns true
/// after the first snapshot is applied.
pub async fn run(ctx: Rc<CoreCtx>, region: Arc<Region>, path: PathBuf, synced: Rc<Cell<bool>>) {
    let core = ctx.core;
    if region.ring(core).is_none() {
        tracing::warn!(
            core,
            cores = region.layout().cores,
            "the control plane's region has no ring for this core: static tables only"
        );
        return;
    }
    let managed = ctx.routes.borrow().managed();
    let counter_slots = ctx
        .stats
        .snapshot()
        .iter()
        .map(|(name, _)| stat::COUNTERS.iter().position(|n| n == name))
        .collect();
    let mut p = Poller {
        ctx,
        region,
        path,
        managed,
        phase: Phase::Resyncing,
        applied: 0,
        synced_once: synced,
        counter_slots,
        tunnel_slots: Vec::new(),
    };
    // Nor the tunnel counters an earlier data plane left.
    for slot in 0..shmring::layout::TUNNEL_SLOTS {
        for word in 0..shmring::layout::TUNNEL_SLOT_WORDS {
            if let Some(w) = p.region.tunnel_slot(core, slot, word) {
                w.store(0, Ordering::Relaxed);
            }
        }
    }
    // A new consumer cannot trust what an earlier one left in the ring.
    if let Some(ring) = p.region.ring(core) {
        ring.skip_all();
        ring.overflow().store(0, Ordering::Release);
    }
    p.request_snapshot("attached");
    let mut buf = Vec::with_capacity(4096);
    let mut last_flush = Instant::now() - FLUSH;
    let mut last_record = Instant::now();
    loop {
        let found = p.poll(&mut buf);
        if found != Found::Nothing {
            last_record = Instant::now();
        }
        if last_flush.elapsed() >= FLUSH {
            p.flush();
            last_flush = Instant::now();
        }
        if found == Found::More {
            // More is waiting: let connections run, then go on at once.
            glommio::executor().yield_task_queue_now().await;
            continue;
        }
        let pause = if last_record.elapsed() < QUIET || p.awaiting_snapshot() {
            POLL
        } else {
            POLL_IDLE
        };
        glommio::timer::sleep(pause).await;
    }
}

impl Poller {
    /// This core's per-tunnel counters into its tunnel slots: a tunnel
    /// keeps the slot it got first; past the last slot, tunnels are only
    /// counted (`TUNNELS_UNREPORTED`). The key goes last, so a reader that
    /// sees it sees the counters of that tunnel.
    fn flush_tunnels(&mut self) {
        let core = self.ctx.core;
        let mut unreported = 0u64;
        for (name, counters) in self.ctx.stats.tunnels.snapshot() {
            let slot = match self.tunnel_slots.iter().position(|n| *n == name) {
                Some(i) => i,
                None if self.tunnel_slots.len() < shmring::layout::TUNNEL_SLOTS => {
                    self.tunnel_slots.push(name.clone());
                    self.tunnel_slots.len() - 1
                }
                None => {
                    unreported += 1;
                    continue;
                }
            };
            for (i, (_, v)) in counters.iter().enumerate() {
                if let Some(w) = self.region.tunnel_slot(core, slot, 1 + i) {
                    w.store(*v, Ordering::Relaxed);
                }
            }
            if let Some(w) = self.region.tunnel_slot(core, slot, 0) {
                w.store(shmring::layout::tunnel_key(&name), Ordering::Release);
            }
        }
        if let Some(w) = self.stat(stat::TUNNELS_UNREPORTED) {
            w.store(unreported, Ordering::Relaxed);
        }
    }

    /// The ring's state into this core's counters (for `/metrics`): the
    /// applied sequence, how far behind the store it is, the bytes
    /// waiting, and the snapshot counts kept in the region.
    fn mirror_ring_state(&self) {
        let s = &self.ctx.stats;
        let published = self.region.header(layout::H_STORE_VERSION).load(Ordering::Acquire);
        let pending = self.region.ring(self.ctx.core).map_or(0, |r| r.used());
        let word = |w: usize| self.stat(w).map_or(0, |a| a.load(Ordering::Relaxed));
        for (counter, v) in [
            (&s.ring_applied_seq, self.applied),
            (&s.ring_lag, published.saturating_sub(self.applied)),
            (&s.ring_pending_bytes, pending),
            (&s.ring_snapshots, word(stat::SNAPSHOTS)),
            (&s.ring_resync_requests, word(stat::RESYNC_REQUESTS)),
        ] {
            counter.store(v, Ordering::Relaxed);
        }
    }

    fn stat(&self, word: usize) -> Option<&std::sync::atomic::AtomicU64> {
        self.region.stat(self.ctx.core, word)
    }

    fn request_snapshot(&mut self, why: &str) {
        tracing::info!(
            core = self.ctx.core,
            why,
            "asking the control plane for a snapshot"
        );
        self.phase = Phase::Resyncing;
        if let Some(w) = self.stat(stat::RESYNC_REQUESTS) {
            w.store(w.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        }
        if let Some(w) = self.stat(stat::NEED_SNAPSHOT) {
            w.store(1, Ordering::Release);
        }
    }

    fn awaiting_snapshot(&self) -> bool {
        !matches!(self.phase, Phase::Synced)
    }

    /// Applies what is in the ring, at most [`BATCH`] frames or [`SLICE`]
    /// of time.
    fn poll(&mut self, buf: &mut Vec<u8>) -> Found {
        // A clone of the Arc, so that applying records may borrow `self` mutably.
        let region = self.region.clone();
        let Some(ring) = region.ring(self.ctx.core) else {
            return Found::Nothing;
        };
        let started = Instant::now();
        let mut n = 0usize;
        let mut out_of_time = false;
        if ring.overflow().swap(0, Ordering::AcqRel) == 1 {
            // Records before the dropped one are still valid, but the cheapest
            // correct answer is a fresh snapshot.
            ring.skip_all();
            self.request_snapshot("ring overflowed");
        }
        let mut undecodable = None;
        let drained = ring.pop_many(BATCH, buf, |frame| match Record::decode(frame) {
            Ok(r) => {
                self.apply(r);
                n += 1;
                out_of_time = n.is_multiple_of(64) && started.elapsed() >= SLICE;
                !out_of_time
            }
            Err(e) => {
                undecodable = Some(e);
                false
            }
        });
        if let Some(e) = undecodable {
            tracing::warn!(core = self.ctx.core, "undecodable record: {e}");
            ring.skip_all();
            self.request_snapshot("undecodable record");
        }
        match drained {
            Drained::Frames(0) => Found::Nothing,
            Drained::Frames(n) if n == BATCH || out_of_time => Found::More,
            Drained::Frames(_) => Found::Some,
            Drained::Corrupt => {
                self.request_snapshot("corrupt frame");
                Found::Nothing
            }
        }
    }

    fn apply(&mut self, r: Record) {
        let core = self.ctx.core;
        if let Body::SnapshotBegin {
            generation,
            tunnels,
            tokens,
        } = r.body
        {
            tracing::debug!(
                core,
                seq = r.seq,
                generation,
                tunnels,
                tokens,
                "snapshot begins"
            );
            // The counts are hints from the producer; capped so that a bad
            // record cannot make a core reserve unbounded memory up front.
            let cap = |n: u64| n.min(MAX_PRESIZE) as usize;
            self.phase = Phase::Building {
                table: Managed::with_capacity(cap(tunnels), cap(tokens)),
                started: Instant::now(),
                seq: r.seq,
            };
            return;
        }
        match &mut self.phase {
            Phase::Resyncing => {}
            Phase::Building {
                table,
                started,
                seq,
            } => match r.body {
                Body::TunnelUpsert(t) => match tunnel_from(t) {
                    Ok(t) => table.upsert_tunnel(t),
                    Err(e) => tracing::warn!(core, "snapshot: {e}"),
                },
                Body::TokenUpsert(t) => table.upsert_token(t),
                Body::SnapshotEnd { tunnels, tokens } => {
                    let took = started.elapsed();
                    let seq = *seq;
                    let table = std::mem::take(table);
                    if table.tokens() as u64 != tokens {
                        tracing::warn!(core, tokens, got = table.tokens(), "snapshot incomplete");
                        self.request_snapshot("snapshot incomplete");
                        return;
                    }
                    let _ = tunnels;
                    // The swap: connections see the old table or the new one, never a mix.
                    let old = std::mem::replace(&mut *self.managed.borrow_mut(), table);
                    // Freeing a million entries takes a core ~100 ms: done
                    // in slices after the swap is published.
                    glommio::spawn_local(old.free_in_slices()).detach();
                    self.applied = seq;
                    self.phase = Phase::Synced;
                    self.synced_once.set(true);
                    if let Some(w) = self.stat(stat::SNAPSHOTS) {
                        w.store(w.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                    }
                    if let Some(w) = self.stat(stat::LAST_SNAPSHOT_US) {
                        w.store(took.as_micros() as u64, Ordering::Relaxed);
                    }
                    self.publish_applied();
                    let m = self.managed.borrow();
                    tracing::info!(
                        core,
                        seq,
                        tunnels = m.tunnels(),
                        tokens = m.tokens(),
                        ?took,
                        "snapshot applied"
                    );
                }
                _ => self.request_snapshot("delta inside a snapshot"),
            },
            Phase::Synced => {
                if r.seq <= self.applied {
                    return;
                }
                if let Body::Rebase { from } = r.body {
                    if from != self.applied {
                        let why = format!("rebase from {from} at applied {}", self.applied);
                        self.request_snapshot(&why);
                        return;
                    }
                    self.applied = r.seq;
                    self.publish_applied();
                    return;
                }
                if r.seq != self.applied + 1 {
                    let why = format!("sequence gap: applied {} got {}", self.applied, r.seq);
                    self.request_snapshot(&why);
                    return;
                }
                {
                    let mut m = self.managed.borrow_mut();
                    match r.body {
                        Body::TunnelUpsert(t) => match tunnel_from(t) {
                            Ok(t) => m.upsert_tunnel(t),
                            Err(e) => tracing::warn!(core, "{e}"),
                        },
                        Body::TunnelDelete { name } => m.delete_tunnel(&name),
                        Body::TokenUpsert(t) => m.upsert_token(t),
                        Body::TokenRevoke { digest } => m.revoke_token(&digest),
                        Body::SnapshotBegin { .. }
                        | Body::SnapshotEnd { .. }
                        | Body::Rebase { .. } => {}
                    }
                }
                self.applied = r.seq;
                self.publish_applied();
            }
        }
    }

    /// Table sizes first, then the sequence number: a reader that sees the
    /// new `applied_seq` also sees sizes at least that new.
    fn publish_applied(&self) {
        let (tunnels, tokens) = {
            let m = self.managed.borrow();
            (m.tunnels() as u64, m.tokens() as u64)
        };
        for (word, v) in [(stat::TUNNELS, tunnels), (stat::TOKENS, tokens)] {
            if let Some(w) = self.stat(word) {
                w.store(v, Ordering::Relaxed);
            }
        }
        if let Some(w) = self.stat(stat::APPLIED_SEQ) {
            w.store(self.applied, Ordering::Release);
        }
    }

    fn flush(&mut self) {
        if self
            .region
            .header(layout::H_RETIRED)
            .load(Ordering::Acquire)
            == 1
        {
            match attach(&self.path) {
                Ok(r) if r.ring(self.ctx.core).is_some() => {
                    tracing::info!(
                        core = self.ctx.core,
                        "region replaced by the control plane: re-attached"
                    );
                    self.region = r;
                    if let Some(ring) = self.region.ring(self.ctx.core) {
                        ring.skip_all();
                    }
                    self.request_snapshot("re-attached");
                }
                _ => {}
            }
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.mirror_ring_state();
        for ((_, v), slot) in self.ctx.stats.snapshot().iter().zip(&self.counter_slots) {
            if let Some(w) = slot.and_then(|i| self.stat(stat::COUNTERS_AT + i)) {
                w.store(*v, Ordering::Relaxed);
            }
        }
        self.flush_tunnels();
        if let Some(w) = self.stat(stat::HEARTBEAT_MS) {
            w.store(now_ms, Ordering::Relaxed);
        }
    }
}
