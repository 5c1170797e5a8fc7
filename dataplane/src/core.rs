//! What one core shares between its connections (`Rc`: never leaves the
//! core): limits, tables, pools, counters, per-core abuse accounting.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use crate::config::{EdgeSettings, ListenerConfig};
use crate::route::RouteTable;
use crate::stats::CoreStats;

/// State one core shares between its connections (`Rc`: never leaves the core).
#[derive(Debug)]
pub struct CoreCtx {
    /// Index of this core (0-based).
    pub core: usize,
    /// Limits and timeouts.
    pub edge: EdgeSettings,
    /// Routing table; replaced whole when tables change.
    pub routes: RefCell<Rc<RouteTable>>,
    /// This core's counters.
    pub stats: Arc<CoreStats>,
    /// Raised when the edge shuts down (h2 connections send GOAWAY).
    pub stop: Arc<std::sync::atomic::AtomicBool>,
    /// This core's resolver of upstream names (the lookups run off the core).
    pub resolver: crate::resolve::Resolver,
    /// This core's h2c upstream connections.
    pub h2c: crate::upstream::h2c::H2cPool,
    /// This core's h3 upstream connections.
    pub h3: crate::upstream::h3::H3Pool,
    /// Receive windows handed to this core's h2 and h3 connections.
    pub h2_budget: crate::guard::RecvBudget,
    /// Early stream resets per client address (h2).
    pub h2_resets: crate::guard::ResetLimiter,
    /// Every connection and relay task of this core (shutdown waits on it).
    pub gate: glommio::sync::Gate,
    /// Connections this core serves at once; more are refused at accept.
    pub max_connections: usize,
    /// Rate limit of this core's refusal log lines.
    pub log_budget: crate::guard::LogBudget,
    /// `Alt-Svc` of each TLS listener that also serves HTTP/3 (its address
    /// and the field value), for its h1 and h2 answers.
    pub alt_svc: Vec<(std::net::SocketAddr, String)>,
    /// The access log's queue, when lines are written.
    pub access_log: Option<crate::access::AccessLog>,
    /// This core's counters per tunnel, by name (the shared list in
    /// `stats.tunnels` is locked once per tunnel, not per relay).
    pub tunnel_cache: RefCell<std::collections::HashMap<String, Arc<crate::stats::TunnelCounters>>>,
}

impl CoreCtx {
    /// The counters of tunnel `name` on this core.
    pub fn tunnel_counters(&self, name: &str) -> Arc<crate::stats::TunnelCounters> {
        if let Some(c) = self.tunnel_cache.borrow().get(name) {
            return c.clone();
        }
        let c = self.stats.tunnels.counters(name);
        self.tunnel_cache.borrow_mut().insert(name.to_owned(), c.clone());
        c
    }

    /// The `Alt-Svc` value of the listener at `addr`, if it serves HTTP/3.
    pub fn alt_svc_at(&self, addr: std::net::SocketAddr) -> Option<&str> {
        self.alt_svc.iter().find(|(a, _)| *a == addr).map(|(_, v)| v.as_str())
    }

    /// The `Alt-Svc` value for answers on `down` (its listener's; no
    /// system call unless some listener serves HTTP/3).
    pub fn alt_svc(&self, down: &crate::tls::Downstream) -> Option<&str> {
        if self.alt_svc.is_empty() {
            return None;
        }
        let local = down.tcp().local_addr().ok()?;
        self.alt_svc_at(local)
    }
}

/// The `Alt-Svc` field value advertising HTTP/3 on `port` (RFC 7838, one day).
pub fn alt_svc_value(port: u16) -> String {
    format!("h3=\":{port}\"; ma=86400")
}

/// One listener as seen by one core.
pub struct ListenerCtx {
    /// Its configuration.
    pub cfg: ListenerConfig,
    /// TLS acceptor with this core's own rustls config.
    pub tls: Option<futures_rustls::TlsAcceptor>,
}

/// Counts one active connection (or relay task) of a core until dropped.
#[derive(Debug)]
pub struct Active(Arc<CoreStats>);

impl Active {
    /// Counts one more active connection.
    pub fn new(stats: &Arc<CoreStats>) -> Active {
        crate::stats::add(&stats.connections_active, 1);
        Active(stats.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        crate::stats::sub(&self.0.connections_active, 1);
    }
}
