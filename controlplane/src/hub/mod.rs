//! The control plane's one source of truth: in-memory state mirrored by the
//! store, changed only by one writer task, and fanned out to every core's
//! ring producer.
//!
//! ```text
//! one node (redb):
//! API call ─► ops channel ─► writer: validate batch → store.commit (durable)
//!                                   → state (write lock) → version += n
//!                                   → encoded deltas to every core's channel ─► pusher ─► ring
//! fleet (etcd, crate::fleet):
//! API call ─► ops channel ─► writer: validate → etcd txn ─► … watch ─► apply_revisions
//!                                   (state + deltas numbered by revision, Rebase across gaps)
//! ```
//!
//! `batch` decides which queued changes share a batch; `snapshot` encodes
//! full tables for cores that (re)attach or fell behind.
//!
//! Group commit: consecutive token operations waiting in the channel are
//! validated and committed as one transaction (one fsync), which is what
//! makes a burst of token upserts cheap. Deltas are sent while the write lock
//! is held and a snapshot is taken under the read lock while draining the
//! core's channel, so a snapshot plus the deltas after it is exactly the
//! store's history.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use shmring::{Body, Record, Region};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::fleet::Fleet;
use crate::model::{self, TokenEntry, TunnelEntry};
use crate::store::{Change, Loaded, Store};

/// Where changes are made durable.
#[derive(Debug)]
pub enum Backend {
    /// One node: the writer commits to the redb file, then publishes.
    File(Arc<Store>),
    /// A fleet: the writer commits to etcd; the node's follower publishes
    /// what the watch brings back (its own writes included).
    Etcd(Arc<Fleet>),
}

/// A tunnel reference from the API: by id or by name.
#[derive(Debug, Clone)]
pub enum Key {
    /// Server-assigned id.
    Id(String),
    /// Unique name.
    Name(String),
}

/// A change request (already validated field by field).
#[derive(Debug, Clone)]
pub enum Op {
    /// New tunnel.
    CreateTunnel(TunnelEntry),
    /// Replace a tunnel's properties.
    UpdateTunnel(Key, TunnelEntry),
    /// Remove a tunnel.
    DeleteTunnel(Key),
    /// New token grant.
    CreateToken(TokenEntry),
    /// Remove a token grant by id.
    RevokeToken(String),
}

/// What a change produced.
#[derive(Debug)]
pub enum Done {
    /// The tunnel as stored.
    Tunnel(TunnelEntry),
    /// The token grant as stored.
    Token(TokenEntry),
    /// Removed.
    Deleted,
}

/// Tables and version.
#[derive(Debug, Default)]
pub struct State {
    /// Store version: bumped by every change.
    pub version: u64,
    /// By name.
    pub tunnels: BTreeMap<String, TunnelEntry>,
    /// By id.
    pub tokens: BTreeMap<String, TokenEntry>,
    hosts: HashMap<String, String>,
}

impl State {
    /// A copy of the tables (the fleet's local cache is rewritten from it).
    pub fn to_loaded(&self) -> Loaded {
        Loaded {
            version: self.version,
            tunnels: self.tunnels.values().cloned().collect(),
            tokens: self.tokens.values().cloned().collect(),
        }
    }

    /// Tables equal (versions included)?
    pub fn same_tables(&self, other: &State) -> bool {
        self.tunnels == other.tunnels && self.tokens == other.tokens
    }

    pub(crate) fn from_loaded(l: Loaded) -> State {
        let mut s = State {
            version: l.version,
            ..Default::default()
        };
        for t in l.tunnels {
            s.put_tunnel(t);
        }
        for t in l.tokens {
            s.tokens.insert(t.id.clone(), t);
        }
        s
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::PutTunnel(t) => self.put_tunnel(t),
            Change::DelTunnel(n) => self.del_tunnel(&n),
            Change::PutToken(t) => {
                self.tokens.insert(t.id.clone(), t);
            }
            Change::DelToken(id) => {
                self.tokens.remove(&id);
            }
        }
    }

    fn put_tunnel(&mut self, t: TunnelEntry) {
        if let Some(old) = self.tunnels.remove(&t.name) {
            for h in &old.hostnames {
                self.hosts.remove(h);
            }
        }
        for h in &t.hostnames {
            self.hosts.insert(h.clone(), t.name.clone());
        }
        self.tunnels.insert(t.name.clone(), t);
    }

    fn del_tunnel(&mut self, name: &str) {
        if let Some(old) = self.tunnels.remove(name) {
            for h in &old.hostnames {
                self.hosts.remove(h);
            }
        }
    }

    /// Finds a tunnel by id or name.
    pub fn find(&self, key: &Key) -> Option<&TunnelEntry> {
        match key {
            Key::Name(n) => self.tunnels.get(n),
            Key::Id(id) => self.tunnels.values().find(|t| &t.id == id),
        }
    }

    fn hosts_free(&self, t: &TunnelEntry) -> Result<(), ApiError> {
        for h in &t.hostnames {
            if let Some(owner) = self.hosts.get(h) {
                if owner != &t.name {
                    return Err(ApiError::Exists(format!(
                        "tunnel.hostnames: `{h}` is claimed by tunnel `{owner}`"
                    )));
                }
            }
        }
        Ok(())
    }
}

