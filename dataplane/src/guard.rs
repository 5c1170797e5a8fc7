//! Per-core limits that an HTTP/2 client cannot escape by opening more
//! streams or more connections. Sans-IO: the caller passes `now`.
//!
//! * [`RecvBudget`]: what the edge may hold of request bodies and tunnel
//!   bytes it received but has not sent on. Stream credit is released only
//!   as bytes leave (`relay::h2`, `forward`), so a connection holds at most
//!   its connection window; each connection's window is reserved from this
//!   core-wide budget, and a connection that finds the budget spent gets the
//!   protocol minimum (65,535 bytes, RFC 9113 §6.9.2) instead.
//! * [`ResetLimiter`]: streams the client resets after we accepted them and
//!   before we answered (each one may have cost an upstream dial). Counted
//!   per client address (IPv4 /32, IPv6 /64) in a token bucket that survives
//!   reconnects; an address that empties it gets GOAWAY(ENHANCE_YOUR_CALM)
//!   on its connection, and on new ones until a second's worth of resets
//!   has been earned back. h2's own
//!   limit (`max_pending_accept_reset_streams`) covers resets that arrive
//!   before a stream is accepted.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// The connection window every HTTP/2 connection starts with.
pub const PROTOCOL_MIN_WINDOW: u32 = 65_535;

/// Receive-window bytes one core hands out across its h2 connections.
#[derive(Debug)]
pub struct RecvBudget {
    left: Cell<u64>,
}

/// A connection's share of a [`RecvBudget`]; returned when dropped.
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a RecvBudget,
    taken: u64,
    /// The connection window to advertise.
    pub window: u32,
}

impl RecvBudget {
    /// A budget of `total` bytes.
    pub fn new(total: u64) -> RecvBudget {
        RecvBudget {
            left: Cell::new(total),
        }
    }

    /// A connection window of up to `want` bytes (at least the protocol
    /// minimum, which is not taken from the budget).
    pub fn reserve(&self, want: u32) -> Reservation<'_> {
        let extra = u64::from(want.saturating_sub(PROTOCOL_MIN_WINDOW));
        let taken = extra.min(self.left.get());
        self.left.set(self.left.get() - taken);
        Reservation {
            budget: self,
            taken,
            window: PROTOCOL_MIN_WINDOW + taken as u32,
        }
    }

    /// Bytes not reserved.
    #[cfg(test)]
    pub fn left(&self) -> u64 {
        self.left.get()
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget.left.set(self.budget.left.get() + self.taken);
    }
}

/// Early resets one address may make in a burst.
pub const RESET_BURST: f64 = 200.0;
/// Early resets per second an address earns back.
pub const RESET_RATE: f64 = 20.0;
/// Resets an address that ran out must have earned back before it is
/// served again (one second's worth), so a refused client that reconnects
/// at once is refused again.
pub const RESET_REOPEN: f64 = RESET_RATE;
/// Addresses tracked per core; beyond this, full (innocent) buckets are
/// forgotten first.
const MAX_TRACKED: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant) -> Bucket {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * RESET_RATE;
        Bucket {
            tokens: (self.tokens + earned).min(RESET_BURST),
            at: now,
        }
    }
}

/// Early-reset accounting per client address (see the module docs).
#[derive(Debug, Default)]
pub struct ResetLimiter {
    buckets: RefCell<HashMap<IpAddr, Bucket>>,
}

/// An address's accounting key: IPv4 as is, IPv6 by its /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6([s[0], s[1], s[2], s[3], 0, 0, 0, 0].into())
            }
        },
        v4 => v4,
    }
}

impl ResetLimiter {
    /// Whether a new connection from `ip` may be served: its bucket holds
    /// at least [`RESET_REOPEN`] resets.
    pub fn allows(&self, ip: IpAddr, now: Instant) -> bool {
        match self.buckets.borrow().get(&key(ip)) {
            Some(b) => b.refilled(now).tokens >= RESET_REOPEN,
            None => true,
        }
    }

