//! The writer's fleet path: an API change becomes one etcd transaction.
//!
//! The change is planned against this node's state (field checks, names,
//! hostnames, scopes: the same answers as on one node), then made with a
//! compare-and-swap on the keys it rests on. Success: the answer waits until
//! the watch has brought the change back (so a read on this node sees it and
//! every core of this node has been sent it). A failed compare means another
//! node changed those keys first: this node catches up to that revision and
//! plans again, which gives ALREADY_EXISTS / NOT_FOUND from the fresh state
//! (or succeeds). etcd unreachable: UNAVAILABLE, nothing changed.

use std::collections::HashSet;
use std::sync::Arc;

use super::{to_txn, unavailable, Fleet, CALL, ECHO};
use crate::error::ApiError;
use crate::hub::{plan, Done, Hub, Key, Op, Reply};

/// Attempts before a change that keeps losing races answers UNAVAILABLE.
const ATTEMPTS: usize = 4;

/// How long a failed compare waits for the winning write's events before
/// it asks etcd for a progress notification instead.
const CATCH_UP: std::time::Duration = std::time::Duration::from_millis(200);

/// Makes a batch of changes (they touch disjoint keys, so they run at once).
pub async fn process(hub: &Arc<Hub>, fleet: &Arc<Fleet>, batch: Vec<(Op, Reply)>) {
    let mut set = tokio::task::JoinSet::new();
    for (op, reply) in batch {
        let (hub, fleet) = (hub.clone(), fleet.clone());
        set.spawn(async move {
            let _ = reply.send(change(&hub, &fleet, op).await);
        });
    }
    while set.join_next().await.is_some() {}
}

async fn change(hub: &Hub, fleet: &Fleet, op: Op) -> Result<Done, ApiError> {
    for _ in 0..ATTEMPTS {
        let client = fleet.client()?;
        let (change, done, old) = hub.read(|st| {
            let old = match &op {
                Op::UpdateTunnel(k, _) | Op::DeleteTunnel(k) => st.find(k).cloned(),
                _ => None,
            };
            plan(st, op.clone(), &mut HashSet::new(), st.version)
                .map(|(change, done, _)| (change, done, old))
        })?;
        let txn = fleet
            .keys
            .plan(&change, old.as_ref())
            .map_err(unavailable)?;
        let resp = tokio::time::timeout(CALL, send(&client, &txn))
            .await
            .map_err(|_| unavailable(format!("no answer within {CALL:?}")))?
            .map_err(unavailable)?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0).max(0) as u64;
        if resp.succeeded() {
            if !fleet.wait_applied(rev, ECHO).await {
                tracing::warn!(
                    revision = rev,
                    "written to etcd, not yet seen by this node's watch"
                );
            }
            return Ok(match done {
                Done::Tunnel(mut t) => {
                    t.version = rev;
                    Done::Tunnel(t)
                }
                other => other,
            });
        }
        tracing::debug!(
            revision = rev,
            ?op,
            "etcd compare failed: catching up, planning again"
        );
        // The write that won has come back through the watch once the node
        // holds revision `rev` (its events), or etcd confirms progress to it
        // (when the last revisions touched nothing under the prefix).
        let caught_up = fleet.wait_applied(rev, CATCH_UP).await || fleet.sync_to(rev, ECHO).await;
        if !caught_up {
            return Err(unavailable(format!(
                "another node changed these keys; this node has not seen revision {rev} yet"
            )));
        }
    }
    let what = match &op {
        Op::UpdateTunnel(Key::Name(n), _) | Op::DeleteTunnel(Key::Name(n)) => n.clone(),
        _ => "the change".into(),
    };
    Err(unavailable(format!(
        "{what} kept racing other nodes' writes ({ATTEMPTS} attempts)"
    )))
}

/// Sends the transaction; a member that refuses the connection (down, or
/// not started yet) is skipped by trying again, which the client's
/// balancer sends elsewhere. Only a transaction that was never sent is
/// sent again: one whose outcome is unknown is not.
async fn send(
    client: &etcd_client::Client,
    txn: &super::keys::TxnPlan,
) -> Result<etcd_client::TxnResponse, etcd_client::Error> {
    let mut kv = client.kv_client();
    let mut tries = 0;
    loop {
        match kv.txn(to_txn(txn)).await {
            Err(e) if never_sent(&e) && tries < 8 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(25 * tries)).await;
            }
            other => return other,
        }
    }
}

/// A connection that could not be made: the request did not leave.
pub fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unavailable && s.message().contains("connect error")
        }
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}
