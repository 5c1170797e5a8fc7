//! What a relay leaves behind: its tunnel's counters (per core, read by the
//! admin endpoint and the control plane) and one access-log line when it
//! ends (`edge.access_log = "text" | "json"`).
//!
//! [`Relayed::start`] is called where the client got its success answer
//! (101 / 2xx) and the bytes start to flow, [`Relayed::finish`] with the
//! relay's report. A line carries the time, core, client, tunnel, what was
//! asked for, the downstream and upstream versions, the status, bytes each
//! way, the duration and how it ended; the path with the token parameter
//! redacted, never a header (so never a credential). Lines go to a writer
//! thread through a bounded queue: a core never waits on the log; when the
//! writer is behind, lines are dropped and counted (`access_log_dropped`).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::core::CoreCtx;
use crate::relay::Report;
use crate::stats::{self, CoreStats, TunnelCounters};
use crate::tunnel::Tunnel;

/// Lines queued for the writer before more are dropped.
const QUEUE: usize = 8192;

use crate::config::AccessLogFormat as Format;

/// The process's access log: the format and the writer thread's queue
/// (each core holds a clone).
#[derive(Debug, Clone)]
pub struct AccessLog {
    format: Format,
    lines: SyncSender<String>,
}

static LOG: std::sync::OnceLock<Option<AccessLog>> = std::sync::OnceLock::new();

/// Starts the process's access log (once; later calls keep the first).
pub fn init(format: Format, path: Option<&std::path::Path>) -> std::io::Result<()> {
    if LOG.get().is_none() {
        let _ = LOG.set(AccessLog::start(format, path)?);
    }
    Ok(())
}

/// The access log every core writes to, if one was started.
pub fn handle() -> Option<AccessLog> {
    LOG.get().cloned().flatten()
}

impl AccessLog {
    /// Starts the writer thread: lines to `path` (appended), or stdout.
    fn start(format: Format, path: Option<&std::path::Path>) -> std::io::Result<Option<AccessLog>> {
        if format == Format::Off {
            return Ok(None);
        }
        let file: Box<dyn Write + Send> = match path {
            Some(p) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?),
            None => Box::new(std::io::stdout()),
        };
        let mut out = std::io::BufWriter::new(file);
        let (lines, queue) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new().name("access-log".into()).spawn(move || {
            // What is queued goes out in one write, flushed when the queue
            // is empty: a line is out as soon as the writer gets to it.
            while let Ok(line) = queue.recv() {
                let mut ok = out.write_all(line.as_bytes()).is_ok();
                for more in queue.try_iter() {
                    ok = ok && out.write_all(more.as_bytes()).is_ok();
                }
                if !ok || out.flush().is_err() {
                    return;
                }
            }
        })?;
        Ok(Some(AccessLog { format, lines }))
    }
}

/// What a relay is (fixed for its life; the upstream version is the
/// tunnel's).
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// websocket, httpupgrade, connect, upgrade, request, webtransport, ...
    pub kind: &'static str,
    /// The downstream's HTTP version.
    pub downstream: crate::plan::Version,
    /// What the client was answered.
    pub status: u16,
    /// When the request was routed and authorized (the handshake histogram
    /// measures from here to the success answer).
    pub asked: Instant,
}

/// One relay being accounted for.
pub struct Relayed {
    counters: Arc<TunnelCounters>,
    core_stats: Arc<CoreStats>,
    client: SocketAddr,
    route: Route,
    started: Instant,
    /// The redacted path, kept only when lines are written.
    path: Option<Box<str>>,
}

/// The upstream version as logs name it.
pub fn upstream_version(t: &Tunnel) -> &'static str {
    match t.config.http_version {
        crate::config::UpstreamVersion::Http1 => "http/1.1",
        crate::config::UpstreamVersion::H2c => "h2c",
        crate::config::UpstreamVersion::H3 => "h3",
    }
}

impl Relayed {
    /// The client's address.
    pub fn client(&self) -> SocketAddr {
        self.client
    }

    /// What is relayed (websocket, connect, ...).
    pub fn kind(&self) -> &'static str {
        self.route.kind
    }

    /// A relay through `t` starts (the client got `route.status`).
    pub fn start(core: &CoreCtx, t: &Tunnel, client: SocketAddr, route: Route, target: &str) -> Relayed {
        stats::add(&core.stats.relays_total, 1);
        core.stats.families.relay_started(route.downstream, route.kind);
        core.stats.families.handshake(route.asked.elapsed());
        let counters = core.tunnel_counters(&t.config.name);
        stats::add(&counters.relays_total, 1);
        stats::add(&counters.relays_active, 1);
        let path = core
            .access_log
            .as_ref()
            .map(|_| crate::logsafe::redact_target(target, &core.edge.token_query_param).into_boxed_str());
        Relayed { counters, core_stats: core.stats.clone(), client, route, started: Instant::now(), path }
    }

    /// The relay ended with `r`: bytes to the tunnel's counters, and the
    /// access-log line.
    pub fn finish(self, core: &CoreCtx, tunnel: &Tunnel, r: &Report) {
        stats::add(&self.counters.bytes_downstream_to_upstream, r.down_to_up);
        stats::add(&self.counters.bytes_upstream_to_downstream, r.up_to_down);
        let Some(log) = &core.access_log else { return };
        let line = self.line(log.format, core.core, tunnel, r);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = log.lines.try_send(line) {
            stats::add(&core.stats.access_log_dropped, 1);
        }
    }

    fn line(&self, format: Format, core: usize, t: &Tunnel, r: &Report) -> String {
        let tunnel = t.config.name.as_str();
        let upstream = upstream_version(t);
        let time = humantime::format_rfc3339_millis(SystemTime::now());
        let ms = self.started.elapsed().as_millis();
        let (end, by) = (r.end.as_str(), r.ended_by.as_str());
        let path = self.path.as_deref().unwrap_or("");
        let Route { kind, downstream, status, .. } = self.route;
        let downstream = match downstream {
            crate::plan::Version::H1 => "h1",
            crate::plan::Version::H2 => "h2",
            crate::plan::Version::H3 => "h3",
        };
        let (client, up, down) = (self.client, r.down_to_up, r.up_to_down);
        // 0: an ordinary request, answered by the upstream inside the relay.
        let (status_text, status_json) = match status {
            0 => ("-".to_owned(), "null".to_owned()),
            s => (s.to_string(), s.to_string()),
        };
        match format {
            Format::Json => {
                let esc = stats::json_escape;
                format!(
                    "{{\"time\":\"{time}\",\"core\":{core},\"client\":\"{client}\",\"tunnel\":\"{}\",\"kind\":\"{kind}\",\
                     \"downstream\":\"{downstream}\",\"upstream\":\"{upstream}\",\"path\":\"{}\",\"status\":{status_json},\
                     \"bytes_up\":{up},\"bytes_down\":{down},\"duration_ms\":{ms},\"end\":\"{end}\",\"ended_by\":\"{by}\"}}\n",
                    esc(tunnel),
                    esc(path)
                )
            }
            _ => format!(
                "{time} core={core} client={client} tunnel={} kind={kind} downstream={downstream} upstream={upstream} \
                 path={} status={status_text} bytes_up={up} bytes_down={down} duration_ms={ms} end={end} ended_by={by}\n",
                crate::logsafe::Escaped(tunnel),
                crate::logsafe::Escaped(path)
            ),
        }
    }
}

impl Drop for Relayed {
    fn drop(&mut self) {
        stats::sub(&self.counters.relays_active, 1);
        self.core_stats.families.relay_gone(self.route.downstream, self.route.kind);
    }
}
