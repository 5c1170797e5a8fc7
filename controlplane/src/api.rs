//! The gRPC services (package `switchyard.v1`) and the admin-token check.
//!
//! Handlers are thin: validate the request ([`crate::model`]), submit a
//! change to the [`Hub`] (which answers only once it is durable and on its
//! way to every core), map errors with [`ApiError::status`]. Token secrets
//! leave this process once, in the `CreateToken` response; they are not
//! logged, stored or shipped to the data plane.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use shmring::layout::{self, stat};
use shmring::Region;
use subtle_eq::ct_eq;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::hub::{Backend, Done, Hub, Key, Op};
use crate::model::{self, TokenEntry};
use crate::pb;

/// Shared by the three services.
#[derive(Debug, Clone)]
pub struct Api {
    /// State and writer.
    pub hub: Arc<Hub>,
    /// The shared region, read for stats.
    pub region: Option<Arc<Region>>,
}

mod subtle_eq {
    /// Constant-time equality of two byte strings of any length (the
    /// length itself is not secret).
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// An interceptor that requires `authorization: Bearer <token>`.
pub fn admin_check(
    token: Arc<String>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let Some(v) = req.metadata().get("authorization") else {
            return Err(Status::unauthenticated(
                "missing `authorization: Bearer <admin token>`",
            ));
        };
        let presented = v
            .to_str()
            .ok()
            .and_then(|s| {
                s.strip_prefix("Bearer ")
                    .or_else(|| s.strip_prefix("bearer "))
            })
            .map(str::trim)
            .unwrap_or("");
        if ct_eq(presented.as_bytes(), token.as_bytes()) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("invalid admin token"))
        }
    }
}

fn key(id: &str, name: &str) -> Result<Key, Status> {
    match (id.is_empty(), name.is_empty()) {
        (false, _) => Ok(Key::Id(id.to_owned())),
        (true, false) => Ok(Key::Name(name.to_owned())),
        (true, true) => Err(ApiError::Invalid {
            field: "id".into(),
            reason: "give an id or a name".into(),
        }
        .status()),
    }
}

fn tunnel_of(done: Done) -> Result<pb::Tunnel, Status> {
    match done {
        Done::Tunnel(t) => Ok(t.to_pb()),
        _ => Err(Status::internal("unexpected writer answer")),
    }
}

#[tonic::async_trait]
impl pb::tunnels_server::Tunnels for Api {
    async fn create_tunnel(
        &self,
        req: Request<pb::CreateTunnelRequest>,
    ) -> Result<Response<pb::Tunnel>, Status> {
        let t = req.into_inner().tunnel.ok_or_else(|| {
            ApiError::Invalid {
                field: "tunnel".into(),
                reason: "required".into(),
            }
            .status()
        })?;
        let entry = model::validate_tunnel(&t)?;
        let done = self.hub.submit(Op::CreateTunnel(entry)).await?;
        let t = tunnel_of(done)?;
        tracing::info!(tunnel = %t.name, id = %t.id, "tunnel created");
        Ok(Response::new(t))
    }

