//! `controlplane`: run the control plane (`serve`), both processes (`up`),
//! or call the API (`tunnel`, `token`, `stats`).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use controlplane::cli::{self, Target, TokenCmd, TunnelCmd};
use controlplane::config::ControlConfig;

#[derive(Parser)]
#[command(name = "controlplane", version, about = "Switchyard control plane")]
struct Cli {
    /// Configuration file: `[control]` gives the API address and admin token file.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// API address for client commands (overrides the config).
    #[arg(long, global = true, env = "SWITCHYARD_GRPC")]
    addr: Option<String>,
    /// Admin token for client commands (else read from admin_token_file).
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane only (the data plane runs as its own service).
    Serve,
    /// Run the control plane and a supervised data plane.
    Up {
        /// Path of the `dataplane` binary (default: next to this one).
        #[arg(long)]
        dataplane: Option<PathBuf>,
        /// Run the data plane as `dataplane demo` (starts the example origins).
        #[arg(long)]
        demo: bool,
    },
    /// Manage tunnels.
    #[command(subcommand)]
    Tunnel(TunnelCmd),
    /// Manage tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Per-core counters, per-tunnel counters and table state.
    Stats {
        /// Only this tunnel's counters.
        #[arg(long)]
        tunnel: Option<String>,
        /// Stream a snapshot every interval.
        #[arg(long)]
        watch: bool,
        /// Watch interval.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u32,
        /// Every node of the etcd fleet: revision, lag, cores current.
        #[arg(long, conflicts_with_all = ["tunnel", "watch"])]
        fleet: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let cfg = match &cli.config {
        Some(p) => match ControlConfig::load(p) {
            Ok(c) => Some(c),
            Err(e) => return fail(&e),
        },
        None => None,
    };
    let need_cfg = || {
        cfg.clone()
            .ok_or_else(|| "give --config FILE.toml".to_string())
    };
    let target = || -> Result<Target, String> {
        let url = match (&cli.addr, &cfg) {
            (Some(a), _) if a.starts_with("http") => a.clone(),
            (Some(a), _) => format!("http://{a}"),
            (None, Some(c)) => format!("http://{}", c.grpc),
            (None, None) => "http://127.0.0.1:50051".into(),
        };
        let token = match (&cli.token, &cfg) {
            (Some(t), _) => t.clone(),
            (None, Some(c)) => std::fs::read_to_string(&c.admin_token_file)
                .map(|s| s.trim().to_owned())
                .map_err(|e| format!("{}: {e}", c.admin_token_file.display()))?,
            (None, None) => return Err("give --token, SWITCHYARD_ADMIN_TOKEN or --config".into()),
        };
        Ok(Target {
            url,
            token,
            json: cli.json,
        })
    };
    let result: Result<(), String> = match cli.command {
        Command::Serve => match need_cfg() {
            Ok(c) => controlplane::server::serve(
                c,
                async {
                    let _ = tokio::signal::ctrl_c().await;
                },
                || {},
            )
            .await
            .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        },
        Command::Up { dataplane, demo } => match &cli.config {
            Some(p) => {
                let dp = controlplane::supervisor::dataplane_path(dataplane);
                controlplane::supervisor::up(p, dp, demo)
                    .await
                    .map_err(|e| e.to_string())
            }
            None => Err("give --config FILE.toml".into()),
        },
        Command::Tunnel(c) => match target() {
            Ok(t) => cli::tunnel(&t, c).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        },
        Command::Token(c) => match target() {
            Ok(t) => cli::token(&t, c).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        },
        Command::Stats { fleet: true, .. } => match target() {
            Ok(t) => cli::fleet(&t).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        },
        Command::Stats {
            tunnel,
            watch,
            interval_ms,
            ..
        } => match target() {
            Ok(t) => cli::stats(&t, watch, interval_ms, tunnel.as_deref())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}
