//! Start-up and shutdown: one pinned glommio executor per core.
//!
//! ```text
//! main thread: config → spawn N executors → wait for each to report bound → wait for signal
//! core i:      build own tables/TLS → bind listeners (SO_REUSEPORT) → accept loops
//! SIGINT/TERM: every core stops accepting, relays drain up to `shutdown_grace`, exit 0
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use futures_lite::FutureExt;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::core::{CoreCtx, ListenerCtx};
use crate::route::RouteTable;
use crate::stats::CoreStats;
use crate::tls::Identity;

/// Why the edge could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Configuration problem found at start-up (names the field).
    #[error("config field `{field}`: {reason}")]
    Config {
        /// Field.
        field: String,
        /// Reason.
        reason: String,
    },
    /// A core failed to set up (bind, TLS, resolve).
    #[error("core {core}: {reason}")]
    Core {
        /// Core index.
        core: usize,
        /// Reason.
        reason: String,
    },
    /// OS-level failure.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running edge: per-core stats and a stop switch.
#[derive(Debug, Clone)]
pub struct Handle {
    /// `(cpu, stats)` per core.
    pub cores: Vec<(usize, Arc<CoreStats>)>,
    /// Raising this starts a graceful shutdown.
    pub stop: Arc<AtomicBool>,
}

/// Starts every core and returns once all are serving; `join` waits for the end.
pub fn start(config: Config) -> Result<(Handle, Vec<std::thread::JoinHandle<()>>), StartError> {
    let cpus = crate::sys::allowed_cpus()?;
    let nofile = crate::sys::raise_nofile()?;
    crate::access::init(
        config.edge.access_log,
        config.edge.access_log_path.as_deref(),
    )
    .map_err(|e| StartError::Config {
        field: "edge.access_log_path".into(),
        reason: e.to_string(),
    })?;
    let n = match config.edge.cores {
        0 => cpus.len(),
        n if n <= cpus.len() => n,
        n => {
            return Err(StartError::Config {
                field: "edge.cores".into(),
                reason: format!(
                    "{n} cores requested but this process may use {}",
                    cpus.len()
                ),
            })
        }
    };
    let mut identities = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        identities.push(match &l.tls {
            Some(files) => Some(Arc::new(Identity::load(&files.cert, &files.key).map_err(
                |e| StartError::Config {
                    field: format!("listener[{i}].tls"),
                    reason: e.to_string(),
                },
            )?)),
            None => None,
        });
    }

    // Managed mode: one mapping shared by every core; a missing region is not
    // fatal (the data plane also runs stand-alone).
    let control = config.control.as_ref().and_then(|c| {
        match crate::control::attach(&c.shm) {
            Ok(region) => Some((region, c.shm.clone(), c.snapshot_wait)),
            Err(e) => {
                tracing::warn!(shm = %c.shm.display(), "control plane region not attached ({e}): static tables only");
                None
            }
        }
    });
    let max_connections = config
        .edge
        .max_connections
        .unwrap_or_else(|| max_connections(nofile, n));
    tracing::info!(
        nofile,
        max_connections,
        cores = n,
        "open files limit; connections per core"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let resolver = crate::resolve::spawn(config.edge.resolver).map_err(|e| StartError::Core {
        core: 0,
        reason: format!("cannot start the resolver thread: {e}"),
    })?;
    let quic_keys = crate::quic::Keys::random();
    // Per QUIC listener and core: its UDP socket (bound here, in core order,
    // so that the kernel's steering program names a core by its socket's
    // place in the group) and its part of the cross-core channels of the
    // datagram handover (none with a single core).
    let mut meshes: Vec<Vec<QuicPart>> = (0..n).map(|_| Vec::new()).collect();
    for (l, id) in config.listeners.iter().zip(&identities) {
        let sockets = match (l.quic, id) {
            (true, Some(_)) => quic_sockets(l.addr, n, &config, &quic_keys)?,
            _ => Vec::new(),
        };
        let mut sockets = sockets.into_iter();
        let mut parts = if l.quic && n > 1 {
            crate::quic::handover::mesh(n)
                .into_iter()
                .map(Some)
                .collect()
        } else {
            (0..n).map(|_| None).collect::<Vec<_>>()
        };
        for (core, part) in parts.drain(..).enumerate() {
            meshes[core].push((sockets.next(), part));
        }
    }
    let mut meshes = meshes.into_iter();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let mut joins = Vec::new();
    let mut cores = Vec::new();
    for (core, &cpu) in cpus.iter().take(n).enumerate() {
        let stats = Arc::new(CoreStats::default());
        cores.push((cpu, stats.clone()));
        let config = config.clone();
        let identities = identities.clone();
        let stop = stop.clone();
        let ready = ready_tx.clone();
        let control = control.clone();
        let resolver = resolver.clone();
        let quic_keys = quic_keys.clone();
        let mesh = meshes.next().unwrap_or_default();
        let placement = if config.edge.cores == 0 && cpus.len() == 1 {
            Placement::Unbound
        } else {
            Placement::Fixed(cpu)
        };
        let ex = LocalExecutorBuilder::new(placement)
            .name(&format!("core{core}"))
            .io_memory(1 << 20)
            .spawn(move || async move {
                let per_core = (resolver, max_connections, (quic_keys, mesh));
                run_core(
                    core, cpu, config, identities, stats, stop, ready, control, per_core,
                )
                .await
            })
            .map_err(|e| StartError::Core {
                core,
                reason: format!("cannot start executor: {e}"),
            })?;
        joins.push(std::thread::spawn(move || {
            let _ = ex.join();
        }));
    }
    drop(ready_tx);
    for _ in 0..n {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                stop.store(true, Ordering::Relaxed);
                return Err(StartError::Core { core: 0, reason });
            }
            Err(_) => {
                return Err(StartError::Core {
                    core: 0,
                    reason: "executor exited during start-up".into(),
                })
            }
        }
    }
    Ok((Handle { cores, stop }, joins))
}

