//! `controlplane up`: the control plane plus a supervised `dataplane` child.
//!
//! The child gets the same config file; it attaches to the region, asks every
//! ring for a snapshot and binds its listeners only once the snapshot is
//! applied. If it dies it is started again (after a short, growing pause);
//! on SIGINT/SIGTERM it gets SIGTERM and its drain time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::config::ControlConfig;
use crate::error::StartError;

/// Where the `dataplane` binary is: `--dataplane`, `SWITCHYARD_DATAPLANE`,
/// or next to this executable.
pub fn dataplane_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("SWITCHYARD_DATAPLANE").map(PathBuf::from))
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .map(|p| p.with_file_name("dataplane"))
        })
        .unwrap_or_else(|| PathBuf::from("dataplane"))
}

/// Runs both processes until a signal. `demo`: the child runs as
/// `dataplane demo` (example origins and certificate, README quick start).
pub async fn up(config: &Path, dataplane: PathBuf, demo: bool) -> Result<(), StartError> {
    let cfg = ControlConfig::load(config)?;
    let cfg_shm = cfg.shm.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut grpc_stop = stop_rx.clone();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(crate::server::serve(
        cfg,
        async move {
            let _ = grpc_stop.wait_for(|s| *s).await;
        },
        move || {
            let _ = ready_tx.send(());
        },
    ));
    if ready_rx.await.is_err() {
        return match server.await {
            Ok(r) => r,
            Err(e) => Err(StartError::Grpc(e.to_string())),
        };
    }
    let signals = tokio::spawn(async move {
        wait_signal().await;
        tracing::info!("shutting down: data plane drains, then the control plane stops");
        let _ = stop_tx.send(true);
    });
    supervise(config, &dataplane, demo, adoptable(&cfg_shm), stop_rx).await;
    signals.abort();
    match server.await {
        Ok(r) => r,
        Err(e) => Err(StartError::Grpc(e.to_string())),
    }
}

async fn wait_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut i), Ok(mut t)) => {
            tokio::select! {
                _ = i.recv() => {}
                _ = t.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// A data plane that outlived an earlier `up` (killed with -9) and still
/// serves from this region: adopted instead of started twice.
fn adoptable(shm: &Path) -> Option<u32> {
    let region = shmring::Region::attach(shm).ok()?;
    let pid = region
        .header(shmring::layout::H_DATAPLANE_PID)
        .load(std::sync::atomic::Ordering::Acquire) as u32;
    (pid != 0 && is_dataplane(pid)).then_some(pid)
}

fn is_dataplane(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Field 3 (after the parenthesized name) is the state; Z = exited.
    let running = stat
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| !rest.starts_with('Z'));
    running
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.windows(9).any(|w| w == b"dataplane"))
}

fn terminate(pid: u32) {
    // Graceful: the data plane drains its relays on SIGTERM.
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

async fn supervise(
    config: &Path,
    dataplane: &Path,
    demo: bool,
    adopted: Option<u32>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if let Some(pid) = adopted {
        tracing::info!(pid, "adopting the data plane that is still serving");
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if !is_dataplane(pid) {
                        tracing::warn!(pid, "adopted data plane exited; starting a new one");
                        break;
                    }
                }
                _ = stop.wait_for(|s| *s) => {
                    terminate(pid);
                    return;
                }
            }
        }
    }
    let mut backoff = Duration::from_millis(200);
    loop {
        let started = Instant::now();
        let mut cmd = Command::new(dataplane);
        if demo {
            cmd.arg("demo");
        }
        let mut child = match cmd.arg("--config").arg(config).kill_on_drop(true).spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(path = %dataplane.display(), "cannot start the data plane: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        };
        let pid = child.id();
        tracing::info!(?pid, "data plane started");
        let exited = tokio::select! {
            status = child.wait() => Some(status),
            _ = stop.wait_for(|s| *s) => None,
        };
        if let Some(status) = exited {
            tracing::warn!(?pid, ?status, "data plane exited; restarting");
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(200);
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        }
        if let Some(pid) = pid {
            terminate(pid);
        }
        match tokio::time::timeout(Duration::from_secs(15), child.wait()).await {
            Ok(status) => tracing::info!(?status, "data plane stopped"),
            Err(_) => {
                let _ = child.kill().await;
            }
        }
        return;
    }
}
