//! One ring producer per data-plane core (the single producer of its ring).
//!
//! ```text
//!            need_snapshot=1 (core)           ring full (delta)
//!  Deltas ───────────────────────► Snapshot   Deltas ───────────► Overflowed
//!    ▲                                │          set overflow flag,   │ drop deltas until
//!    └──── SnapshotEnd pushed ────────┘          drop the delta       │ need_snapshot=1
//!                                                                     ▼
//!                                                                  Snapshot
//! ```
//!
//! Deltas never wait for ring space (a stuck core must not hold up the API or
//! grow memory without bound); snapshots do wait, and give up after
//! [`STALL`] without progress (no consumer), which again leaves the ring in
//! the overflowed state for the next consumer to notice.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmring::layout::{self, stat};
use shmring::Region;
use tokio::sync::mpsc;

use crate::hub::{Hub, Snapshot};

/// A snapshot that makes no progress for this long is abandoned.
pub const STALL: Duration = Duration::from_secs(3);

/// A core whose last stats flush is younger than this is attached.
pub const ALIVE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Deltas,
    Snapshot,
    Overflowed,
}

/// Whether the data-plane core `core` flushed its stats recently.
pub fn core_alive(region: &Region, core: usize) -> bool {
    let Some(hb) = region.stat(core, stat::HEARTBEAT_MS) else {
        return false;
    };
    let now = crate::model::now_ms();
    now.saturating_sub(hb.load(Ordering::Relaxed)) < ALIVE.as_millis() as u64
}

/// Feeds core `core`'s ring until the process ends.
pub async fn run(
    hub: Arc<Hub>,
    region: Arc<Region>,
    core: usize,
    mut feed: mpsc::UnboundedReceiver<Arc<Vec<u8>>>,
) {
    let (Some(ring), Some(need)) = (region.ring(core), region.stat(core, stat::NEED_SNAPSHOT))
    else {
        return;
    };
    let generation = region.header(layout::H_GENERATION).load(Ordering::Relaxed);
    // A restarted control plane resyncs every attached core; a core that is
    // not attached yet asks for its snapshot when it attaches.
    let mut mode = if core_alive(&region, core) {
        Mode::Snapshot
    } else {
        Mode::Overflowed
    };
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        match mode {
            Mode::Snapshot => {
                need.store(0, Ordering::Release);
                let started = Instant::now();
                let snap = hub.snapshot(&mut feed, generation);
                mode = if stream(&ring, &snap).await {
                    let bytes = snap.with_frames(|f, _| f.len());
                    tracing::info!(core, records = snap.records(), bytes, elapsed = ?started.elapsed(), "snapshot sent");
                    Mode::Deltas
                } else {
                    tracing::warn!(core, "snapshot abandoned: the core is not consuming");
                    ring.overflow().store(1, Ordering::Release);
                    Mode::Overflowed
                };
            }
            Mode::Deltas => {
                if need.load(Ordering::Acquire) == 1 {
                    mode = Mode::Snapshot;
                    continue;
                }
                tokio::select! {
                    d = feed.recv() => {
                        let Some(mut d) = d else { return };
                        loop {
                            if !ring.push(&d) {
                                tracing::warn!(core, "ring full: delta dropped, overflow flagged");
                                ring.overflow().store(1, Ordering::Release);
                                mode = Mode::Overflowed;
                                break;
                            }
                            match feed.try_recv() {
                                Ok(next) => d = next,
                                Err(_) => break,
                            }
                        }
                    }
                    _ = tick.tick() => {}
                }
            }
            Mode::Overflowed => {
                while feed.try_recv().is_ok() {}
                if need.load(Ordering::Acquire) == 1 {
                    mode = Mode::Snapshot;
                } else {
                    tick.tick().await;
                }
            }
        }
    }
}

/// Pushes every frame as the encoder produces it, waiting for space;
/// `false` if the consumer stalls (waiting for the encoder is no stall).
async fn stream(ring: &shmring::Ring<'_>, snap: &Snapshot) -> bool {
    let mut pos = 0usize;
    let mut last_progress = Instant::now();
    let mut spins = 0u32;
    loop {
        let (pushed, available, done) = snap.with_frames(|frames, done| {
            let n = match frames.get(pos..) {
                Some(rest) if !rest.is_empty() => ring.push_frames(rest),
                _ => 0,
            };
            (n, frames.len(), done)
        });
        if pushed > 0 {
            pos += pushed;
            last_progress = Instant::now();
            spins = 0;
            continue;
        }
        if pos == available {
            if done {
                return true;
            }
            last_progress = Instant::now();
        } else if last_progress.elapsed() > STALL {
            return false;
        }
        // A consuming core frees space (and the encoder adds frames) within
        // microseconds: yield first, sleep (tokio's 1 ms) only if not.
        spins += 1;
        if spins < 256 {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
}