/// Descriptors one relayed connection holds: the client's and the
/// upstream's sockets (pipes are taken only while bytes are in flight).
pub const FDS_PER_CONNECTION: u64 = 2;
/// Descriptors kept for listeners, pipes in flight, the ring, logs.
const FDS_RESERVED: u64 = 256;

/// The default `edge.max_connections`: the open-files limit shared by
/// `cores`, at [`FDS_PER_CONNECTION`] each.
pub fn max_connections(nofile: u64, cores: usize) -> usize {
    let per_core = nofile.saturating_sub(FDS_RESERVED) / cores.max(1) as u64 / FDS_PER_CONNECTION;
    per_core.max(1) as usize
}

/// The region, its path and the first-snapshot wait, in managed mode.
type Control = Option<(
    Arc<shmring::Region>,
    std::path::PathBuf,
    std::time::Duration,
)>;

#[allow(clippy::too_many_arguments)]
async fn run_core(
    core: usize,
    cpu: usize,
    config: Config,
    identities: Vec<Option<Arc<Identity>>>,
    stats: Arc<CoreStats>,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<Result<(), String>>,
    control: Control,
    (resolver, max_connections, (quic_keys, mesh)): (
        crate::resolve::ResolverThread,
        usize,
        (crate::quic::Keys, Vec<QuicPart>),
    ),
) {
    let mut mesh = mesh;
    let setup = || -> Result<_, String> {
        let routes = RouteTable::build(&config).map_err(|e| e.to_string())?;
        let ctx = Rc::new(CoreCtx {
            core,
            edge: config.edge.clone(),
            routes: RefCell::new(Rc::new(routes)),
            stats,
            stop: stop.clone(),
            resolver: crate::resolve::Resolver::new(resolver),
            h2c: Default::default(),
            h3: Default::default(),
            h2_budget: crate::guard::RecvBudget::new(crate::downstream::h2::CORE_RECV_BUDGET),
            h2_resets: Default::default(),
            gate: glommio::sync::Gate::new(),
            max_connections,
            log_budget: Default::default(),
            alt_svc: config
                .listeners
                .iter()
                .filter(|l| l.quic && l.tls.is_some())
                .map(|l| (l.addr, crate::core::alt_svc_value(l.addr.port())))
                .collect(),
            access_log: crate::access::handle(),
            tunnel_cache: Default::default(),
        });
        let mut listeners = Vec::new();
        let mut endpoints = Vec::new();
        for ((l, id), mesh) in config
            .listeners
            .iter()
            .zip(&identities)
            .zip(std::mem::take(&mut mesh))
        {
            let tls = match id {
                Some(id) => Some(futures_rustls::TlsAcceptor::from(
                    id.server_config().map_err(|e| e.to_string())?,
                )),
                None => None,
            };
            let sock = crate::listener::bind(l.addr)
                .map_err(|e| format!("listener `{}` cannot bind {}: {e}", l.name, l.addr))?;
            let lis = Rc::new(ListenerCtx {
                cfg: l.clone(),
                tls,
            });
            if let ((Some(socket), mesh), Some(id)) = (mesh, id) {
                endpoints.push((
                    quic_endpoint(core, &config, id, &quic_keys, socket)?,
                    lis.clone(),
                    mesh,
                ));
            }
            listeners.push((sock, lis));
        }
        Ok((ctx, listeners, endpoints))
    };
    let (ctx, listeners, endpoints) = match setup() {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if let Some((region, path, wait)) = control {
        // Accept only once the control plane's tables are in (bounded wait).
        let synced = Rc::new(std::cell::Cell::new(false));
        glommio::spawn_local(crate::control::run(
            ctx.clone(),
            region,
            path,
            synced.clone(),
        ))
        .detach();
        let t0 = std::time::Instant::now();
        while !synced.get() && t0.elapsed() < wait {
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
        if !synced.get() {
            tracing::warn!(
                core,
                ?wait,
                "no snapshot from the control plane yet: serving static tables"
            );
        }
    }
    let mut quic = Vec::new();
    for (endpoint, lis, mesh) in endpoints {
        let handover = match mesh {
            Some(m) => {
                Some(crate::quic::handover::Handover::connect(m, quic_keys.cid_key(), core).await)
            }
            None => None,
        };
        quic.push((endpoint, lis, handover));
    }
    tracing::info!(
        core,
        cpu,
        listeners = listeners.len(),
        tunnels = ctx.routes.borrow().static_tunnels(),
        "core serving"
    );
    let _ = ready.send(Ok(()));
    glommio::spawn_local(trim_after_bursts(ctx.clone())).detach();
    for (endpoint, lis, handover) in quic {
        let admit_ctx = ctx.clone();
        let admit = move |conn| {
            let task = Box::pin(crate::downstream::h3::serve(
                admit_ctx.clone(),
                lis.clone(),
                conn,
            ));
            match admit_ctx.gate.spawn(task) {
                Ok(t) => {
                    t.detach();
                }
                Err(e) => tracing::warn!("cannot spawn h3 connection task: {e}"),
            }
        };
        glommio::spawn_local(endpoint.run(Some(ctx.clone()), admit, handover)).detach();
    }
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|(sock, lis)| {
            glommio::spawn_local(crate::listener::accept_loop(
                sock,
                ctx.clone(),
                lis,
                stop.clone(),
            ))
        })
        .collect();
    for l in loops {
        l.await;
    }
    let active = ctx.stats.connections_active.load(Ordering::Relaxed);
    let grace = ctx.edge.shutdown_grace;
    tracing::info!(core, active, ?grace, "draining");
    let drained = async {
        let _ = ctx.gate.close().await;
        true
    }
    .or(async {
        glommio::timer::sleep(grace).await;
        false
    })
    .await;
    let left = ctx.stats.connections_active.load(Ordering::Relaxed);
    tracing::info!(core, drained, left, "core stopped");
}

/// One core's share of a QUIC listener: its UDP socket and its part of the
/// handover channels.
type QuicPart = (Option<socket2::Socket>, Option<crate::quic::handover::Mesh>);

/// The UDP sockets of a QUIC listener, one per core in core order, steered
/// by connection id in the kernel when `edge.quic_steering` is on (a kernel
/// that refuses the program leaves the hash and the handover: warned).
fn quic_sockets(
    addr: std::net::SocketAddr,
    cores: usize,
    config: &Config,
    keys: &crate::quic::Keys,
) -> Result<Vec<socket2::Socket>, StartError> {
    let group = crate::udp::bind_group(addr, cores).map_err(|e| StartError::Core {
        core: 0,
        reason: format!("QUIC cannot bind {addr} (UDP): {e}"),
    })?;
    if config.edge.quic_steering && cores > 1 {
        match crate::udp::steer_group(&group, keys.cid_key().steer()) {
            Ok(()) => {
                tracing::info!(%addr, cores, "QUIC datagrams steered to their connection's core in the kernel")
            }
            Err(e) => {
                tracing::warn!(%addr, "QUIC steering program refused by the kernel ({e}): datagrams of a client that changes address are handed over between cores instead")
            }
        }
    }
    Ok(group)
}

/// The QUIC endpoint of one core on its socket of a listener's group.
fn quic_endpoint(
    core: usize,
    config: &Config,
    id: &Identity,
    keys: &crate::quic::Keys,
    socket: socket2::Socket,
) -> Result<crate::quic::Endpoint, String> {
    use crate::downstream::h3::{MAX_STREAMS, STREAM_WINDOW};
    let tls = id.quic_server_config().map_err(|e| e.to_string())?;
    let mut transport =
        crate::quic::server_transport(MAX_STREAMS, STREAM_WINDOW, config.edge.idle_timeout);
    crate::quic::probe_mtu_up_to(&mut transport, config.edge.quic_max_udp_payload);
    let server = keys.server_config(tls, transport)?;
    let limits = crate::quic::endpoint::Limits {
        handshakes_before_retry: config.edge.quic_handshakes_before_retry,
        gso: std::env::var_os("SWITCHYARD_QUIC_NO_GSO").is_none(),
    };
    crate::quic::Endpoint::on_socket(
        socket,
        keys.endpoint_config(core, config.edge.quic_max_udp_payload),
        Some(server),
        limits,
        crate::h3::error::Code::REQUEST_CANCELLED.0,
    )
    .map_err(|e| format!("QUIC endpoint of core {core}: {e}"))
}

/// Runs the edge until SIGINT/SIGTERM, then drains and returns.
pub fn run(config: Config) -> Result<(), StartError> {
    let admin = config.edge.admin;
    let (handle, joins) = start(config)?;
    if let Some(addr) = admin {
        crate::admin::spawn(addr, handle.cores.clone())?;
    }
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    let stop = handle.stop.clone();
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            tracing::info!(
                signal = sig,
                "shutting down: no new connections, draining relays"
            );
            stop.store(true, Ordering::Relaxed);
        }
        // A second signal forces an immediate exit.
        if signals.forever().next().is_some() {
            std::process::exit(1);
        }
    });
    for j in joins {
        let _ = j.join();
    }
    Ok(())
}

/// Once a burst of new connections is over (connections were accepted in
/// the last second, none in this one), hands the allocator's free pages back
/// to the kernel. Handshakes take buffers that relays then free; the heap
/// keeps those pages otherwise, interleaved with the relays that stay
/// (measured: idle RSS per relayed connection, see docs/engine.md).
async fn trim_after_bursts(ctx: Rc<crate::core::CoreCtx>) {
    let mut seen = ctx.stats.connections_total.load(Ordering::Relaxed);
    let mut busy = false;
    loop {
        glommio::timer::sleep(std::time::Duration::from_secs(1)).await;
        let now = ctx.stats.connections_total.load(Ordering::Relaxed);
        if now != seen {
            busy = true;
        } else if busy {
            busy = false;
            let released = crate::sys::trim_heap();
            tracing::debug!(
                core = ctx.core,
                released,
                "heap trimmed after a burst of connections"
            );
        }
        seen = now;
    }
}
