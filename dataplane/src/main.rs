//! `dataplane`: run the edge from a config file, or the self-contained demo.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dataplane",
    version,
    about = "Switchyard edge data plane",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Configuration file (TOML, see DESIGN §8).
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start example origins and an edge with examples/demo.toml.
    Demo {
        /// Demo configuration.
        #[arg(long, default_value = "examples/demo.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file and exit.
    Check {
        /// Configuration file.
        #[arg(long, short)]
        config: PathBuf,
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
        .with_thread_names(true)
        .init();
    let cli = Cli::parse();
    let (path, demo) = match (cli.command, cli.config) {
        (Some(Command::Demo { config }), _) => (config, true),
        (Some(Command::Check { config }), _) => {
            return match dataplane::config::Config::load(&config) {
                Ok(_) => {
                    println!("{}: ok", config.display());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        (None, Some(config)) => (config, false),
        (None, None) => {
            eprintln!("error: give --config FILE.toml, or run `dataplane demo`");
            return ExitCode::from(2);
        }
    };
    if demo {
        if let Err(e) = dataplane::demo::prepare(&path) {
            return fail(&*e);
        }
    }
    let config = match dataplane::config::Config::load(&path) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    match dataplane::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}
