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
/// Offset of the per-tunnel counters in a core section (after the stats
/// block, before the ring data).
pub const TUNNEL_STATS_OFFSET: usize = 1024;
/// Tunnels one core reports counters for here: the first it relayed for
/// (a data plane's `/metrics` has them all); the others are counted in
/// [`stat::TUNNELS_UNREPORTED`].
pub const TUNNEL_SLOTS: usize = 60;
/// Words of one tunnel slot: the tunnel's key ([`tunnel_key`]; 0 = free),
/// then [`TUNNEL_COUNTERS`] in order.
pub const TUNNEL_SLOT_WORDS: usize = 1 + TUNNEL_COUNTERS.len();
/// The per-tunnel counters of a slot (same names as the data plane's
/// `/stats`).
pub const TUNNEL_COUNTERS: [&str; 5] = [
    "relays_total",
    "relays_active",
    "bytes_downstream_to_upstream",
    "bytes_upstream_to_downstream",
    "rejected_total",
];
/// Offset of ring data in a core section.
pub const DATA_OFFSET: usize = 4096;

const _: () = assert!(STATS_OFFSET + STAT_WORDS * 8 <= TUNNEL_STATS_OFFSET);
const _: () = assert!(TUNNEL_STATS_OFFSET + TUNNEL_SLOTS * TUNNEL_SLOT_WORDS * 8 <= DATA_OFFSET);

/// The key of a tunnel name in the tunnel slots: FNV-1a (64 bit) of its
/// bytes, never 0. Both processes compute it; a collision of two names
/// (2^-64 per pair) would add one tunnel's counters to the other's.
pub fn tunnel_key(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

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
    /// Tunnels with counters on the core but no tunnel slot left.
    pub const TUNNELS_UNREPORTED: usize = 8;
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

#[cfg(test)]
mod tunnel_key_tests {
    use super::tunnel_key;

    #[test]
    fn keys_are_fnv1a_and_never_zero() {
        // FNV-1a 64 of "" is its offset basis; of "a" a known value.
        assert_eq!(tunnel_key(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(tunnel_key("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(tunnel_key("one"), tunnel_key("two"));
    }
}
