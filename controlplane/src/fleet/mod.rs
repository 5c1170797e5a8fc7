//! A fleet of nodes on etcd (DESIGN §9): etcd is the source of truth for
//! tunnels and tokens; every node's control plane follows it and feeds its
//! own cores.
//!
//! ```text
//!  API call ─► hub writer ─► write: plan against the state ─► etcd txn (compare-and-swap)
//!                                                                   │
//!  etcd watch (prefix, from the last revision) ◄────────────────────┘  (own writes come back too)
//!     └─► follow: events → hub.apply_revisions → rings of every core
//!                                 └─► cache: the local redb copy, served when etcd is down at start
//!  nodes: this node's key under a lease; `stats --fleet` asks every registered node
//! ```
//!
//! The revision is the version: a delta carries the revision that made it
//! and the cores report it as `applied_seq` (revisions that touched no table
//! reach them as a `Rebase`). The client is the `etcd-client` crate on the
//! control plane's tokio runtime; the key layout and the translation of
//! events and changes are sans-IO in [`keys`].

pub mod follow;
pub mod keys;
pub mod nodes;
pub mod write;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, Txn, TxnOp};
use tokio::sync::{mpsc, watch};

use crate::config::EtcdConfig;
use crate::error::{ApiError, StoreError};
use crate::store::{Change, Store};
use keys::{Cmp, Keys, Step, TxnPlan};

/// Longest wait for one etcd call (a write answers UNAVAILABLE after it).
pub const CALL: Duration = Duration::from_secs(3);

/// Longest wait for the watch to bring back a write this node made.
pub const ECHO: Duration = Duration::from_secs(5);

/// What the local cache writer is asked to do.
#[derive(Debug)]
pub enum CacheOp {
    /// Apply these changes; the cache is then at `version`.
    Apply(Vec<Change>, u64),
    /// Rewrite the cache from the hub's whole state.
    Replace,
}

/// A node of the fleet: its etcd client and how far it has followed.
pub struct Fleet {
    /// `control.store = "etcd://…"` and friends.
    pub cfg: EtcdConfig,
    /// The key layout under the prefix.
    pub keys: Keys,
    client: tokio::sync::OnceCell<Client>,
    /// Revision confirmed by etcd's progress notifications (for the lag
    /// and for catching up after a failed compare). Never a resume point:
    /// etcd 3.4 can confirm a revision before it delivered its events.
    followed: watch::Sender<u64>,
    /// Revision of the tables this node holds (last event applied, or the
    /// full read): the watch resumes after it.
    applied: watch::Sender<u64>,
    connected: AtomicBool,
    /// etcd has answered at least once since the start.
    answered: AtomicBool,
    progress: mpsc::UnboundedSender<()>,
    progress_rx: Mutex<Option<mpsc::UnboundedReceiver<()>>>,
    cache: mpsc::UnboundedSender<CacheOp>,
    cache_rx: Mutex<Option<mpsc::UnboundedReceiver<CacheOp>>>,
    /// The admin token the fleet's nodes share (to ask each other's stats).
    pub admin_token: Arc<String>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("node", &self.cfg.node)
            .field("endpoints", &self.cfg.endpoints)
            .field("prefix", &self.cfg.prefix)
            .field("followed", &self.followed())
            .field("connected", &self.connected())
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// A fleet member that has not reached etcd yet; `cached` is the
    /// revision of the local cache it starts from.
    pub fn new(cfg: EtcdConfig, cached: u64, admin_token: Arc<String>) -> Arc<Fleet> {
        let (progress, progress_rx) = mpsc::unbounded_channel();
        let (cache, cache_rx) = mpsc::unbounded_channel();
        Arc::new(Fleet {
            keys: Keys::new(&cfg.prefix),
            cfg,
            client: tokio::sync::OnceCell::new(),
            followed: watch::channel(cached).0,
            applied: watch::channel(cached).0,
            connected: AtomicBool::new(false),
            answered: AtomicBool::new(false),
            progress,
            progress_rx: Mutex::new(Some(progress_rx)),
            cache,
            cache_rx: Mutex::new(Some(cache_rx)),
            admin_token,
        })
    }

    /// Whether the watch is established and current.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Whether etcd has answered since this node started (a first read of a
    /// big table can take a while after that).
    pub fn answered(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
    }

    fn set_connected(&self, up: bool) {
        if up {
            self.answered.store(true, Ordering::Relaxed);
        }
        self.connected.store(up, Ordering::Relaxed);
    }

    /// The revision this node has followed etcd to (events applied and
    /// progress confirmed).
    pub fn followed(&self) -> u64 {
        *self.followed.borrow()
    }

    fn advance(&self, rev: u64) {
        raise(&self.followed, rev);
    }

    /// After a full read: this node is at exactly `rev`, even if that is
    /// below where it was (etcd replaced by a new cluster).
    fn reset_to(&self, rev: u64) {
        self.applied.send_replace(rev);
        self.followed.send_replace(rev);
    }

