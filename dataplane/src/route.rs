//! Routing: which tunnel serves a request.
//!
//! Each core owns one [`RouteTable`] (`Rc`, no locks). Upgrades and ordinary
//! requests are routed by Host / `:authority`; plain CONNECT is routed by the
//! TLS SNI or the listener's default tunnel, never by the CONNECT target
//! (DESIGN §1), because the target names the proxy's destination, not us.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::auth::{AuthError, TokenSet};
use crate::config::Config;
use crate::managed::Managed;
use crate::message::RequestHead;
use crate::target::host_key;
use crate::target::Upstream;
use crate::tunnel::Tunnel;

/// hostname → tunnel, and name → tunnel, for one core: the static tunnels
/// of the config file first, then the control plane's ([`Managed`], changed
/// in place by this core's ring poller; lookups never hold a borrow across
/// an await).
#[derive(Debug, Default)]
pub struct RouteTable {
    by_host: HashMap<String, Rc<Tunnel>>,
    by_name: HashMap<String, Rc<Tunnel>>,
    managed: Rc<RefCell<Managed>>,
}

impl RouteTable {
    /// Builds a table from a validated configuration (no I/O: upstream
    /// names are resolved when dialed, off the core).
    pub fn build(config: &Config) -> Result<RouteTable, String> {
        let mut table = RouteTable::default();
        for t in &config.tunnels {
            table.insert(Tunnel {
                tokens: TokenSet::from_plain(&t.tokens),
                upstream: Upstream::parse(&t.upstream)?,
                config: t.clone(),
            });
        }
        Ok(table)
    }

    /// Adds or replaces a tunnel.
    pub fn insert(&mut self, tunnel: Tunnel) {
        let tunnel = Rc::new(tunnel);
        for h in &tunnel.config.hostnames {
            self.by_host.insert(h.clone(), tunnel.clone());
        }
        self.by_name.insert(tunnel.config.name.clone(), tunnel);
    }

    /// The tunnel for a Host header value or SNI (case-insensitive, port and
    /// trailing dot ignored).
    pub fn by_host(&self, host: &str) -> Option<Rc<Tunnel>> {
        let key = host_key(host)?;
        match self.by_host.get(&key) {
            Some(t) => Some(t.clone()),
            None => self.managed.borrow().by_host(&key),
        }
    }

    /// The tunnel called `name`.
    pub fn by_name(&self, name: &str) -> Option<Rc<Tunnel>> {
        match self.by_name.get(name) {
            Some(t) => Some(t.clone()),
            None => self.managed.borrow().by_name(name),
        }
    }

    /// Number of static tunnels.
    pub fn static_tunnels(&self) -> usize {
        self.by_name.len()
    }

    /// The control plane's tables, shared with this core's ring poller.
    pub fn managed(&self) -> Rc<RefCell<Managed>> {
        self.managed.clone()
    }

    /// Token auth for `tunnel`: the tunnel's static tokens, or a control-plane
    /// grant whose scope names the tunnel (or all) and that has not expired.
    pub fn authorize(
        &self,
        head: &mut RequestHead,
        query_param: &str,
        tunnel: &Tunnel,
        now_unix_s: u64,
    ) -> Result<(), AuthError> {
        let managed = self.managed.borrow();
        crate::auth::authorize_with(head, query_param, |token| {
            tunnel.tokens.accepts(token) || managed.grants(token, &tunnel.config.name, now_unix_s)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_keys() {
        assert_eq!(
            host_key("Chat.Example:8080").as_deref(),
            Some("chat.example")
        );
        assert_eq!(host_key("chat.example.").as_deref(), Some("chat.example"));
        assert_eq!(host_key("[::1]:443").as_deref(), Some("::1"));
        assert_eq!(host_key("").as_deref(), None);
        assert_eq!(host_key("a:b:c").as_deref(), None);
    }

    #[test]
    fn table_routes_by_host_and_name() {
        let cfg = Config::parse(
            "[[listener]]\naddr=\"127.0.0.1:1\"\n[[tunnel]]\nname=\"t\"\nupstream=\"127.0.0.1:9\"\nhostnames=[\"A.test\"]\nallowed_cidrs=[\"10.0.0.0/8\"]\n",
            std::path::Path::new("."),
        )
        .unwrap();
        let t = RouteTable::build(&cfg).unwrap();
        assert_eq!(t.by_host("a.TEST:80").unwrap().config.name, "t");
        assert!(t.by_host("b.test").is_none());
        let tun = t.by_name("t").unwrap();
        assert!(tun.allows("10.1.2.3".parse().unwrap()));
        assert!(tun.allows("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!tun.allows("192.0.2.1".parse().unwrap()));
    }
}
