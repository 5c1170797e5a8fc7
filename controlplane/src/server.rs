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
use crate::config::{admin_token, ControlConfig};
use crate::error::StartError;
use crate::hub::Hub;
use crate::pb;
use crate::store::Store;

/// The encoded descriptor set, for server reflection.
pub const DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/switchyard_descriptor.bin"));

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
    let store = Store::open(&cfg.store)?;
    let region = open_region(&cfg)?;
    let (hub, feeds) = Hub::start(store, cfg.cores as usize, Some(region.clone()))
        .map_err(|e| StartError::Config(e.to_string()))?;
    for (core, feed) in feeds.into_iter().enumerate() {
        tokio::spawn(crate::pusher::run(hub.clone(), region.clone(), core, feed));
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
    tracing::info!(addr = %cfg.grpc, store = %cfg.store.display(), shm = %cfg.shm.display(),
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