pub(crate) type Reply = oneshot::Sender<Result<Done, ApiError>>;

mod batch;
mod snapshot;

use batch::Touched;
pub use snapshot::Snapshot;

/// Shared handle: read the state, submit changes, take snapshots.
#[derive(Debug)]
pub struct Hub {
    state: RwLock<State>,
    /// The last snapshot encoded, by store version and generation: cores
    /// that resync together (a restarted data plane) share one encoding.
    snapshot_cache: std::sync::Mutex<Option<(u64, u64, Arc<Snapshot>)>>,
    ops: mpsc::Sender<(Op, Reply)>,
    cores: Vec<mpsc::UnboundedSender<Arc<Vec<u8>>>>,
    region: Option<Arc<Region>>,
    /// Where the writer makes changes durable.
    pub backend: Backend,
}

/// Per-core delta receivers, one per ring producer.
pub type CoreFeeds = Vec<mpsc::UnboundedReceiver<Arc<Vec<u8>>>>;

impl Hub {
    /// Starts the writer task on `loaded` (the file's tables, or in a
    /// fleet the local cache until the follower has read etcd).
    pub fn start(
        backend: Backend,
        loaded: Loaded,
        cores: usize,
        region: Option<Arc<Region>>,
    ) -> Result<(Arc<Hub>, CoreFeeds), ApiError> {
        let state = State::from_loaded(loaded);
        let (ops, rx) = mpsc::channel(8192);
        let mut txs = Vec::new();
        let mut rxs = Vec::new();
        for _ in 0..cores {
            let (tx, rx) = mpsc::unbounded_channel();
            txs.push(tx);
            rxs.push(rx);
        }
        if let Some(r) = &region {
            r.header(shmring::layout::H_STORE_VERSION)
                .store(state.version, std::sync::atomic::Ordering::Release);
        }
        let hub = Arc::new(Hub {
            state: RwLock::new(state),
            snapshot_cache: std::sync::Mutex::new(None),
            ops,
            cores: txs,
            region,
            backend,
        });
        tokio::spawn(writer(hub.clone(), rx));
        Ok((hub, rxs))
    }

    /// Sends `rec` to every core and applies `change`, so the cores end at
    /// `st.version == rec.seq`. Called with the write lock held (deltas go
    /// out in version order; a snapshot taken under the read lock sees a
    /// state and a feed that agree). A version gap (etcd revisions that
    /// touched no table) goes first as a `Rebase`.
    fn publish_locked(&self, st: &mut State, change: Change, rec: Record) {
        if rec.seq > st.version + 1 {
            self.broadcast(&Record {
                seq: rec.seq - 1,
                body: Body::Rebase { from: st.version },
            });
        }
        self.broadcast(&rec);
        st.apply(change);
        st.version = rec.seq;
    }

    fn broadcast(&self, rec: &Record) {
        if let Ok(bytes) = rec.to_bytes() {
            let bytes = Arc::new(bytes);
            for tx in &self.cores {
                let _ = tx.send(bytes.clone());
            }
        }
    }

    fn publish_version(&self, st: &State) {
        if let Some(r) = &self.region {
            r.header(shmring::layout::H_STORE_VERSION)
                .store(st.version, std::sync::atomic::Ordering::Release);
        }
    }

