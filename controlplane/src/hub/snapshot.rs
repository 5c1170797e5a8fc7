//! Full snapshots for the cores: encoded once per store version and
//! generation by a thread of its own, streamed by the producers while it
//! fills.

use std::sync::Arc;

use shmring::{Body, Record};
use tokio::sync::mpsc;

use super::Hub;

/// A full table encoded as consecutive ring frames (see
/// [`shmring::Ring::push_frames`]), filled by an encoder thread while the
/// producers already stream what is there: encoding a million records takes
/// about as long as a core takes to apply them, so they overlap.
#[derive(Debug, Default)]
pub struct Snapshot {
    progress: std::sync::Mutex<Progress>,
}

#[derive(Debug, Default)]
struct Progress {
    /// `u32` LE length + body, whole records only.
    frames: Vec<u8>,
    records: usize,
    done: bool,
}

impl Snapshot {
    /// Runs `f` on the frames encoded so far and whether that is all.
    pub fn with_frames<R>(&self, f: impl FnOnce(&[u8], bool) -> R) -> R {
        let p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        f(&p.frames, p.done)
    }

    /// Records encoded so far.
    pub fn records(&self) -> usize {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .records
    }

    fn append(&self, frames: &mut Vec<u8>, records: &mut usize, done: bool) {
        let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        p.frames.extend_from_slice(frames);
        p.records += *records;
        p.done = done;
        frames.clear();
        *records = 0;
    }
}

/// Bytes the encoder gathers before handing them to the producers.
const ENCODE_CHUNK: usize = 1 << 20;

impl Hub {
    /// A full snapshot for one core, as ring frames (possibly still being
    /// encoded), and the discard of every delta already contained in it.
    /// Deltas that race with the encoder carry sequence numbers the core
    /// skips once the snapshot is in (`seq <= applied`).
    pub fn snapshot(
        self: &Arc<Self>,
        feed: &mut mpsc::UnboundedReceiver<Arc<Vec<u8>>>,
        generation: u64,
    ) -> Arc<Snapshot> {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        while feed.try_recv().is_ok() {}
        let seq = st.version;
        drop(st);
        // Cores that resync together (a restarted data plane) share one
        // encoding.
        let mut cache = self
            .snapshot_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((v, g, snap)) = cache.as_ref() {
            if *v == seq && *g == generation {
                return snap.clone();
            }
        }
        let snap = Arc::new(Snapshot::default());
        // The previous encoding is freed by the encoder thread, off the
        // producers' path.
        let old = cache.replace((seq, generation, snap.clone()));
        drop(cache);
        let (hub, fill) = (self.clone(), snap.clone());
        let spawned = std::thread::Builder::new()
            .name("snapshot-encode".into())
            .spawn(move || {
                drop(old);
                hub.encode(&fill, generation);
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the snapshot encoder: {e}; encoding inline");
            self.encode(&snap, generation);
        }
        snap
    }

    /// Encodes the current state into `snap`, handing over whole records
    /// every [`ENCODE_CHUNK`] bytes.
    fn encode(&self, snap: &Snapshot, generation: u64) {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        let seq = st.version;
        {
            let mut p = snap.progress.lock().unwrap_or_else(|e| e.into_inner());
            // ~70 bytes per token frame, more per tunnel.
            p.frames
                .reserve(st.tunnels.len() * 160 + st.tokens.len() * 72 + 128);
        }
        let mut chunk = Vec::with_capacity(ENCODE_CHUNK + 64 * 1024);
        let mut records = 0usize;
        let push = |body: Body, chunk: &mut Vec<u8>, records: &mut usize| {
            if (Record { seq, body }).encode_frame(chunk).is_ok() {
                *records += 1;
            }
            if chunk.len() >= ENCODE_CHUNK {
                snap.append(chunk, records, false);
            }
        };
        push(
            Body::SnapshotBegin {
                generation,
                tunnels: st.tunnels.len() as u64,
                tokens: st.tokens.len() as u64,
            },
            &mut chunk,
            &mut records,
        );
        for t in st.tunnels.values() {
            push(Body::TunnelUpsert(t.to_rec()), &mut chunk, &mut records);
        }
        // In the order the cores' token tables place them (shmring::order):
        // sequential inserts instead of a cache miss each. The sort moves
        // the few fields a record needs, so encoding reads memory in order.
        let n = st.tokens.len();
        let mut tokens: Vec<(u64, [u8; 32], u64, &[String])> = st
            .tokens
            .values()
            .map(|t| {
                let key = shmring::order::token_order_key(&t.sha256, n);
                (
                    key,
                    t.sha256,
                    t.expires_at.max(0) as u64,
                    t.tunnels.as_slice(),
                )
            })
            .collect();
        tokens.sort_unstable_by_key(|t| t.0);
        for (_, digest, expires_unix_s, tunnels) in tokens {
            let rec = shmring::TokenRec {
                digest,
                expires_unix_s,
                tunnels: tunnels.to_vec(),
            };
            push(Body::TokenUpsert(rec), &mut chunk, &mut records);
        }
        push(
            Body::SnapshotEnd {
                tunnels: st.tunnels.len() as u64,
                tokens: st.tokens.len() as u64,
            },
            &mut chunk,
            &mut records,
        );
        drop(st);
        snap.append(&mut chunk, &mut records, true);
    }
}
