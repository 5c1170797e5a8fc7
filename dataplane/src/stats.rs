//! Per-core counters.
//!
//! Each core owns one [`CoreStats`] and is its only writer, so an update is a
//! relaxed load + store (no locked read-modify-write, no shared cache line with
//! other cores: each block is padded to its own lines). Readers (the admin
//! endpoint, later the control plane's stats area) load with relaxed ordering;
//! a reader may see one counter a little ahead of another, never a torn value.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Counters of one core. Single writer: the owning core.
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub struct CoreStats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        impl CoreStats {
            /// `(name, value)` pairs, for reports.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    /// Connections accepted.
    connections_total,
    /// Connections currently open.
    connections_active,
    /// Requests answered with an error status or closed on rejection.
    rejected_total,
    /// 401 answers.
    auth_failures,
    /// Upstream dial or handshake failures (502/504).
    upstream_errors,
    /// Relays started (upgrade, CONNECT, HTTPUpgrade, request).
    relays_total,
    /// Bytes moved by splice(2), both directions.
    bytes_spliced,
    /// Bytes copied through user-space buffers, both directions.
    bytes_copied,
    /// Bytes from downstream to upstream.
    bytes_downstream_to_upstream,
    /// Bytes from upstream to downstream.
    bytes_upstream_to_downstream,
    /// Relays that ended on the idle timeout.
    idle_timeouts,
    /// Resets propagated between legs.
    resets_propagated,
    /// h2 streams the client reset after we accepted them, before our answer.
    h2_early_resets,
    /// Connections closed at accept: the core was at `max_connections`.
    connections_refused,
    /// Refusal log lines not written (rate limit), counted instead.
    log_lines_suppressed,
    /// QUIC connections accepted (their handshake started).
    quic_connections_total,
    /// QUIC Retry packets sent (address validation under handshake load).
    quic_retries,
    /// HTTP/3 request streams accepted.
    h3_streams_total,
    /// QUIC datagrams of another core's connection handed to that core.
    quic_datagrams_handed_over,
    /// QUIC datagrams of this core's connections that another core read.
    quic_datagrams_taken_over,
    /// Extended CONNECT sessions relayed (WebTransport, CONNECT-UDP, CONNECT-IP).
    sessions_total,
    /// HTTP datagrams relayed to the other hop.
    h3_datagrams_relayed,
    /// HTTP datagrams dropped: no session for their quarter stream id (not
    /// open yet, or closed).
    h3_datagrams_dropped_no_session,
    /// HTTP datagrams dropped: larger than the other hop accepts.
    h3_datagrams_dropped_too_large,
    /// HTTP datagrams dropped: the other hop takes no QUIC datagrams.
    h3_datagrams_dropped_unsupported,
    /// HTTP datagrams sent on as DATAGRAM capsules: the other hop takes no
    /// QUIC datagrams.
    h3_datagrams_capsuled,
    /// WebTransport streams relayed (either side opened them).
    webtransport_streams_total,
    /// WebTransport streams refused: their session never came or ended.
    webtransport_streams_rejected,
}

/// Adds to a counter; only the owning core calls this.
#[inline]
pub fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// Subtracts from a gauge; only the owning core calls this.
#[inline]
pub fn sub(c: &AtomicU64, n: u64) {
    c.store(
        c.load(Ordering::Relaxed).saturating_sub(n),
        Ordering::Relaxed,
    );
}

/// Renders every core's counters as JSON (for the admin endpoint).
pub fn to_json(cores: &[(usize, std::sync::Arc<CoreStats>)]) -> String {
    let mut out = String::from("{\"cores\":[");
    for (i, (cpu, s)) in cores.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("{{\"core\":{i},\"cpu\":{cpu}"));
        for (k, v) in s.snapshot() {
            out.push_str(&format!(",\"{k}\":{v}"));
        }
        out.push('}');
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_json() {
        let s = std::sync::Arc::new(CoreStats::default());
        add(&s.bytes_spliced, 7);
        add(&s.connections_active, 2);
        sub(&s.connections_active, 1);
        let j = to_json(&[(3, s)]);
        assert!(j.contains("\"cpu\":3"), "{j}");
        assert!(j.contains("\"bytes_spliced\":7"), "{j}");
        assert!(j.contains("\"connections_active\":1"), "{j}");
    }
}
