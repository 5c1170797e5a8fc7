//! Node registration and the fleet view.
//!
//! Each node keeps `{prefix}/nodes/{node}` alive under a 10 s lease (its
//! API address, pid and start time); the key disappears when the node
//! stops renewing it. `stats --fleet` lists those keys and asks every node
//! for its stats over gRPC (the fleet shares one admin token): its followed
//! revision against etcd's current one is its lag, its cores' `applied_seq`
//! against its tables' revision says whether every core serves them.
//! Lease keep-alives do not create revisions, so an idle fleet's revision
//! stands still.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{GetOptions, PutOptions};
use serde::{Deserialize, Serialize};

use super::{unavailable, Fleet, CALL};
use crate::error::ApiError;
use crate::pb;

/// Lease time-to-live of a node's key.
const TTL_S: i64 = 10;

/// A node's registration value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Name in the fleet.
    pub node: String,
    /// Where its API answers.
    pub grpc: String,
    /// Control-plane process id.
    pub pid: u32,
    /// Unix milliseconds.
    pub started_at_ms: u64,
}

/// Keeps this node's key alive until the process ends.
pub async fn register(fleet: Arc<Fleet>) {
    let entry = NodeEntry {
        node: fleet.cfg.node.clone(),
        grpc: fleet.cfg.advertise.clone(),
        pid: std::process::id(),
        started_at_ms: crate::model::now_ms(),
    };
    let Ok(value) = serde_json::to_vec(&entry) else {
        return;
    };
    let key = fleet.keys.node(&fleet.cfg.node);
    loop {
        if let Err(e) = hold(&fleet, &key, &value).await {
            tracing::debug!(error = %e, "node registration lapsed; registering again");
        }
        // Soon after etcd is reached; then at most once a second.
        let pause = if fleet.connected() { 1000 } else { 100 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

async fn hold(fleet: &Fleet, key: &str, value: &[u8]) -> Result<(), String> {
    let client = fleet.client().map_err(|e| e.to_string())?;
    let mut lease = client.lease_client();
    let grant = tokio::time::timeout(CALL, lease.grant(TTL_S, None))
        .await
        .map_err(|_| "lease grant timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let id = grant.id();
    let mut kv = client.kv_client();
    tokio::time::timeout(
        CALL,
        kv.put(key, value.to_vec(), Some(PutOptions::new().with_lease(id))),
    )
    .await
    .map_err(|_| "registration timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    tracing::info!(key, lease = id, "registered in the fleet");
    let (mut keeper, mut answers) = lease.keep_alive(id).await.map_err(|e| e.to_string())?;
    loop {
        tokio::time::sleep(Duration::from_secs((TTL_S / 3) as u64)).await;
        keeper.keep_alive().await.map_err(|e| e.to_string())?;
        match tokio::time::timeout(CALL, answers.message()).await {
            Ok(Ok(Some(a))) if a.ttl() > 0 => {}
            Ok(Ok(Some(_))) => return Err("lease expired".into()),
            Ok(Ok(None)) => return Err("keep-alive stream ended".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("keep-alive timed out".into()),
        }
    }
}

/// Every registered node, asked for its stats.
pub async fn view(fleet: &Fleet) -> Result<pb::FleetSnapshot, ApiError> {
    let client = fleet.client()?;
    let mut kv = client.kv_client();
    let resp = tokio::time::timeout(
        CALL,
        kv.get(fleet.keys.nodes(), Some(GetOptions::new().with_prefix())),
    )
    .await
    .map_err(|_| unavailable("node list timed out"))?
    .map_err(unavailable)?;
    let cluster_revision = resp.header().map(|h| h.revision()).unwrap_or(0).max(0) as u64;
    let entries: Vec<NodeEntry> = resp
        .kvs()
        .iter()
        .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
        .collect();
    let mut set = tokio::task::JoinSet::new();
    for (i, e) in entries.into_iter().enumerate() {
        let token = fleet.admin_token.clone();
        set.spawn(async move { (i, ask(e, &token, cluster_revision).await) });
    }
    let mut nodes = Vec::new();
    while let Some(Ok(n)) = set.join_next().await {
        nodes.push(n);
    }
    nodes.sort_by_key(|(i, _)| *i);
    let now = crate::model::now_ms();
    Ok(pb::FleetSnapshot {
        at: Some(prost_types::Timestamp {
            seconds: (now / 1000) as i64,
            nanos: ((now % 1000) * 1_000_000) as i32,
        }),
        cluster_revision,
        nodes: nodes.into_iter().map(|(_, n)| n).collect(),
    })
}

async fn ask(e: NodeEntry, token: &str, cluster_revision: u64) -> pb::FleetNode {
    let mut row = pb::FleetNode {
        node: e.node.clone(),
        grpc: e.grpc.clone(),
        ..Default::default()
    };
    match tokio::time::timeout(CALL, stats_of(&e.grpc, token)).await {
        Ok(Ok(s)) => {
            let store = s.store.unwrap_or_default();
            row.reachable = true;
            row.store_version = s.store_version;
            row.followed_revision = store.followed_revision;
            row.etcd_connected = store.connected;
            row.lag = cluster_revision.saturating_sub(store.followed_revision);
            row.cores = s.cores.len() as u32;
            row.cores_current = s
                .cores
                .iter()
                .filter(|c| c.attached && c.applied_seq == s.store_version)
                .count() as u32;
        }
        Ok(Err(why)) => row.error = why,
        Err(_) => row.error = format!("no answer within {CALL:?}"),
    }
    row
}

async fn stats_of(addr: &str, token: &str) -> Result<pb::StatsSnapshot, String> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let mut req = tonic::Request::new(pb::GetStatsRequest {});
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| "admin token is not a valid header value".to_owned())?;
    req.metadata_mut().insert("authorization", value);
    pb::stats_client::StatsClient::new(channel)
        .get_stats(req)
        .await
        .map(|r| r.into_inner())
        .map_err(|s| s.message().to_owned())
}