    /// Charges one early reset to `ip`; `false` once its bucket is empty.
    pub fn charge(&self, ip: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.borrow_mut();
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&key(ip)) {
            buckets.retain(|_, b| b.refilled(now).tokens < RESET_BURST);
            if buckets.len() >= MAX_TRACKED {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(key(ip)).or_insert(Bucket {
            tokens: RESET_BURST,
            at: now,
        });
        *bucket = bucket.refilled(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
        }
        bucket.tokens >= 1.0
    }

    /// Addresses currently tracked.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.buckets.borrow().len()
    }
}

/// Warning lines one core writes per second about refused clients; the
/// rest are counted and summed into the next line written.
pub const LOG_LINES_PER_SECOND: u32 = 50;

/// Rate limit of one core's refusal log lines: an attack gets a bounded
/// log, and each line after a quiet-down says how many it stands for.
#[derive(Debug)]
pub struct LogBudget {
    window: Cell<Instant>,
    used: Cell<u32>,
    suppressed: Cell<u64>,
}

impl Default for LogBudget {
    fn default() -> LogBudget {
        LogBudget {
            window: Cell::new(Instant::now()),
            used: Cell::new(0),
            suppressed: Cell::new(0),
        }
    }
}

impl LogBudget {
    /// `Some(n)`: write this line, and say that `n` lines were suppressed
    /// before it; `None`: suppress it (counted).
    pub fn take(&self, now: Instant) -> Option<u64> {
        if now.saturating_duration_since(self.window.get()).as_secs() >= 1 {
            self.window.set(now);
            self.used.set(0);
        }
        if self.used.get() >= LOG_LINES_PER_SECOND {
            self.suppressed.set(self.suppressed.get() + 1);
            return None;
        }
        self.used.set(self.used.get() + 1);
        Some(self.suppressed.replace(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn budget_reserves_and_returns() {
        let b = RecvBudget::new(4 << 20);
        let r1 = b.reserve(4 << 20);
        assert_eq!(r1.window, 4 << 20);
        let r2 = b.reserve(4 << 20);
        assert_eq!(r2.window, PROTOCOL_MIN_WINDOW + PROTOCOL_MIN_WINDOW);
        let r3 = b.reserve(4 << 20);
        assert_eq!(r3.window, PROTOCOL_MIN_WINDOW);
        drop((r1, r2, r3));
        assert_eq!(b.left(), 4 << 20);
    }

    #[test]
    fn resets_are_limited_per_address_and_refill() {
        let l = ResetLimiter::default();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let mut allowed = 0;
        while l.charge(a, t0) {
            allowed += 1;
        }
        assert_eq!(allowed, RESET_BURST as usize - 1);
        assert!(!l.allows(a, t0));
        assert!(l.allows(other, t0));
        // The same /64 is one client; ::ffff:a is a.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::ffff".parse().unwrap();
        while l.charge(v6a, t0) {}
        assert!(!l.allows(v6b, t0));
        assert!(!l.allows("::ffff:192.0.2.1".parse().unwrap(), t0));
        assert!(!l.allows(a, t0 + Duration::from_millis(500)));
        assert!(l.allows(a, t0 + Duration::from_millis(1000)));
    }

    #[test]
    fn log_lines_are_limited_per_second() {
        let b = LogBudget::default();
        let t0 = Instant::now();
        let written = (0..1000).filter(|_| b.take(t0).is_some()).count();
        assert_eq!(written, LOG_LINES_PER_SECOND as usize);
        assert_eq!(b.take(t0 + Duration::from_secs(1)), Some(1000 - written as u64));
    }

    #[test]
    fn tracking_is_bounded() {
        let l = ResetLimiter::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            l.charge(IpAddr::V4(i.into()), t0);
        }
        assert!(l.tracked() <= MAX_TRACKED);
    }
}
