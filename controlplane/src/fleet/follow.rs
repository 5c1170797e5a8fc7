//! The follower: reads the fleet's tables from etcd, then watches the
//! prefix from the next revision and hands every change to the hub.
//!
//! ```text
//! connect ──► read all (paged, at one revision R) ──► hub.replace ──► watch from R+1
//!    │   (a node with a cache at revision C: watch from C+1 instead, unless etcd is below C)
//!    ▲  (retry, backoff ≤ 2 s)                                          │ events → hub.apply_revisions
//!    │                                                                  │ every 1 s: progress request
//!    ├──────────── compacted (the revision is gone) ◄───────────────────┤
//!    └──────────── stream lost (member down, no leader) ─► watch again from applied+1
//! ```
//!
//! While etcd is unreachable the cores keep their tables and this node
//! answers reads from its last state; writes answer UNAVAILABLE.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, GetOptions, WatchOptions};

use super::{Fleet, CALL};
use crate::hub::Hub;
use crate::store::{Change, Loaded};

/// Keys per page of the full read. etcd 3.4 walks the rest of the range
/// for every page (to count it), so pages are large: a page of token
/// records is ~10 MB.
const PAGE: i64 = 50_000;

/// Largest etcd answer accepted (a page of tunnels with CA bundles).
const MAX_MESSAGE: usize = 64 << 20;

/// How a watch ended.
enum End {
    /// The revision to watch from was compacted: read everything again.
    Compacted(i64),
    /// The stream broke; watch again from where it was.
    Lost(String),
}

