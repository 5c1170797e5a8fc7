//! `loadgen`: load modes against an edge or a direct origin, and the
//! benchmark origins (`loadgen origin ...`).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use loadgen::modes::{Mode, Plan};
use loadgen::net::ProxyVersion;
use loadgen::report::ReportHead;
use loadgen::session::{Target, Via};

#[derive(Parser)]
#[command(name = "loadgen", version, about = "Switchyard load generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// WebSocket: handshake, then echo round trips of --size bytes.
    Ws(Common),
    /// Xray-compatible HTTPUpgrade, then raw echo round trips (--ed: early data).
    Httpupgrade(Common),
    /// Plain CONNECT to --connect-target, then raw echo round trips.
    Connect(Common),
    /// WebSocket over HTTP/2 extended CONNECT (RFC 8441), echo round trips;
    /// --streams-per-conn streams share one connection.
    WsH2(Common),
    /// Plain CONNECT over HTTP/2, raw echo round trips.
    ConnectH2(Common),
    /// WebSocket over HTTP/3 extended CONNECT (RFC 9220), echo round trips;
    /// --streams-per-conn streams share one QUIC connection (needs --tls).
    WsH3(Common),
    /// Plain CONNECT over HTTP/3, raw echo round trips (needs --tls).
    ConnectH3(Common),
    /// WebTransport (draft-02): a session and one bidirectional stream per
    /// connection, raw echo round trips (needs --tls).
    Wt(Common),
    /// CONNECT-UDP (RFC 9298): --window HTTP datagrams of --size bytes in
    /// flight per session, echoed by the upstream; --path is the URI
    /// template's path (needs --tls).
    ConnectUdp(Common),
    /// CONNECT-IP (RFC 9484): IPv4 packets of --size bytes in HTTP
    /// datagrams, --window in flight per session (needs --tls).
    ConnectIp(Common),
    /// WebTransport (draft-02) datagrams of --size bytes, --window in
    /// flight per session (needs --tls).
    WtDatagrams(Common),
    /// Upgraded streams pushing and pulling bytes as fast as possible.
    Bulk(Common),
    /// Connection + handshake + one echo + close, repeatedly.
    Setup(Common),
    /// Open and hold --connections upgraded connections for --duration.
    Idle(Common),
    /// Run a benchmark origin.
    Origin {
        /// What to serve.
        #[arg(value_enum)]
        kind: loadgen::origin::Kind,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Cores (0 = all allowed).
        #[arg(long, default_value_t = 0)]
        cores: usize,
        /// h3-echo: certificate chain (PEM; default: self-signed for localhost).
        #[arg(long)]
        cert: Option<PathBuf>,
        /// h3-echo: private key (PEM).
        #[arg(long)]
        key: Option<PathBuf>,
    },
}

