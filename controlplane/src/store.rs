//! The embedded store: one redb file (a fleet node's local cache of etcd's
//! tables has the same format, `crate::fleet`).
//!
//! Tables: `tunnels` (name → JSON [`TunnelEntry`]), `tokens` (id → JSON
//! [`TokenEntry`], digest only), `meta` ("version" → store version). A batch
//! of changes is one write transaction; redb's default durability
//! (`Immediate`) makes `commit` return only once the data is on disk, so an
//! API call answers OK only after its change is durable.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};

use crate::error::StoreError;
use crate::model::{TokenEntry, TunnelEntry};

const TUNNELS: TableDefinition<&str, &[u8]> = TableDefinition::new("tunnels");
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// One change to persist.
#[derive(Debug, Clone)]
pub enum Change {
    /// Insert or replace a tunnel (keyed by name).
    PutTunnel(TunnelEntry),
    /// Remove a tunnel by name.
    DelTunnel(String),
    /// Insert or replace a token grant (keyed by id).
    PutToken(TokenEntry),
    /// Remove a token grant by id.
    DelToken(String),
}

/// Everything the store holds, loaded at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Store version.
    pub version: u64,
    /// Tunnels.
    pub tunnels: Vec<TunnelEntry>,
    /// Token grants.
    pub tokens: Vec<TokenEntry>,
}

/// The open store.
#[derive(Debug)]
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the store file and its tables.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| StoreError(e.to_string()))?;
            }
        }
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(TUNNELS)?;
        tx.open_table(TOKENS)?;
        tx.open_table(META)?;
        tx.commit()?;
        Ok(Store { db })
    }

    /// Reads everything.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let tx = self.db.begin_read()?;
        let mut out = Loaded {
            version: tx
                .open_table(META)?
                .get("version")?
                .map(|v| v.value())
                .unwrap_or(0),
            ..Default::default()
        };
        for row in tx.open_table(TUNNELS)?.iter()? {
            let (_, v) = row?;
            out.tunnels.push(serde_json::from_slice(v.value())?);
        }
        for row in tx.open_table(TOKENS)?.iter()? {
            let (_, v) = row?;
            out.tokens.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    /// Replaces every table with `all` in one transaction.
    pub fn replace(&self, all: &Loaded) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.delete_table(TUNNELS)?;
        tx.delete_table(TOKENS)?;
        {
            let mut tunnels = tx.open_table(TUNNELS)?;
            for t in &all.tunnels {
                tunnels.insert(t.name.as_str(), serde_json::to_vec(t)?.as_slice())?;
            }
            let mut tokens = tx.open_table(TOKENS)?;
            for t in &all.tokens {
                tokens.insert(t.id.as_str(), serde_json::to_vec(t)?.as_slice())?;
            }
            tx.open_table(META)?.insert("version", all.version)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Applies a batch and the new version in one durable transaction.
    pub fn commit(&self, changes: &[Change], version: u64) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut tunnels = tx.open_table(TUNNELS)?;
            let mut tokens = tx.open_table(TOKENS)?;
            for c in changes {
                match c {
                    Change::PutTunnel(t) => {
                        tunnels.insert(t.name.as_str(), serde_json::to_vec(t)?.as_slice())?;
                    }
                    Change::DelTunnel(name) => {
                        tunnels.remove(name.as_str())?;
                    }
                    Change::PutToken(t) => {
                        tokens.insert(t.id.as_str(), serde_json::to_vec(t)?.as_slice())?;
                    }
                    Change::DelToken(id) => {
                        tokens.remove(id.as_str())?;
                    }
                }
            }
            tx.open_table(META)?.insert("version", version)?;
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.db");
        let t = TokenEntry {
            id: "tok_1".into(),
            name: "n".into(),
            sha256: [0xab; 32],
            tunnels: vec![],
            expires_at: 0,
            created_at: 1,
        };
        {
            let s = Store::open(&p).unwrap();
            s.commit(&[Change::PutToken(t.clone())], 3).unwrap();
        }
        let s = Store::open(&p).unwrap();
        let l = s.load().unwrap();
        assert_eq!(l.version, 3);
        assert_eq!(l.tokens, vec![t.clone()]);
        s.commit(&[Change::DelToken("tok_1".into())], 4).unwrap();
        assert!(s.load().unwrap().tokens.is_empty());
        s.replace(&Loaded {
            version: 9,
            tunnels: vec![],
            tokens: vec![t.clone()],
        })
        .unwrap();
        let l = s.load().unwrap();
        assert_eq!((l.version, l.tokens), (9, vec![t]));
    }
}
