//! The control plane's tunnels and token grants, as one core holds them.
//!
//! Built from ring records ([`shmring::Record`]): deltas change a
//! [`Managed`] in place; a snapshot builds a fresh one aside and replaces the
//! old one whole. Tokens are SHA-256 digests with a scope (tunnel names, or
//! every tunnel) and an expiry; the secret never reaches this process.

use std::collections::HashMap;
use std::rc::Rc;

use subtle::ConstantTimeEq;

use crate::auth::{digest, TokenSet};
use crate::config::{TunnelConfig, TunnelMode, UpstreamVersion};
use crate::target::host_key;
use crate::target::Upstream;
use crate::tunnel::Tunnel;

/// One token grant.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Unix seconds after which it is refused; 0 = never.
    pub expires_unix_s: u64,
    /// Tunnel names it opens; empty = every tunnel.
    pub tunnels: Vec<String>,
}

/// Hashes a SHA-256 digest by its first 8 bytes: digests are already
/// uniform, and a client cannot aim at a bucket without a SHA-256 preimage,
/// so SipHash would only add cost to every auth check and snapshot insert.
/// Must stay [`shmring::order::digest_hash`]: snapshots arrive sorted by it.
#[derive(Debug, Default, Clone, Copy)]
pub struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as its length prefix, then the bytes.
        if bytes.len() >= 8 {
            let mut a = [0u8; 8];
            a.copy_from_slice(&bytes[..8]);
            self.0 ^= u64::from_le_bytes(a);
        }
    }
    fn write_usize(&mut self, _: usize) {}
}

type DigestMap<V> = HashMap<[u8; 32], V, std::hash::BuildHasherDefault<DigestHasher>>;

/// Control-plane tunnels and grants of one core.
#[derive(Debug, Default)]
pub struct Managed {
    by_host: HashMap<String, Rc<Tunnel>>,
    by_name: HashMap<String, Rc<Tunnel>>,
    grants: DigestMap<Grant>,
}

/// Current Unix time in seconds.
pub fn now_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Why a tunnel record was not applied.
#[derive(Debug, thiserror::Error)]
#[error("tunnel `{name}`: {reason}")]
pub struct RecordError {
    name: String,
    reason: String,
}

/// Builds a data-plane tunnel from a ring record (no I/O: an upstream name
/// is resolved when dialed, off the core).
pub fn tunnel_from(rec: shmring::TunnelRec) -> Result<Tunnel, RecordError> {
    let err = |reason: String| RecordError {
        name: rec.name.clone(),
        reason,
    };
    let upstream = Upstream::parse(&rec.upstream).map_err(err)?;
    let mut allowed_cidrs = Vec::new();
    for c in &rec.trusted_cidrs {
        allowed_cidrs.push(
            c.parse::<ipnet::IpNet>()
                .map_err(|_| err(format!("`{c}` is not a CIDR")))?,
        );
    }
    let mode = match rec.mode {
        2 => TunnelMode::HttpUpgrade,
        _ => TunnelMode::Http,
    };
    Ok(Tunnel {
        config: TunnelConfig {
            name: rec.name,
            hostnames: rec.hostnames.iter().filter_map(|h| host_key(h)).collect(),
            upstream: rec.upstream,
            mode,
            path: rec.path,
            token_auth: rec.token_auth,
            tokens: Vec::new(),
            stealth: rec.stealth,
            allowed_cidrs,
            allowed_upgrades: Vec::new(),
            allow_connect: true,
            http_version: match rec.http_version {
                2 => UpstreamVersion::H2c,
                3 => UpstreamVersion::H3,
                _ => UpstreamVersion::Http1,
            },
            upstream_tls: crate::config::UpstreamTls {
                ca: None,
                ca_pem: (!rec.upstream_ca_pem.is_empty()).then(|| rec.upstream_ca_pem.clone()),
                server_name: (!rec.upstream_server_name.is_empty()).then(|| rec.upstream_server_name.clone()),
                insecure: rec.upstream_insecure,
            },
        },
        tokens: TokenSet::default(),
        upstream,
    })
}

impl Managed {
    /// An empty table with room for a snapshot's announced counts (growing
    /// a million-entry map costs several rehashes).
    pub fn with_capacity(tunnels: usize, tokens: usize) -> Managed {
        Managed {
            by_host: HashMap::with_capacity(tunnels),
            by_name: HashMap::with_capacity(tunnels),
            grants: DigestMap::with_capacity_and_hasher(tokens, Default::default()),
        }
    }