    fn applied_to(&self, rev: u64) {
        raise(&self.applied, rev);
        raise(&self.followed, rev);
    }

    /// The revision of the tables this node holds.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until this node holds the tables of revision `rev` (a write it
    /// made has come back through the watch).
    pub async fn wait_applied(&self, rev: u64, within: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(within, rx.wait_for(|v| *v >= rev))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The client, once etcd has been reached.
    pub fn client(&self) -> Result<Client, ApiError> {
        self.client
            .get()
            .cloned()
            .ok_or_else(|| unavailable("etcd has not been reached since this node started"))
    }

    /// Creates the client (lazily connecting channels; with a user it
    /// authenticates, which needs a member).
    async fn ensure_client(&self) -> Result<Client, String> {
        if let Some(c) = self.client.get() {
            return Ok(c.clone());
        }
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if let Some((user, file)) = &self.cfg.user {
            let password = std::fs::read_to_string(file)
                .map_err(|e| format!("control.etcd.password_file {}: {e}", file.display()))?;
            opts = opts.with_user(user.clone(), password.trim().to_owned());
        }
        if let Some(ca) = &self.cfg.ca {
            let read =
                |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
            let mut tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
            if let Some((cert, key)) = &self.cfg.identity {
                tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
            }
            opts = opts.with_tls(tls);
        }
        let client = tokio::time::timeout(CALL, Client::connect(&self.cfg.endpoints, Some(opts)))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok(self.client.get_or_init(|| async { client }).await.clone())
    }

    /// Waits until the watch has brought this node to `rev` (asking etcd
    /// for a progress notification, so a revision without table events
    /// counts too).
    pub async fn sync_to(&self, rev: u64, within: Duration) -> bool {
        let mut rx = self.followed.subscribe();
        if *rx.borrow() >= rev {
            return true;
        }
        let _ = self.progress.send(());
        tokio::time::timeout(within, rx.wait_for(|v| *v >= rev))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn cache_apply(&self, changes: Vec<Change>, version: u64) {
        let _ = self.cache.send(CacheOp::Apply(changes, version));
    }

    fn cache_replace(&self) {
        let _ = self.cache.send(CacheOp::Replace);
    }
}

fn raise(w: &watch::Sender<u64>, rev: u64) {
    w.send_if_modified(|v| {
        let moved = rev > *v;
        if moved {
            *v = rev;
        }
        moved
    });
}

/// An UNAVAILABLE answer that says why.
pub fn unavailable(why: impl std::fmt::Display) -> ApiError {
    ApiError::Store(StoreError(format!("etcd: {why}")))
}

/// A [`TxnPlan`] as an etcd transaction.
pub fn to_txn(p: &TxnPlan) -> Txn {
    let when: Vec<Compare> = p
        .when
        .iter()
        .map(|c| match c {
            Cmp::Absent(k) => Compare::create_revision(k.as_str(), CompareOp::Equal, 0),
            Cmp::Present(k) => Compare::create_revision(k.as_str(), CompareOp::Greater, 0),
            Cmp::ModRevision(k, r) => Compare::mod_revision(k.as_str(), CompareOp::Equal, *r),
        })
        .collect();
    let then: Vec<TxnOp> = p
        .then
        .iter()
        .map(|s| match s {
            Step::Put(k, v) => TxnOp::put(k.as_str(), v.clone(), None),
            Step::Delete(k) => TxnOp::delete(k.as_str(), None),
        })
        .collect();
    Txn::new().when(when).and_then(then)
}

/// Keeps the local cache file: applies what the follower sends, coalescing
/// whatever queued up into one transaction, off the path to the cores.
pub async fn cache_writer(hub: Arc<crate::hub::Hub>, fleet: Arc<Fleet>, store: Arc<Store>) {
    let Some(mut rx) = fleet.cache_rx.lock().ok().and_then(|mut g| g.take()) else {
        return;
    };
    while let Some(first) = rx.recv().await {
        let mut ops = vec![first];
        while let Ok(more) = rx.try_recv() {
            ops.push(more);
        }
        // Everything before the last Replace is contained in it.
        if let Some(at) = ops.iter().rposition(|o| matches!(o, CacheOp::Replace)) {
            ops.drain(..at);
        }
        let (hub, store) = (hub.clone(), store.clone());
        let done = tokio::task::spawn_blocking(move || -> Result<u64, StoreError> {
            let mut version = 0;
            for op in ops {
                match op {
                    CacheOp::Replace => {
                        let loaded = hub.read(|st| st.to_loaded());
                        version = loaded.version;
                        store.replace(&loaded)?;
                    }
                    CacheOp::Apply(changes, v) => {
                        store.commit(&changes, v)?;
                        version = v;
                    }
                }
            }
            Ok(version)
        })
        .await;
        match done {
            Ok(Ok(v)) => tracing::debug!(version = v, "cache written"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cache write failed (the tables still serve)"),
            Err(e) => tracing::warn!(error = %e, "cache writer failed"),
        }
    }
}