#[derive(Args, Clone)]
struct Common {
    /// Edge or origin address.
    #[arg(long)]
    target: SocketAddr,
    /// Use TLS.
    #[arg(long)]
    tls: bool,
    /// Trust this CA (PEM) instead of accepting any certificate.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// TLS SNI (default: --host).
    #[arg(long)]
    sni: Option<String>,
    /// Host header.
    #[arg(long, default_value = "localhost")]
    host: String,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Bearer token (sent as Authorization).
    #[arg(long)]
    token: Option<String>,
    /// Send a PROXY header first.
    #[arg(long, value_enum)]
    proxy_protocol: Option<ProxyVersion>,
    /// Concurrent connections.
    #[arg(long, short = 'c', default_value_t = 16)]
    connections: usize,
    /// Run length in seconds.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many operations in total.
    #[arg(long, short = 'n')]
    requests: Option<u64>,
    /// Constant rate (operations per second in total; open loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// HTTPUpgrade early data: first payload right after the head.
    #[arg(long)]
    ed: bool,
    /// CONNECT target (host:port), for connect mode or --via connect.
    #[arg(long, default_value = "127.0.0.1:9000")]
    connect_target: String,
    /// Handshake for bulk/setup/idle.
    #[arg(long, value_enum, default_value = "httpupgrade")]
    via: Via,
    /// HTTP/2 vias: streams sharing one connection (--connections counts streams).
    #[arg(long, default_value_t = 1)]
    streams_per_conn: usize,
    /// connect-udp: HTTP datagrams in flight per session.
    #[arg(long, default_value_t = 32)]
    window: usize,
    /// Spread connections over 127.0.0.1..N source addresses.
    #[arg(long, default_value_t = 1)]
    sources: usize,
    /// Per-operation and handshake timeout, seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Cores (0 = all allowed).
    #[arg(long, default_value_t = 0)]
    cores: usize,
    /// Write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the latency percentile plot as SVG.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// No progress line.
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn cpus(n: usize) -> Vec<usize> {
    let all = loadgen::allowed_cpus();
    if n == 0 || n >= all.len() {
        all
    } else {
        all[..n].to_vec()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (name, mode, via_override, c) = match cli.command {
        Command::Origin {
            kind,
            listen,
            cores,
            cert,
            key,
        } => {
            return match loadgen::origin::serve(
                kind,
                listen,
                &cpus(cores),
                (cert.as_deref(), key.as_deref()),
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Ws(c) => ("ws", Mode::Echo, Some(Via::Ws), c),
        Command::Httpupgrade(c) => ("httpupgrade", Mode::Echo, Some(Via::Httpupgrade), c),
        Command::Connect(c) => ("connect", Mode::Echo, Some(Via::Connect), c),
        Command::WsH2(c) => ("ws-h2", Mode::Echo, Some(Via::WsH2), c),
        Command::ConnectH2(c) => ("connect-h2", Mode::Echo, Some(Via::ConnectH2), c),
        Command::WsH3(c) => ("ws-h3", Mode::Echo, Some(Via::WsH3), c),
        Command::ConnectH3(c) => ("connect-h3", Mode::Echo, Some(Via::ConnectH3), c),
        Command::Wt(c) => ("wt", Mode::Echo, Some(Via::Wt), c),
        Command::ConnectUdp(c) => ("connect-udp", Mode::Datagrams, Some(Via::ConnectUdp), c),
        Command::ConnectIp(c) => ("connect-ip", Mode::Datagrams, Some(Via::ConnectIp), c),
        Command::WtDatagrams(c) => ("wt-datagrams", Mode::Datagrams, Some(Via::Wt), c),
        Command::Bulk(c) => ("bulk", Mode::Bulk, None, c),
        Command::Setup(c) => ("setup", Mode::Setup, None, c),
        Command::Idle(c) => ("idle", Mode::Idle, None, c),
    };
    let via = via_override.unwrap_or(c.via);
    let tls = if c.tls {
        let alpn: &[u8] = if via.is_h2() { b"h2" } else { b"http/1.1" };
        match loadgen::net::tls_config(c.ca.as_deref(), alpn) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: --ca: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    if c.connections == 0 || c.size == 0 && mode == Mode::Echo {
        eprintln!("error: --connections and --size must be positive");
        return ExitCode::FAILURE;
    }
    let target = Target {
        addr: c.target,
        tls,
        sni: c.sni.clone().unwrap_or_else(|| c.host.clone()),
        host: c.host.clone(),
        path: c.path.clone(),
        token: c.token.clone(),
        proxy: c.proxy_protocol,
        connect_target: c.connect_target.clone(),
        ed: c.ed,
        timeout: Duration::from_secs_f64(c.timeout),
        streams_per_conn: c.streams_per_conn.max(1),
    };
    let plan = Plan {
        mode,
        via,
        target,
        size: c.size,
        duration: Duration::from_secs_f64(c.duration),
        requests: c.requests,
        rate_per_conn: c.rate.map(|r| r / c.connections as f64),
        conns: 0,
        first_conn: 0,
        sources: c.sources.clamp(1, 250),
        window: c.window,
    };
    let head = ReportHead {
        mode: name.into(),
        via: format!("{via:?}").to_lowercase(),
        target: c.target.to_string(),
        tls: c.tls,
        connections: c.connections,
    };
    let report = loadgen::run(plan, c.connections, &cpus(c.cores), head, !c.quiet);
    print!("{}", report.text());
    if let Some(p) = &c.json {
        if let Err(e) = std::fs::write(p, serde_json::to_string_pretty(&report).unwrap_or_default())
        {
            eprintln!("error: {}: {e}", p.display());
            return ExitCode::FAILURE;
        }
    }
    if let Some(p) = &c.svg {
        if let Err(e) = std::fs::write(p, report.svg()) {
            eprintln!("error: {}: {e}", p.display());
            return ExitCode::FAILURE;
        }
    }
    if report.ops == 0 && report.established == 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
