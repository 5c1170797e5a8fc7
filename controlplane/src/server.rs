//! Start-up of the control plane: store → region → hub → ring producers →
//! gRPC (Tunnels, Tokens, Stats, Health, reflection), all behind the admin
//! token.
//!
//! The region is re-used when it exists with the same layout, so a data plane
//! that kept running while the control plane was down stays attached; the
//! generation is bumped and every attached core gets a fresh snapshot.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use shmring::layout;
use shmring::Region;
use tonic::service::interceptor::InterceptedService;

use crate::api::{admin_check, Api};
use crate::config::{admin_token, ControlConfig, StoreConfig};
use crate::error::StartError;
use crate::fleet::Fleet;
use crate::hub::{Backend, Hub};
use crate::pb;
use crate::store::Store;

/// The encoded descriptor set, for server reflection.
pub const DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/switchyard_descriptor.bin"));

/// How long a fleet node waits for etcd's tables before it serves its cache.
const START_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Maps the region at `cfg.shm`, re-using a compatible one.
pub fn open_region(cfg: &ControlConfig) -> Result<Arc<Region>, StartError> {
    let shm_err = |e: shmring::AttachError| StartError::Shm {
        path: cfg.shm.display().to_string(),
        reason: e.to_string(),
    };
    let want = layout::Layout::new(cfg.cores, cfg.ring_bytes).ok_or_else(|| StartError::Shm {
        path: cfg.shm.display().to_string(),
        reason: "bad core count or ring size".into(),
    })?;
    let region = match Region::attach(&cfg.shm) {
        Ok(r) if r.layout() == want && r.header(layout::H_RETIRED).load(Ordering::Acquire) == 0 => {
            tracing::info!(path = %cfg.shm.display(), "re-attached to the existing region");
            r
        }
        _ => Region::create(&cfg.shm, cfg.cores, cfg.ring_bytes).map_err(shm_err)?,
    };
    region
        .header(layout::H_GENERATION)
        .fetch_add(1, Ordering::AcqRel);
    region
        .header(layout::H_CONTROL_PID)
        .store(u64::from(std::process::id()), Ordering::Release);
    Ok(Arc::new(region))
}

/// Runs the control plane until `shutdown` resolves. `ready` is called
/// once the gRPC port accepts.
pub async fn serve(
    cfg: ControlConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce() + Send,
) -> Result<(), StartError> {
    let token = Arc::new(admin_token(&cfg.admin_token_file)?);
    let (backend, loaded, cache) = match &cfg.store {
        StoreConfig::File(path) => {
            let store = Store::open(path)?;
            let loaded = store.load()?;
            (Backend::File(Arc::new(store)), loaded, None)
        }
        StoreConfig::Etcd(e) => {
            let cache = Arc::new(Store::open(&e.cache)?);
            let loaded = cache.load()?;
            let fleet = Fleet::new(e.clone(), loaded.version, token.clone());
            (Backend::Etcd(fleet), loaded, Some(cache))
        }
    };
    let region = open_region(&cfg)?;
    let (hub, feeds) = Hub::start(backend, loaded, cfg.cores as usize, Some(region.clone()))
        .map_err(|e| StartError::Config(e.to_string()))?;
    for (core, feed) in feeds.into_iter().enumerate() {
        tokio::spawn(crate::pusher::run(hub.clone(), region.clone(), core, feed));
    }
    if let (Backend::Etcd(fleet), Some(cache)) = (&hub.backend, cache) {
        tokio::spawn(crate::fleet::follow::run(hub.clone(), fleet.clone()));
        tokio::spawn(crate::fleet::cache_writer(
            hub.clone(),
            fleet.clone(),
            cache,
        ));
        tokio::spawn(crate::fleet::nodes::register(fleet.clone()));
        // A node whose etcd answers serves the fleet's tables from its first
        // answer on; one that cannot reach etcd serves its cache and says so.
        let t0 = std::time::Instant::now();
        while !fleet.connected() && t0.elapsed() < START_WAIT {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if !fleet.connected() {
            let (tunnels, tokens, revision) =
                hub.read(|s| (s.tunnels.len(), s.tokens.len(), s.version));
            if fleet.answered() {
                tracing::info!(tunnels, tokens, revision, cache = %fleet.cfg.cache.display(),
                    "still reading the fleet's tables from etcd: serving the cached tables meanwhile");
            } else {
                tracing::warn!(tunnels, tokens, revision, cache = %fleet.cfg.cache.display(),
                    "etcd unreachable at start: serving the cached tables until it answers");
            }
        }
    }
    let api = Api {
        hub: hub.clone(),
        region: Some(region.clone()),
    };
    let check = admin_check(token);
    let (health, health_svc) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::tunnels_server::TunnelsServer<Api>>()
        .await;
    // v1 for current tools, v1alpha for older ones (grpcurl tries both).
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .map_err(|e| StartError::Grpc(e.to_string()))?;
    let reflection_alpha = reflection_builder()
        .build_v1alpha()
        .map_err(|e| StartError::Grpc(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(cfg.grpc).await?;
    let (tunnels, version) = hub.read(|s| (s.tunnels.len(), s.version));
    tracing::info!(addr = %cfg.grpc, store = %cfg.store.describe(), shm = %cfg.shm.display(),
        cores = cfg.cores, tunnels, version, "control plane serving");
    ready();
    tonic::transport::Server::builder()
        .add_service(InterceptedService::new(
            pb::tunnels_server::TunnelsServer::new(api.clone()),
            check.clone(),
        ))
        .add_service(InterceptedService::new(
            pb::tokens_server::TokensServer::new(api.clone()),
            check.clone(),
        ))
        .add_service(InterceptedService::new(
            pb::stats_server::StatsServer::new(api),
            check.clone(),
        ))
        .add_service(InterceptedService::new(health_svc, check.clone()))
        .add_service(InterceptedService::new(reflection, check.clone()))
        .add_service(InterceptedService::new(reflection_alpha, check))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
        .map_err(|e| StartError::Grpc(e.to_string()))
}
