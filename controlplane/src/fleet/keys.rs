//! The fleet's key layout in etcd, and the translation between etcd's
//! key-value events and the hub's [`Change`]s, without I/O.
//!
//! ```text
//! {prefix}/tunnels/{name}  JSON TunnelEntry (its `version` is the key's mod_revision)
//! {prefix}/hosts/{host}    the name of the tunnel that claims the hostname
//! {prefix}/tokens/{id}     JSON TokenEntry: the SHA-256 of the secret, never the secret
//! {prefix}/nodes/{node}    JSON NodeEntry, under the node's lease
//! ```
//!
//! Uniqueness across the fleet is etcd's compare-and-swap: a create
//! compares the name key and every hostname key to "absent", an update or
//! delete compares the tunnel's mod_revision to the one this node acted on.
//! Two nodes racing for one name: one transaction succeeds, the other's
//! compare fails and it answers ALREADY_EXISTS from the refreshed state.

use crate::model::{TokenEntry, TunnelEntry};
use crate::store::Change;

/// Keys under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

/// What a key under the prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind<'a> {
    /// A tunnel, by name.
    Tunnel(&'a str),
    /// A hostname claim.
    Host(&'a str),
    /// A token grant, by id.
    Token(&'a str),
    /// A registered node.
    Node(&'a str),
}

/// One compare of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmp {
    /// The key does not exist.
    Absent(String),
    /// The key exists.
    Present(String),
    /// The key was last changed at this revision.
    ModRevision(String, i64),
}

/// One operation of a transaction's success branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Put the value.
    Put(String, Vec<u8>),
    /// Delete the key.
    Delete(String),
}

/// A compare-and-swap transaction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnPlan {
    /// All must hold.
    pub when: Vec<Cmp>,
    /// Then these, atomically.
    pub then: Vec<Step>,
}