    async fn get_tunnel(
        &self,
        req: Request<pb::GetTunnelRequest>,
    ) -> Result<Response<pb::Tunnel>, Status> {
        let r = req.into_inner();
        let k = key(&r.id, &r.name)?;
        self.hub
            .read(|st| st.find(&k).map(|t| t.to_pb()))
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("no tunnel {}", describe(&k))))
    }

    async fn list_tunnels(
        &self,
        req: Request<pb::ListTunnelsRequest>,
    ) -> Result<Response<pb::ListTunnelsResponse>, Status> {
        let sel = req.into_inner().label_selector;
        let (tunnels, revision) = self.hub.read(|st| {
            let list = st
                .tunnels
                .values()
                .filter(|t| sel.iter().all(|(k, v)| t.labels.get(k) == Some(v)))
                .map(|t| t.to_pb())
                .collect();
            (list, st.version)
        });
        Ok(Response::new(pb::ListTunnelsResponse { tunnels, revision }))
    }

    async fn update_tunnel(
        &self,
        req: Request<pb::UpdateTunnelRequest>,
    ) -> Result<Response<pb::Tunnel>, Status> {
        let mut t = req.into_inner().tunnel.ok_or_else(|| {
            ApiError::Invalid {
                field: "tunnel".into(),
                reason: "required".into(),
            }
            .status()
        })?;
        let k = key(&t.id, &t.name)?;
        if t.name.is_empty() {
            // Identified by id only: keep the stored name.
            let name = self.hub.read(|st| st.find(&k).map(|e| e.name.clone()));
            t.name =
                name.ok_or_else(|| Status::not_found(format!("no tunnel {}", describe(&k))))?;
        }
        let entry = model::validate_tunnel(&t)?;
        let done = self.hub.submit(Op::UpdateTunnel(k, entry)).await?;
        let t = tunnel_of(done)?;
        tracing::info!(tunnel = %t.name, "tunnel updated");
        Ok(Response::new(t))
    }

    async fn delete_tunnel(
        &self,
        req: Request<pb::DeleteTunnelRequest>,
    ) -> Result<Response<pb::DeleteTunnelResponse>, Status> {
        let r = req.into_inner();
        let k = key(&r.id, &r.name)?;
        self.hub.submit(Op::DeleteTunnel(k.clone())).await?;
        tracing::info!(tunnel = %describe(&k), "tunnel deleted");
        Ok(Response::new(pb::DeleteTunnelResponse {}))
    }
}

fn describe(k: &Key) -> String {
    match k {
        Key::Id(id) => format!("with id `{id}`"),
        Key::Name(n) => format!("named `{n}`"),
    }
}