/// Follows etcd until the process ends.
pub async fn run(hub: Arc<Hub>, fleet: Arc<Fleet>) {
    let Some(mut progress) = fleet.progress_rx.lock().ok().and_then(|mut g| g.take()) else {
        return;
    };
    let mut link = Link {
        backoff: Duration::from_millis(100),
        down_since: None,
    };
    // A node with a cache resumes from its revision (events since then
    // replay onto the cached tables); one without reads everything.
    let mut full_read = fleet.applied() == 0;
    loop {
        let step = async {
            let client = fleet.ensure_client().await?;
            if !full_read {
                // etcd behind this node (a new cluster): a watch from the
                // node's revision would wait for revisions that never come.
                let now = current_revision(&fleet, &client).await?;
                if now < fleet.applied() {
                    tracing::warn!(
                        etcd = now,
                        node = fleet.applied(),
                        "etcd's revision is below this node's: reading the tables again"
                    );
                    full_read = true;
                }
            }
            if full_read {
                let started = Instant::now();
                let loaded = read_all(&fleet, &client).await?;
                let took = started.elapsed();
                let (tunnels, tokens, rev) =
                    (loaded.tunnels.len(), loaded.tokens.len(), loaded.version);
                let changed = hub.replace(loaded);
                fleet.reset_to(hub.read(|s| s.version));
                fleet.cache_replace();
                tracing::info!(
                    tunnels,
                    tokens,
                    revision = rev,
                    changed,
                    ?took,
                    "fleet tables read from etcd"
                );
            }
            Ok::<_, String>(client)
        }
        .await;
        let end = match step {
            Ok(client) => {
                full_read = false;
                watch(&hub, &fleet, &client, &mut progress, &mut link).await
            }
            Err(e) => End::Lost(e),
        };
        match end {
            End::Compacted(at) => {
                tracing::warn!(
                    compacted = at,
                    followed = fleet.followed(),
                    "etcd compacted past this node's revision: reading the tables again"
                );
                full_read = true;
            }
            End::Lost(e) => {
                link.lost(&fleet, &e);
                tokio::time::sleep(link.backoff).await;
                link.backoff = (link.backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Whether etcd answers, logged once per change.
struct Link {
    backoff: Duration,
    down_since: Option<Instant>,
}

impl Link {
    fn up(&mut self, fleet: &Fleet) {
        fleet.set_connected(true);
        self.backoff = Duration::from_millis(100);
        if let Some(t) = self.down_since.take() {
            tracing::info!(after = ?t.elapsed(), revision = fleet.followed(),
                "etcd reachable again: following from this node's revision");
        }
    }

    fn lost(&mut self, fleet: &Fleet, why: &str) {
        fleet.set_connected(false);
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            tracing::warn!(error = %why, revision = fleet.followed(),
                "etcd unreachable: serving the last tables; writes answer UNAVAILABLE");
        } else {
            tracing::debug!(error = %why, "etcd still unreachable");
        }
    }
}

/// etcd's current revision (a count-only read of the fleet's prefix).
async fn current_revision(fleet: &Fleet, client: &Client) -> Result<u64, String> {
    let mut kv = client.kv_client();
    let opts = GetOptions::new().with_prefix().with_count_only();
    let resp = tokio::time::timeout(CALL, kv.get(fleet.keys.root(), Some(opts)))
        .await
        .map_err(|_| "revision read timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    fleet
        .answered
        .store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(resp.header().map(|h| h.revision()).unwrap_or(0).max(0) as u64)
}

/// Reads every tunnel and token at one revision, a page at a time.
async fn read_all(fleet: &Fleet, client: &Client) -> Result<Loaded, String> {
    let mut kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE);
    let mut out = Loaded::default();
    let mut at: i64 = 0;
    for dir in [fleet.keys.tunnels(), fleet.keys.tokens()] {
        let end = prefix_end(dir.as_bytes());
        let mut from = dir.clone().into_bytes();
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if at != 0 {
                opts = opts.with_revision(at);
            }
            let resp = tokio::time::timeout(CALL, kv.get(from.clone(), Some(opts)))
                .await
                .map_err(|_| "read timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            if at == 0 {
                at = resp.header().map(|h| h.revision()).unwrap_or(0);
                fleet
                    .answered
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            for kvp in resp.kvs() {
                match fleet
                    .keys
                    .decode(kvp.key(), Some(kvp.value()), kvp.mod_revision())
                {
                    Ok(Some(Change::PutTunnel(t))) => out.tunnels.push(t),
                    Ok(Some(Change::PutToken(t))) => out.tokens.push(t),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "etcd: record skipped"),
                }
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
    }
    out.version = at.max(0) as u64;
    Ok(out)
}

/// The end of the range of keys that start with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Watches the prefix from the revision after the node's tables.
async fn watch(
    hub: &Hub,
    fleet: &Fleet,
    client: &Client,
    progress: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
    link: &mut Link,
) -> End {
    let from = fleet.applied() as i64 + 1;
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(from)
        .with_progress_notify();
    let mut wc = client.watch_client().max_decoding_message_size(MAX_MESSAGE);
    let mut stream = match tokio::time::timeout(CALL, wc.watch(fleet.keys.root(), Some(opts))).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return End::Lost(e.to_string()),
        Err(_) => return End::Lost("watch request timed out".into()),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            msg = stream.message() => {
                let resp = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => return End::Lost("watch stream ended".into()),
                    Err(e) => return End::Lost(e.to_string()),
                };
                last_heard = Instant::now();
                if resp.compact_revision() > 0 {
                    return End::Compacted(resp.compact_revision());
                }
                if resp.canceled() {
                    return End::Lost(format!("watch canceled: {}", resp.cancel_reason()));
                }
                if resp.created() {
                    link.up(fleet);
                }
                let header = resp.header().map(|h| h.revision()).unwrap_or(0);
                if resp.events().is_empty() {
                    // A progress notification: every event up to the header's
                    // revision has been delivered.
                    if !resp.created() {
                        fleet.advance(header.max(0) as u64);
                    }
                    continue;
                }
                let mut by_rev: BTreeMap<u64, Vec<Change>> = BTreeMap::new();
                let mut last = 0u64;
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let rev = kv.mod_revision().max(0) as u64;
                    last = last.max(rev);
                    let value = match ev.event_type() {
                        EventType::Put => Some(kv.value()),
                        EventType::Delete => None,
                    };
                    match fleet.keys.decode(kv.key(), value, kv.mod_revision()) {
                        Ok(Some(c)) => by_rev.entry(rev).or_default().push(c),
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, revision = rev, "etcd: change skipped"),
                    }
                }
                let revisions: Vec<(u64, Vec<Change>)> = by_rev.into_iter().collect();
                for (rev, changes) in &revisions {
                    fleet.cache_apply(changes.clone(), *rev);
                }
                hub.apply_revisions(revisions);
                fleet.applied_to(last);
            }
            Some(()) = progress.recv() => {
                while progress.try_recv().is_ok() {}
                if let Err(e) = stream.request_progress().await {
                    return End::Lost(e.to_string());
                }
            }
            _ = tick.tick() => {
                if last_heard.elapsed() > Duration::from_secs(5) {
                    return End::Lost("no answer from etcd for 5 s".into());
                }
                if let Err(e) = stream.request_progress().await {
                    return End::Lost(e.to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefix_end() {
        assert_eq!(super::prefix_end(b"/a/"), b"/a0");
        assert_eq!(super::prefix_end(b"a\xff"), b"b");
        assert_eq!(super::prefix_end(b"\xff"), [0]);
    }
}