    /// Applies what a fleet's watch brought: changes grouped by the etcd
    /// revision that made them, in revision order. A revision with one table
    /// change is one delta; one with several (a foreign multi-key
    /// transaction) cannot be numbered for the cores and resyncs them with a
    /// snapshot instead.
    pub(crate) fn apply_revisions(&self, revisions: Vec<(u64, Vec<Change>)>) {
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut resync = false;
        for (rev, changes) in revisions {
            if rev <= st.version {
                continue;
            }
            let body = match changes.as_slice() {
                [one] => body_of(&st, one),
                _ => None,
            };
            match body {
                Some(Some(body)) if changes.len() == 1 => {
                    let change = changes.into_iter().next().expect("one change");
                    self.publish_locked(&mut st, change, Record { seq: rev, body });
                }
                Some(None) => {
                    // No table effect for the cores (e.g. a token id that
                    // was never granted): move them along.
                    self.broadcast(&Record {
                        seq: rev,
                        body: Body::Rebase { from: st.version },
                    });
                    for c in changes {
                        st.apply(c);
                    }
                    st.version = rev;
                }
                _ => {
                    for c in changes {
                        st.apply(c);
                    }
                    st.version = rev;
                    resync = true;
                }
            }
        }
        self.publish_version(&st);
        drop(st);
        if resync {
            self.request_snapshots("several table changes in one etcd revision");
        }
    }

    /// Replaces the whole state (a fleet's full read of etcd, at revision
    /// `loaded.version`). Equal tables only move the cores' version along;
    /// different ones go to every core as a snapshot.
    pub(crate) fn replace(&self, loaded: Loaded) -> bool {
        let fresh = State::from_loaded(loaded);
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        // A revision below the cores' (etcd replaced by a new cluster) must
        // reach them as a snapshot too: a delta at or below it is skipped.
        let same = st.same_tables(&fresh) && fresh.version >= st.version;
        if same {
            if fresh.version > st.version {
                self.broadcast(&Record {
                    seq: fresh.version,
                    body: Body::Rebase { from: st.version },
                });
                st.version = fresh.version;
            }
        } else {
            *st = fresh;
        }
        self.publish_version(&st);
        drop(st);
        if !same {
            self.request_snapshots("tables read again from etcd");
        }
        !same
    }

    /// Asks every core's producer for a snapshot (as if the core had).
    fn request_snapshots(&self, why: &str) {
        let Some(r) = &self.region else { return };
        tracing::info!(why, "sending every core a snapshot");
        for core in 0..r.layout().cores as usize {
            if let Some(need) = r.stat(core, shmring::layout::stat::NEED_SNAPSHOT) {
                need.store(1, std::sync::atomic::Ordering::Release);
            }
        }
    }

    /// Runs `f` on the current state.
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let g = self.state.read().unwrap_or_else(|e| e.into_inner());
        f(&g)
    }

    /// Submits a change and waits until it is durable and published.
    pub async fn submit(&self, op: Op) -> Result<Done, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send((op, tx))
            .await
            .map_err(|_| ApiError::ShuttingDown)?;
        rx.await.map_err(|_| ApiError::ShuttingDown)?
    }
}

/// The delta a watched change is for the cores: `Some(None)` when it
/// changes nothing they hold, `None` when it needs two records (a token id
/// re-pointed at another digest).
fn body_of(st: &State, change: &Change) -> Option<Option<Body>> {
    Some(Some(match change {
        Change::PutTunnel(t) => Body::TunnelUpsert(t.to_rec()),
        Change::DelTunnel(n) if st.tunnels.contains_key(n) => {
            Body::TunnelDelete { name: n.clone() }
        }
        Change::DelTunnel(_) => return Some(None),
        Change::PutToken(t) => {
            if st
                .tokens
                .get(&t.id)
                .is_some_and(|old| old.sha256 != t.sha256)
            {
                return None;
            }
            Body::TokenUpsert(t.to_rec())
        }
        Change::DelToken(id) => match st.tokens.get(id) {
            Some(t) => Body::TokenRevoke { digest: t.sha256 },
            None => return Some(None),
        },
    }))
}