#[tonic::async_trait]
impl pb::tokens_server::Tokens for Api {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let r = req.into_inner();
        for n in &r.tunnels {
            model::valid_name("tunnels", n)?;
        }
        if r.name.len() > 255 {
            return Err(ApiError::Invalid {
                field: "name".into(),
                reason: "at most 255 bytes".into(),
            }
            .into());
        }
        let now = model::now_s();
        let expires_at = match r.expires_at {
            None => 0,
            Some(ts) if ts.seconds > now => ts.seconds,
            Some(_) => {
                return Err(ApiError::Invalid {
                    field: "expires_at".into(),
                    reason: "must be in the future".into(),
                }
                .into())
            }
        };
        let (secret, sha256) = model::new_secret();
        let entry = TokenEntry {
            id: model::new_id("tok"),
            name: r.name,
            sha256,
            tunnels: r.tunnels,
            expires_at,
            created_at: now,
        };
        let token = match self.hub.submit(Op::CreateToken(entry)).await? {
            Done::Token(t) => t.to_pb(),
            _ => return Err(Status::internal("unexpected writer answer")),
        };
        tracing::debug!(id = %token.id, "token created");
        Ok(Response::new(pb::CreateTokenResponse {
            token: Some(token),
            secret,
        }))
    }

    async fn list_tokens(
        &self,
        _req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let (tokens, revision) = self
            .hub
            .read(|st| (st.tokens.values().map(|t| t.to_pb()).collect(), st.version));
        Ok(Response::new(pb::ListTokensResponse { tokens, revision }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let id = req.into_inner().id;
        if id.is_empty() {
            return Err(ApiError::Invalid {
                field: "id".into(),
                reason: "required".into(),
            }
            .into());
        }
        self.hub.submit(Op::RevokeToken(id.clone())).await?;
        tracing::info!(%id, "token revoked");
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }
}

impl Api {
    /// Reads every core's stats block.
    pub fn snapshot(&self) -> pb::StatsSnapshot {
        let now = model::now_ms();
        let version = self.hub.read(|st| st.version);
        let mut cores = Vec::new();
        let mut per_tunnel: std::collections::HashMap<u64, [u64; layout::TUNNEL_COUNTERS.len()]> =
            Default::default();
        if let Some(r) = &self.region {
            for c in 0..r.layout().cores as usize {
                let get = |w: usize| r.stat(c, w).map(|a| a.load(Ordering::Relaxed)).unwrap_or(0);
                let counter = |name: &str| {
                    stat::COUNTERS
                        .iter()
                        .position(|n| *n == name)
                        .map(|i| get(stat::COUNTERS_AT + i))
                        .unwrap_or(0)
                };
                let errors = [
                    ("rejected", "rejected_total"),
                    ("upstream", "upstream_errors"),
                    ("idle_timeout", "idle_timeouts"),
                    ("reset", "resets_propagated"),
                ]
                .into_iter()
                .map(|(k, n)| (k.to_owned(), counter(n)))
                .collect();
                for slot in 0..layout::TUNNEL_SLOTS {
                    let word = |w: usize| {
                        r.tunnel_slot(c, slot, w)
                            .map(|a| a.load(Ordering::Acquire))
                            .unwrap_or(0)
                    };
                    let key = word(0);
                    if key != 0 {
                        let sums = per_tunnel
                            .entry(key)
                            .or_insert([0u64; layout::TUNNEL_COUNTERS.len()]);
                        for (i, sum) in sums.iter_mut().enumerate() {
                            *sum += word(1 + i);
                        }
                    }
                }
                cores.push(pb::CoreStats {
                    core: c as u32,
                    connections_total: counter("connections_total"),
                    connections_active: counter("connections_active"),
                    bytes_downstream_to_upstream: counter("bytes_downstream_to_upstream"),
                    bytes_upstream_to_downstream: counter("bytes_upstream_to_downstream"),
                    bytes_spliced: counter("bytes_spliced"),
                    bytes_copied: counter("bytes_copied"),
                    auth_failures: counter("auth_failures"),
                    errors,
                    relays_total: counter("relays_total"),
                    applied_seq: get(stat::APPLIED_SEQ),
                    tunnels: get(stat::TUNNELS),
                    tokens: get(stat::TOKENS),
                    snapshots: get(stat::SNAPSHOTS),
                    attached: now.saturating_sub(get(stat::HEARTBEAT_MS)) < 2000,
                    tunnels_unreported: get(stat::TUNNELS_UNREPORTED),
                });
            }
        }
        let tunnels = self.hub.read(|st| {
            st.tunnels
                .values()
                .map(|t| {
                    let [relays_total, relays_active, bytes_downstream_to_upstream, bytes_upstream_to_downstream, rejected_total] =
                        per_tunnel.get(&layout::tunnel_key(&t.name)).copied().unwrap_or_default();
                    pb::TunnelStats {
                        name: t.name.clone(),
                        cores_with_route: cores.iter().filter(|c| c.attached && c.applied_seq >= t.version).count() as u32,
                        relays_total,
                        relays_active,
                        bytes_downstream_to_upstream,
                        bytes_upstream_to_downstream,
                        rejected_total,
                    }
                })
                .collect()
        });
        let _ = layout::H_STORE_VERSION;
        pb::StatsSnapshot {
            at: Some(prost_types::Timestamp {
                seconds: (now / 1000) as i64,
                nanos: ((now % 1000) * 1_000_000) as i32,
            }),
            cores,
            tunnels,
            store_version: version,
            store: Some(self.store_state()),
        }
    }

    fn store_state(&self) -> pb::StoreState {
        match &self.hub.backend {
            Backend::File(_) => pb::StoreState {
                kind: "file".into(),
                connected: true,
                ..Default::default()
            },
            Backend::Etcd(f) => pb::StoreState {
                kind: "etcd".into(),
                node: f.cfg.node.clone(),
                connected: f.connected(),
                followed_revision: f.followed(),
            },
        }
    }
}

type StatsStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::StatsSnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl pb::stats_server::Stats for Api {
    async fn get_stats(
        &self,
        _req: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::StatsSnapshot>, Status> {
        Ok(Response::new(self.snapshot()))
    }

    type WatchStatsStream = StatsStream;

    async fn watch_stats(
        &self,
        req: Request<pb::WatchStatsRequest>,
    ) -> Result<Response<StatsStream>, Status> {
        let ms = match req.into_inner().interval_ms {
            0 => 1000,
            n => n.clamp(50, 3_600_000),
        };
        let api = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(u64::from(ms)));
            loop {
                tick.tick().await;
                if tx.send(Ok(api.snapshot())).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_fleet(
        &self,
        _req: Request<pb::GetFleetRequest>,
    ) -> Result<Response<pb::FleetSnapshot>, Status> {
        let Backend::Etcd(fleet) = &self.hub.backend else {
            return Err(Status::failed_precondition(
                "this node uses the embedded store: there is no fleet (control.store = \"etcd://…\")",
            ));
        };
        Ok(Response::new(crate::fleet::nodes::view(fleet).await?))
    }
}