    /// Tunnel by normalized host key.
    pub fn by_host(&self, key: &str) -> Option<Rc<Tunnel>> {
        self.by_host.get(key).cloned()
    }

    /// Tunnel by name.
    pub fn by_name(&self, name: &str) -> Option<Rc<Tunnel>> {
        self.by_name.get(name).cloned()
    }

    /// Whether a presented token holds a live grant for `tunnel`.
    pub fn grants(&self, token: &[u8], tunnel: &str, now: u64) -> bool {
        if self.grants.is_empty() {
            return false;
        }
        let d = digest(token);
        let Some((stored, g)) = self.grants.get_key_value(&d) else {
            return false;
        };
        bool::from(stored.ct_eq(&d))
            && (g.expires_unix_s == 0 || now < g.expires_unix_s)
            && (g.tunnels.is_empty() || g.tunnels.iter().any(|t| t == tunnel))
    }

    /// Adds or replaces a tunnel (by name).
    pub fn upsert_tunnel(&mut self, t: Tunnel) {
        self.delete_tunnel(&t.config.name.clone());
        let t = Rc::new(t);
        for h in &t.config.hostnames {
            self.by_host.insert(h.clone(), t.clone());
        }
        self.by_name.insert(t.config.name.clone(), t);
    }

    /// Removes a tunnel.
    pub fn delete_tunnel(&mut self, name: &str) {
        if let Some(old) = self.by_name.remove(name) {
            for h in &old.config.hostnames {
                if self
                    .by_host
                    .get(h)
                    .is_some_and(|t| t.config.name == old.config.name)
                {
                    self.by_host.remove(h);
                }
            }
        }
    }

    /// Adds or replaces a grant.
    pub fn upsert_token(&mut self, rec: shmring::TokenRec) {
        self.grants.insert(
            rec.digest,
            Grant {
                expires_unix_s: rec.expires_unix_s,
                tunnels: rec.tunnels,
            },
        );
    }

    /// Removes a grant.
    pub fn revoke_token(&mut self, digest: &[u8; 32]) {
        self.grants.remove(digest);
    }

    /// Drops the tables a slice at a time, letting the core's I/O and other
    /// tasks run in between: a replaced snapshot must not stall relays.
    pub async fn free_in_slices(self) {
        const TUNNELS: usize = 1024;
        const GRANTS: usize = 16 * 1024;
        let Managed {
            by_host,
            by_name,
            mut grants,
        } = self;
        for map in [by_host, by_name] {
            let mut entries = map.into_values();
            while entries.by_ref().take(TUNNELS).count() > 0 {
                glommio::executor().yield_task_queue_now().await;
            }
        }
        let mut entries = grants.drain();
        while entries.by_ref().take(GRANTS).count() > 0 {
            glommio::executor().yield_task_queue_now().await;
        }
    }

    /// Tunnels held.
    pub fn tunnels(&self) -> usize {
        self.by_name.len()
    }

    /// Grants held.
    pub fn tokens(&self) -> usize {
        self.grants.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_and_expiry() {
        let mut m = Managed::default();
        m.upsert_token(shmring::TokenRec {
            digest: digest(b"all"),
            expires_unix_s: 0,
            tunnels: vec![],
        });
        m.upsert_token(shmring::TokenRec {
            digest: digest(b"chat-only"),
            expires_unix_s: 100,
            tunnels: vec!["chat".into()],
        });
        assert!(m.grants(b"all", "x", 50));
        assert!(m.grants(b"chat-only", "chat", 50));
        assert!(!m.grants(b"chat-only", "other", 50));
        assert!(!m.grants(b"chat-only", "chat", 100), "expired");
        assert!(!m.grants(b"nope", "chat", 50));
        m.revoke_token(&digest(b"all"));
        assert!(!m.grants(b"all", "x", 50));
    }

    #[test]
    fn tunnels_replace_and_delete() {
        let mut m = Managed::default();
        let rec = |hosts: &[&str]| shmring::TunnelRec {
            name: "t".into(),
            hostnames: hosts.iter().map(|h| h.to_string()).collect(),
            upstream: "127.0.0.1:9".into(),
            mode: 1,
            http_version: 1,
            path: "/".into(),
            ..Default::default()
        };
        m.upsert_tunnel(tunnel_from(rec(&["a.test", "b.test"])).unwrap());
        m.upsert_tunnel(tunnel_from(rec(&["b.test"])).unwrap());
        assert!(m.by_host("a.test").is_none());
        assert!(m.by_host("b.test").is_some());
        m.delete_tunnel("t");
        assert!(m.by_host("b.test").is_none());
        assert_eq!(m.tunnels(), 0);
    }
}