impl Keys {
    /// Keys under `prefix` (`/switchyard`).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    /// `{prefix}/`: everything of this fleet.
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }
    /// `{prefix}/tunnels/`.
    pub fn tunnels(&self) -> String {
        format!("{}/tunnels/", self.prefix)
    }
    /// `{prefix}/tokens/`.
    pub fn tokens(&self) -> String {
        format!("{}/tokens/", self.prefix)
    }
    /// `{prefix}/nodes/`.
    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }
    /// A tunnel's key.
    pub fn tunnel(&self, name: &str) -> String {
        format!("{}/tunnels/{name}", self.prefix)
    }
    /// A hostname claim's key.
    pub fn host(&self, host: &str) -> String {
        format!("{}/hosts/{host}", self.prefix)
    }
    /// A token grant's key.
    pub fn token(&self, id: &str) -> String {
        format!("{}/tokens/{id}", self.prefix)
    }
    /// A node's registration key.
    pub fn node(&self, node: &str) -> String {
        format!("{}/nodes/{node}", self.prefix)
    }

    /// Classifies a key; `None` outside the layout.
    pub fn kind<'a>(&self, key: &'a [u8]) -> Option<Kind<'a>> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?;
        let (dir, name) = rest.split_once('/')?;
        if name.is_empty() {
            return None;
        }
        Some(match dir {
            "tunnels" => Kind::Tunnel(name),
            "hosts" => Kind::Host(name),
            "tokens" => Kind::Token(name),
            "nodes" => Kind::Node(name),
            _ => return None,
        })
    }

    /// A put or delete seen by the watch (or a range), as a table change;
    /// `Ok(None)` for keys that are no table (claims, nodes, foreign keys).
    pub fn decode(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        mod_revision: i64,
    ) -> Result<Option<Change>, String> {
        let Some(kind) = self.kind(key) else {
            return Ok(None);
        };
        let shown = String::from_utf8_lossy(key);
        Ok(Some(match (kind, value) {
            (Kind::Tunnel(name), Some(v)) => {
                let mut t: TunnelEntry =
                    serde_json::from_slice(v).map_err(|e| format!("{shown}: {e}"))?;
                if t.name != name {
                    return Err(format!("{shown}: holds tunnel `{}`", t.name));
                }
                t.version = mod_revision.max(0) as u64;
                Change::PutTunnel(t)
            }
            (Kind::Tunnel(name), None) => Change::DelTunnel(name.to_owned()),
            (Kind::Token(id), Some(v)) => {
                let t: TokenEntry =
                    serde_json::from_slice(v).map_err(|e| format!("{shown}: {e}"))?;
                if t.id != id {
                    return Err(format!("{shown}: holds token `{}`", t.id));
                }
                Change::PutToken(t)
            }
            (Kind::Token(id), None) => Change::DelToken(id.to_owned()),
            (Kind::Host(_) | Kind::Node(_), _) => return Ok(None),
        }))
    }

    /// The transaction that makes `change`, given the tunnel it replaces or
    /// removes (`old`, as this node knows it).
    pub fn plan(&self, change: &Change, old: Option<&TunnelEntry>) -> Result<TxnPlan, String> {
        let mut p = TxnPlan::default();
        match change {
            Change::PutTunnel(t) => {
                let key = self.tunnel(&t.name);
                let old_hosts: &[String] = old.map(|o| o.hostnames.as_slice()).unwrap_or(&[]);
                match old {
                    None => p.when.push(Cmp::Absent(key.clone())),
                    Some(o) => p.when.push(Cmp::ModRevision(key.clone(), o.version as i64)),
                }
                let mut stored = t.clone();
                stored.version = 0;
                let json = serde_json::to_vec(&stored).map_err(|e| e.to_string())?;
                p.then.push(Step::Put(key, json));
                for h in &t.hostnames {
                    if !old_hosts.contains(h) {
                        p.when.push(Cmp::Absent(self.host(h)));
                        p.then
                            .push(Step::Put(self.host(h), t.name.clone().into_bytes()));
                    }
                }
                for h in old_hosts {
                    if !t.hostnames.contains(h) {
                        p.then.push(Step::Delete(self.host(h)));
                    }
                }
            }
            Change::DelTunnel(name) => {
                let o = old.ok_or_else(|| format!("tunnel `{name}` is not known here"))?;
                let key = self.tunnel(name);
                p.when.push(Cmp::ModRevision(key.clone(), o.version as i64));
                p.then.push(Step::Delete(key));
                for h in &o.hostnames {
                    p.then.push(Step::Delete(self.host(h)));
                }
            }
            Change::PutToken(t) => {
                let key = self.token(&t.id);
                p.when.push(Cmp::Absent(key.clone()));
                for name in &t.tunnels {
                    p.when.push(Cmp::Present(self.tunnel(name)));
                }
                let json = serde_json::to_vec(t).map_err(|e| e.to_string())?;
                p.then.push(Step::Put(key, json));
            }
            Change::DelToken(id) => {
                let key = self.token(id);
                p.when.push(Cmp::Present(key.clone()));
                p.then.push(Step::Delete(key));
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sample_tunnel as tunnel;

    #[test]
    fn classify_and_decode() {
        let k = Keys::new("/sy/");
        assert_eq!(k.kind(b"/sy/tunnels/a"), Some(Kind::Tunnel("a")));
        assert_eq!(k.kind(b"/sy/hosts/a.test"), Some(Kind::Host("a.test")));
        assert_eq!(k.kind(b"/sy/nodes/n1"), Some(Kind::Node("n1")));
        assert_eq!(k.kind(b"/sy/tunnels/"), None);
        assert_eq!(k.kind(b"/syx/tunnels/a"), None);
        assert_eq!(k.kind(b"/sy/other/a"), None);
        let t = tunnel("a", &["a.test"], 0);
        let json = serde_json::to_vec(&t).unwrap();
        match k.decode(b"/sy/tunnels/a", Some(&json), 42).unwrap() {
            Some(Change::PutTunnel(got)) => assert_eq!(got.version, 42),
            other => panic!("{other:?}"),
        }
        assert!(k.decode(b"/sy/tunnels/b", Some(&json), 1).is_err());
        assert!(k.decode(b"/sy/tunnels/a", Some(b"{"), 1).is_err());
        assert!(matches!(
            k.decode(b"/sy/tokens/tok_1", None, 3),
            Ok(Some(Change::DelToken(id))) if id == "tok_1"
        ));
        assert!(matches!(
            k.decode(b"/sy/hosts/a.test", Some(b"a"), 3),
            Ok(None)
        ));
    }

    #[test]
    fn create_update_delete_transactions() {
        let k = Keys::new("/sy");
        let new = tunnel("a", &["a.test", "b.test"], 0);
        let p = k.plan(&Change::PutTunnel(new.clone()), None).unwrap();
        assert_eq!(
            p.when,
            [
                Cmp::Absent("/sy/tunnels/a".into()),
                Cmp::Absent("/sy/hosts/a.test".into()),
                Cmp::Absent("/sy/hosts/b.test".into()),
            ]
        );
        assert_eq!(p.then.len(), 3);

        let old = tunnel("a", &["a.test", "b.test"], 17);
        let upd = tunnel("a", &["b.test", "c.test"], 0);
        let p = k.plan(&Change::PutTunnel(upd), Some(&old)).unwrap();
        assert_eq!(
            p.when,
            [
                Cmp::ModRevision("/sy/tunnels/a".into(), 17),
                Cmp::Absent("/sy/hosts/c.test".into()),
            ]
        );
        assert!(p.then.contains(&Step::Delete("/sy/hosts/a.test".into())));
        assert!(p
            .then
            .contains(&Step::Put("/sy/hosts/c.test".into(), b"a".to_vec())));

        let p = k.plan(&Change::DelTunnel("a".into()), Some(&old)).unwrap();
        assert_eq!(p.when, [Cmp::ModRevision("/sy/tunnels/a".into(), 17)]);
        assert_eq!(p.then.len(), 3);
        assert!(k.plan(&Change::DelTunnel("a".into()), None).is_err());
    }

    #[test]
    fn tokens_store_digests_only_and_need_their_tunnels() {
        let k = Keys::new("/sy");
        let t = TokenEntry {
            id: "tok_1".into(),
            name: "n".into(),
            sha256: [0xab; 32],
            tunnels: vec!["a".into()],
            expires_at: 0,
            created_at: 1,
        };
        let p = k.plan(&Change::PutToken(t), None).unwrap();
        assert_eq!(
            p.when,
            [
                Cmp::Absent("/sy/tokens/tok_1".into()),
                Cmp::Present("/sy/tunnels/a".into()),
            ]
        );
        let Step::Put(_, json) = &p.then[0] else {
            panic!()
        };
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains(&"ab".repeat(32)), "{text}");
    }
}
