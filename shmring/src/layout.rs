//! Offsets of the shared region (version [`VERSION`]). All words are `u64`,
//! little-endian (the host's), 8-byte aligned; each core's section starts on
//! a page and its producer and consumer words sit on separate cache lines.

/// `b"SWYDRING"` as a little-endian word.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SWYDRING");
/// Layout version; bumped on any incompatible change.
pub const VERSION: u64 = 1;
/// Size of the header.
pub const HEADER_BYTES: usize = 4096;

/// Header word: magic.
pub const H_MAGIC: usize = 0;
/// Header word: layout version.
pub const H_VERSION: usize = 1;
/// Header word: number of per-core sections.
pub const H_CORES: usize = 2;
/// Header word: data bytes of each ring.
pub const H_RING_BYTES: usize = 3;
/// Header word: bumped by each control plane that attaches.
pub const H_GENERATION: usize = 4;
/// Header word: the store version the control plane last committed.
pub const H_STORE_VERSION: usize = 5;
/// Header word: pid of the control plane.
pub const H_CONTROL_PID: usize = 6;
/// Header word: pid of the data plane.
pub const H_DATAPLANE_PID: usize = 7;
/// Header word: 1 once a newer region replaced this file (re-open the path).
pub const H_RETIRED: usize = 8;

/// Ring control: producer position (bytes ever written).
pub const R_HEAD: usize = 0;
/// Ring control: producer dropped a record (consumer clears).
pub const R_OVERFLOW: usize = 8;
/// Ring control: consumer position, on its own cache line.
pub const R_TAIL: usize = 128;
/// Offset of the stats block in a core section.
pub const STATS_OFFSET: usize = 256;
/// Words in a stats block.
pub const STAT_WORDS: usize = 64;
/// Offset of ring data in a core section.
pub const DATA_OFFSET: usize = 4096;

/// Stats-block words (core → control).
pub mod stat {
    /// The core asks for a snapshot (core stores 1, producer swaps to 0).
    pub const NEED_SNAPSHOT: usize = 0;
    /// Sequence number of the last record applied.
    pub const APPLIED_SEQ: usize = 1;
    /// Unix milliseconds of the core's last stats flush (liveness).
    pub const HEARTBEAT_MS: usize = 2;
    /// Managed tunnels in the core's table.
    pub const TUNNELS: usize = 3;
    /// Managed tokens in the core's table.
    pub const TOKENS: usize = 4;
    /// Snapshots applied.
    pub const SNAPSHOTS: usize = 5;
    /// Microseconds from the last `SnapshotBegin` to its swap.
    pub const LAST_SNAPSHOT_US: usize = 6;
    /// Resync requests made (gap, overflow, corrupt frame, attach).
    pub const RESYNC_REQUESTS: usize = 7;
    /// First of the data plane's per-core counters, in [`COUNTERS`] order.
    pub const COUNTERS_AT: usize = 16;
    /// Names of the counters copied from the data plane (same names as its
    /// `GET /stats`).
    pub const COUNTERS: [&str; 12] = [
        "connections_total",
        "connections_active",
        "rejected_total",
        "auth_failures",
        "upstream_errors",
        "relays_total",
        "bytes_spliced",
        "bytes_copied",
        "bytes_downstream_to_upstream",
        "bytes_upstream_to_downstream",
        "idle_timeouts",
        "resets_propagated",
    ];
}

/// Sizes of one region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Per-core sections.
    pub cores: u32,
    /// Data bytes per ring (a multiple of 4096).
    pub ring_bytes: u64,
}

impl Layout {
    /// `None` unless 1 ≤ cores ≤ 1024 and ring_bytes is a multiple of 4096
    /// between 4 KiB and 1 GiB.
    pub fn new(cores: u32, ring_bytes: u64) -> Option<Layout> {
        let ok = (1..=1024).contains(&cores)
            && (4096..=1 << 30).contains(&ring_bytes)
            && ring_bytes % 4096 == 0;
        ok.then_some(Layout { cores, ring_bytes })
    }

    /// Bytes of one core's section.
    pub fn core_bytes(&self) -> usize {
        DATA_OFFSET + self.ring_bytes as usize
    }

    /// Offset of core `i`'s section.
    pub fn core_offset(&self, i: usize) -> usize {
        HEADER_BYTES + i * self.core_bytes()
    }

    /// Size of the whole file.
    pub fn total_bytes(&self) -> usize {
        HEADER_BYTES + self.cores as usize * self.core_bytes()
    }
}
