//! Per-core counters.
//!
//! Each core owns one [`CoreStats`] and is its only writer, so an update is a
//! relaxed load + store (no locked read-modify-write, no shared cache line with
//! other cores: each block is padded to its own lines). Readers (the admin
//! endpoint, later the control plane's stats area) load with relaxed ordering;
//! a reader may see one counter a little ahead of another, never a torn value.

use std::sync::atomic::{AtomicU64, Ordering};

pub mod families;

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident),* $(,)?) => {
        /// Counters of one core. Single writer: the owning core.
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub struct CoreStats {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
            /// The same core's counters per tunnel.
            pub tunnels: TunnelStats,
            /// The same core's labeled families (`/metrics` only).
            pub families: families::Families,
        }

        impl CoreStats {
            /// `(name, value)` pairs, for reports.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }

            /// `(name, help text)` of every counter, in the same order.
            pub fn help() -> Vec<(&'static str, &'static str)> {
                vec![$((stringify!($name), concat!($($doc),*)),)*]
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
    /// Client address changes (NAT rebinding, migration) seen on this
    /// core's QUIC connections: their datagrams still reached this core.
    quic_client_address_changes,
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
    /// Access-log lines not written: the writer was behind (never waited for).
    access_log_dropped,
    /// The last table change (store sequence) this core applied from its ring.
    ring_applied_seq,
    /// Store sequences the control plane published that this core has not
    /// applied yet.
    ring_lag,
    /// Bytes waiting in this core's ring.
    ring_pending_bytes,
    /// Table snapshots this core applied.
    ring_snapshots,
    /// Snapshots this core asked for (attach, overflow, gap, bad record).
    ring_resync_requests,
}

/// Counters of one tunnel on one core (single writer: that core).
#[derive(Debug, Default)]
pub struct TunnelCounters {
    /// Relays started (the client got its 2xx / 101, or a request was forwarded).
    pub relays_total: AtomicU64,
    /// Relays in progress.
    pub relays_active: AtomicU64,
    /// Bytes from downstream to upstream, of finished relays.
    pub bytes_downstream_to_upstream: AtomicU64,
    /// Bytes from upstream to downstream, of finished relays.
    pub bytes_upstream_to_downstream: AtomicU64,
    /// Requests for this tunnel refused (401, 403, 501, 502, ...).
    pub rejected_total: AtomicU64,
}

impl TunnelCounters {
    /// `(name, value)` pairs, for reports.
    pub fn snapshot(&self) -> [(&'static str, u64); 5] {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("relays_total", l(&self.relays_total)),
            ("relays_active", l(&self.relays_active)),
            ("bytes_downstream_to_upstream", l(&self.bytes_downstream_to_upstream)),
            ("bytes_upstream_to_downstream", l(&self.bytes_upstream_to_downstream)),
            ("rejected_total", l(&self.rejected_total)),
        ]
    }
}

/// One core's tunnel counters by tunnel name, readable from other threads.
/// The core adds a name the first time it accounts for that tunnel (then
/// keeps the counters in its own cache, `CoreCtx::tunnel_counters`): the
/// lock is taken by the core once per tunnel, never per relay or byte.
#[derive(Debug, Default)]
pub struct TunnelStats(std::sync::RwLock<Vec<(String, std::sync::Arc<TunnelCounters>)>>);

impl TunnelStats {
    /// The counters of `name`, added on first use.
    pub fn counters(&self, name: &str) -> std::sync::Arc<TunnelCounters> {
        let mut list = self.0.write().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = list.iter().find(|(n, _)| n == name) {
            return c.clone();
        }
        let c = std::sync::Arc::new(TunnelCounters::default());
        list.push((name.to_owned(), c.clone()));
        c
    }

    /// Every tunnel this core accounted for, with its counters.
    pub fn snapshot(&self) -> Vec<(String, [(&'static str, u64); 5])> {
        let list = self.0.read().unwrap_or_else(|p| p.into_inner());
        list.iter().map(|(n, c)| (n.clone(), c.snapshot())).collect()
    }
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

/// Counters that are gauges (they go down too).
const GAUGES: [&str; 4] = ["connections_active", "ring_applied_seq", "ring_lag", "ring_pending_bytes"];

/// A label value in the Prometheus text format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Every core's counters, and each core's per-tunnel counters, in the
/// Prometheus text exposition format (version 0.0.4): one family per
/// counter, a sample per core (`core` label; per tunnel also `tunnel`).
/// Counters get a `_total` suffix where their name has none.
pub fn to_prometheus(cores: &[(usize, std::sync::Arc<CoreStats>)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let snaps: Vec<_> = cores.iter().map(|(_, s)| s.snapshot()).collect();
    for (i, (name, help)) in CoreStats::help().into_iter().enumerate() {
        let gauge = GAUGES.contains(&name);
        let metric = if gauge || name.ends_with("_total") { format!("switchyard_{name}") } else { format!("switchyard_{name}_total") };
        let _ = writeln!(out, "# HELP {metric} {}", help.trim());
        let _ = writeln!(out, "# TYPE {metric} {}", if gauge { "gauge" } else { "counter" });
        for (core, snap) in snaps.iter().enumerate() {
            let _ = writeln!(out, "{metric}{{core=\"{core}\"}} {}", snap[i].1);
        }
    }
    let tunnels: Vec<_> = cores.iter().map(|(_, s)| s.tunnels.snapshot()).collect();
    let families = [
        ("relays_total", "counter", "Relays started through the tunnel."),
        ("relays_active", "gauge", "Relays in progress through the tunnel."),
        ("bytes_downstream_to_upstream", "counter", "Bytes from downstream to upstream of the tunnel's finished relays."),
        ("bytes_upstream_to_downstream", "counter", "Bytes from upstream to downstream of the tunnel's finished relays."),
        ("rejected_total", "counter", "Requests for the tunnel refused."),
    ];
    for (k, (name, kind, help)) in families.iter().enumerate() {
        let metric = if *kind == "counter" && !name.ends_with("_total") { format!("switchyard_tunnel_{name}_total") } else { format!("switchyard_tunnel_{name}") };
        let _ = writeln!(out, "# HELP {metric} {help}");
        let _ = writeln!(out, "# TYPE {metric} {kind}");
        for (core, list) in tunnels.iter().enumerate() {
            for (tunnel, counters) in list {
                let _ = writeln!(out, "{metric}{{core=\"{core}\",tunnel=\"{}\"}} {}", label(tunnel), counters[k].1);
            }
        }
    }
    let families: Vec<_> = cores.iter().map(|(_, s)| &s.families).collect();
    families::render(&mut out, &families);
    out
}

/// A string as the inside of a JSON string literal.
pub fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
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
        out.push_str(",\"tunnels\":{");
        for (j, (name, counters)) in s.tunnels.snapshot().iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(&format!("\"{}\":{{", json_escape(name)));
            for (m, (k, v)) in counters.iter().enumerate() {
                out.push_str(&format!("{}\"{k}\":{v}", if m > 0 { "," } else { "" }));
            }
            out.push('}');
        }
        out.push_str("}}");
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
        let j = to_json(&[(3, s.clone())]);
        assert!(j.contains("\"cpu\":3"), "{j}");
        assert!(j.contains("\"bytes_spliced\":7"), "{j}");
        assert!(j.contains("\"connections_active\":1"), "{j}");
        let t = s.tunnels.counters("a\"b");
        add(&t.bytes_downstream_to_upstream, 5);
        let j = to_json(&[(3, s.clone())]);
        assert!(j.contains("\"tunnels\":{\"a\\\"b\":{\"relays_total\":0,\"relays_active\":0,\"bytes_downstream_to_upstream\":5"), "{j}");
        let p = to_prometheus(&[(3, s)]);
        assert!(p.contains("# TYPE switchyard_bytes_spliced_total counter\nswitchyard_bytes_spliced_total{core=\"0\"} 7\n"), "{p}");
        assert!(p.contains("# TYPE switchyard_connections_active gauge\nswitchyard_connections_active{core=\"0\"} 1\n"), "{p}");
        assert!(p.contains("switchyard_tunnel_bytes_downstream_to_upstream_total{core=\"0\",tunnel=\"a\\\"b\"} 5\n"), "{p}");
        assert!(p.contains("# HELP switchyard_bytes_spliced_total Bytes moved by splice(2), both directions.\n"), "{p}");
    }
}