/// Validates one op against `st` plus what this batch already did.
pub(crate) fn plan(
    st: &State,
    op: Op,
    revoked: &mut HashSet<String>,
    version: u64,
) -> Result<(Change, Done, Body), ApiError> {
    match op {
        Op::CreateTunnel(mut t) => {
            if st.tunnels.contains_key(&t.name) {
                return Err(ApiError::Exists(format!(
                    "tunnel.name: `{}` already exists",
                    t.name
                )));
            }
            st.hosts_free(&t)?;
            t.id = model::new_id("tun");
            t.created_at = model::now_s();
            t.version = version;
            let body = Body::TunnelUpsert(t.to_rec());
            Ok((Change::PutTunnel(t.clone()), Done::Tunnel(t), body))
        }
        Op::UpdateTunnel(key, mut t) => {
            let old = st.find(&key).ok_or_else(|| not_found(&key))?;
            if t.name != old.name {
                return Err(ApiError::Invalid {
                    field: "tunnel.name".into(),
                    reason: "cannot be changed (delete and create instead)".into(),
                });
            }
            st.hosts_free(&t)?;
            t.id = old.id.clone();
            t.created_at = old.created_at;
            t.version = version;
            let body = Body::TunnelUpsert(t.to_rec());
            Ok((Change::PutTunnel(t.clone()), Done::Tunnel(t), body))
        }
        Op::DeleteTunnel(key) => {
            let old = st.find(&key).ok_or_else(|| not_found(&key))?;
            let name = old.name.clone();
            let body = Body::TunnelDelete { name: name.clone() };
            Ok((Change::DelTunnel(name), Done::Deleted, body))
        }
        Op::CreateToken(t) => {
            for name in &t.tunnels {
                if !st.tunnels.contains_key(name) {
                    return Err(ApiError::Invalid {
                        field: "tunnels".into(),
                        reason: format!("no tunnel is named `{name}`"),
                    });
                }
            }
            let body = Body::TokenUpsert(t.to_rec());
            Ok((Change::PutToken(t.clone()), Done::Token(t), body))
        }
        Op::RevokeToken(id) => {
            let t = st
                .tokens
                .get(&id)
                .filter(|_| !revoked.contains(&id))
                .ok_or_else(|| ApiError::NotFound(format!("no token with id `{id}`")))?;
            revoked.insert(id.clone());
            let body = Body::TokenRevoke { digest: t.sha256 };
            Ok((Change::DelToken(id), Done::Deleted, body))
        }
    }
}

fn not_found(key: &Key) -> ApiError {
    match key {
        Key::Id(id) => ApiError::NotFound(format!("no tunnel with id `{id}`")),
        Key::Name(n) => ApiError::NotFound(format!("no tunnel named `{n}`")),
    }
}

async fn writer(hub: Arc<Hub>, mut rx: mpsc::Receiver<(Op, Reply)>) {
    let mut leftover = None;
    loop {
        let first = match leftover.take() {
            Some(x) => x,
            None => match rx.recv().await {
                Some(x) => x,
                None => return,
            },
        };
        let mut batch = Vec::new();
        {
            let st = hub.state.read().unwrap_or_else(|e| e.into_inner());
            let mut touched = Touched::default();
            touched.admit(&st, &first.0);
            batch.push(first);
            while batch.len() < 4096 {
                match rx.try_recv() {
                    Ok(x) if touched.admit(&st, &x.0) => batch.push(x),
                    Ok(x) => {
                        leftover = Some(x);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        match &hub.backend {
            Backend::File(store) => process(&hub, store, batch).await,
            Backend::Etcd(fleet) => crate::fleet::write::process(&hub, fleet, batch).await,
        }
    }
}

async fn process(hub: &Hub, store: &Arc<Store>, batch: Vec<(Op, Reply)>) {
    let mut planned = Vec::new();
    {
        let st = hub.state.read().unwrap_or_else(|e| e.into_inner());
        let mut version = st.version;
        let mut revoked = HashSet::new();
        for (op, reply) in batch {
            match plan(&st, op, &mut revoked, version + 1) {
                Ok((change, done, body)) => {
                    version += 1;
                    planned.push((change, done, Record { seq: version, body }, reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }
    if planned.is_empty() {
        return;
    }
    let changes: Vec<Change> = planned.iter().map(|p| p.0.clone()).collect();
    let last = planned.last().map(|p| p.2.seq).unwrap_or(0);
    let s = store.clone();
    let committed = tokio::task::spawn_blocking(move || s.commit(&changes, last)).await;
    let failure = match committed {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    if let Some(reason) = failure {
        tracing::error!(%reason, "store commit failed; batch refused");
        for (_, _, _, reply) in planned {
            let _ = reply.send(Err(ApiError::Store(crate::error::StoreError(
                reason.clone(),
            ))));
        }
        return;
    }
    let mut replies = Vec::with_capacity(planned.len());
    {
        let mut st = hub.state.write().unwrap_or_else(|e| e.into_inner());
        for (change, done, rec, reply) in planned {
            hub.publish_locked(&mut st, change, rec);
            replies.push((reply, done));
        }
        hub.publish_version(&st);
    }
    for (reply, done) in replies {
        let _ = reply.send(Ok(done));
    }
}

#[cfg(test)]
mod tests;
