//! Snapshot order hint: token records in the order a core's table will
//! place them.
//!
//! A core keeps its token grants in a hash table keyed by the SHA-256
//! digest, hashed by the digest's first 8 bytes (little-endian; digests are
//! uniform already), presized for the snapshot's announced count. Inserting
//! a million digests in random order costs a cache and TLB miss each (most
//! of a snapshot's apply time on a core); inserting them sorted by the
//! bucket they land in walks the table front to back. The producer sorts by
//! [`token_order_key`]; a consumer whose table differs only loses speed,
//! never correctness. The bucket count mirrors hashbrown's sizing (the
//! standard library's `HashMap`): capacity × 8/7, rounded up to a power of
//! two.

/// The digest's hash as the data plane's token table computes it.
pub fn digest_hash(digest: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// Buckets of a table presized for `count` entries.
pub fn table_buckets(count: usize) -> u64 {
    if count < 8 {
        return if count < 4 { 4 } else { 8 };
    }
    ((count as u64).saturating_mul(8) / 7).next_power_of_two()
}

/// Sort key of a token record in a snapshot of `count` tokens.
pub fn token_order_key(digest: &[u8; 32], count: usize) -> u64 {
    digest_hash(digest) & (table_buckets(count) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_the_table_sizing() {
        assert_eq!(table_buckets(0), 4);
        assert_eq!(table_buckets(7), 8);
        assert_eq!(table_buckets(1_000_000), 1 << 21);
        let mut d = [0u8; 32];
        d[0] = 0xff;
        d[7] = 0x80;
        assert_eq!(token_order_key(&d, 7), 7);
        assert_eq!(digest_hash(&d), 0x8000_0000_0000_00ff);
    }

    #[test]
    fn std_hashmap_sizing_matches() {
        // The hint mirrors std's HashMap: capacity() is 7/8 of the buckets.
        for n in [10usize, 1000, 100_000, 1_000_000] {
            let m: std::collections::HashMap<u64, ()> = std::collections::HashMap::with_capacity(n);
            assert_eq!(m.capacity() as u64, table_buckets(n) / 8 * 7, "n = {n}");
        }
    }
}
