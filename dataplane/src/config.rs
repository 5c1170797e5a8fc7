//! The stand-alone configuration file (DESIGN §8).
//!
//! `dataplane --config FILE.toml` reads this file once at start-up. Parsing is
//! two steps: `serde` + `toml` turn the text into [`RawConfig`] (unknown keys
//! are rejected, so a typo is an error, not a silently ignored field), then
//! [`Config::validate`] checks meaning (addresses parse, names are unique,
//! hostnames map to one tunnel, files exist). Every error names the field it is
//! about, so the operator gets one precise line and a non-zero exit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod raw;
pub use raw::RawConfig;

/// Why a configuration file was refused. The text always names the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// TOML syntax or type error; `toml` reports the key and position.
    #[error("config {path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// toml's description, including the offending key.
        message: String,
    },
    /// A field has a value the edge cannot use.
    #[error("config field `{field}`: {reason}")]
    Invalid {
        /// Dotted path of the field, e.g. `tunnel[1].upstream`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Validated configuration, ready for every core to build its tables from.
#[derive(Debug, Clone)]
pub struct Config {
    /// Edge-wide settings.
    pub edge: EdgeSettings,
    /// Listeners; each core binds every one of them.
    pub listeners: Vec<ListenerConfig>,
    /// Tunnels in file order.
    pub tunnels: Vec<TunnelConfig>,
    /// Managed mode: the control plane's shared-memory region, if configured.
    pub control: Option<ControlSettings>,
}

/// `[control]` as the data plane uses it (the control plane reads the rest).
#[derive(Debug, Clone)]
pub struct ControlSettings {
    /// The region file (`control.shm`).
    pub shm: PathBuf,
    /// How long a starting core waits for its first snapshot before serving
    /// with static tables only (`control.snapshot_wait_ms`, default 5000).
    pub snapshot_wait: Duration,
}

/// Edge-wide limits and timeouts.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// Number of cores to run; 0 means every core this process may use.
    pub cores: usize,
    /// Query parameter that may carry the bearer token.
    pub token_query_param: String,
    /// Largest accepted request head.
    pub max_head_bytes: usize,
    /// PROXY header + TLS + request head must complete within this.
    pub handshake_timeout: Duration,
    /// A relay with no byte moving either way for this long is closed.
    pub idle_timeout: Duration,
    /// TCP connect to the upstream.
    pub upstream_connect_timeout: Duration,
    /// Upstream answer to the forwarded request head.
    pub upstream_handshake_timeout: Duration,
    /// How long relays may drain after SIGINT/SIGTERM.
    pub shutdown_grace: Duration,
    /// Address of the read-only stats endpoint, if any.
    pub admin: Option<SocketAddr>,
    /// Use splice(2) for cleartext TCP ↔ cleartext TCP relays.
    pub splice: bool,
    /// DNS server (UDP and TCP) for upstream names, instead of the system's
    /// configuration (`/etc/hosts`, `/etc/resolv.conf`).
    pub resolver: Option<SocketAddr>,
    /// Connections one core serves at once; `None`: derived from the fd
    /// budget at start (`server::max_connections`).
    pub max_connections: Option<usize>,
    /// QUIC handshakes in flight on one core beyond which new clients must
    /// prove their address with a Retry first (0: always).
    pub quic_handshakes_before_retry: usize,
    /// Largest UDP payload QUIC probes for (DPLPMTUD) and accepts: 1452
    /// fits Ethernet; jumbo-frame networks and loopback carry more.
    pub quic_max_udp_payload: u16,
    /// The kernel sends each QUIC datagram to the core that owns its
    /// connection (a reuseport BPF program on the connection id); off, it
    /// hashes the 4-tuple and cores hand misrouted datagrams over.
    pub quic_steering: bool,
    /// One line per finished relay: off, text or JSON.
    pub access_log: AccessLogFormat,
    /// Where access-log lines go (appended); `None`: stdout.
    pub access_log_path: Option<PathBuf>,
}

/// `edge.access_log`: one line per finished relay, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// No access log.
    Off,
    /// `key=value` fields, one line per relay.
    Text,
    /// One JSON object per line.
    Json,
}

/// One listening address.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Name for logs.
    pub name: String,
    /// Where to listen (TCP).
    pub addr: SocketAddr,
    /// Certificate chain and key, when the listener terminates TLS.
    pub tls: Option<TlsFiles>,
    /// A PROXY v1/v2 header is required before anything else.
    pub proxy_protocol: bool,
    /// X-Forwarded-For gives the client address.
    pub trusted_forwarded_for: bool,
    /// Tunnel name for plain CONNECT without SNI.
    pub default_tunnel: Option<String>,
    /// Cleartext listener also accepts HTTP/2 with prior knowledge.
    pub h2c: bool,
    /// TLS listener also serves HTTP/3 over QUIC on the same port (UDP).
    pub quic: bool,
}

/// PEM files of a TLS listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}

/// What the edge does with an upgrade on a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelMode {
    /// Relay upgrades, CONNECT and requests to an HTTP upstream.
    Http,
    /// Terminate Xray-style HTTPUpgrade at the edge; raw TCP to the upstream.
    HttpUpgrade,
}

/// One tunnel: hostnames → upstream.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// Unique name.
    pub name: String,
    /// Lower-cased hostnames without port.
    pub hostnames: Vec<String>,
    /// Upstream address (`host:port`; resolved at dial time).
    pub upstream: String,
    /// Relay or terminate.
    pub mode: TunnelMode,
    /// httpupgrade: accepted path, with a leading `/`.
    pub path: String,
    /// Require a bearer token.
    pub token_auth: bool,
    /// Accepted tokens (plain text in the file; hashed when tables are built).
    pub tokens: Vec<String>,
    /// httpupgrade: silent close on rejection.
    pub stealth: bool,
    /// Allowed client networks; empty = all.
    pub allowed_cidrs: Vec<ipnet::IpNet>,
    /// Allowed upgrade tokens (lower case); empty = all.
    pub allowed_upgrades: Vec<String>,
    /// Plain CONNECT allowed.
    pub allow_connect: bool,
    /// HTTP version toward the upstream.
    pub http_version: UpstreamVersion,
    /// How an h3 upstream's certificate is checked.
    pub upstream_tls: UpstreamTls,
}

/// How the edge checks an h3 upstream's certificate (`upstream_tls`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// PEM file of the CAs to trust instead of the system roots.
    pub ca: Option<PathBuf>,
    /// The same, inline (from the control plane).
    pub ca_pem: Option<String>,
    /// Name to verify (and send as SNI) instead of the upstream's host.
    pub server_name: Option<String>,
    /// Accept any certificate: tests only (warned at start).
    pub insecure: bool,
}

/// HTTP version spoken to a tunnel's upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamVersion {
    /// HTTP/1.1 (Upgrade, CONNECT, requests).
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (extended CONNECT).
    H2c,
    /// HTTP/3 over QUIC (extended CONNECT, RFC 9220).
    H3,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, base).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates configuration text; relative TLS paths are taken
    /// relative to `base` when they do not exist relative to the working directory.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: PathBuf::new(),
            message: e.to_string().trim_end().replace('\n', " | "),
        })?;
        raw.validate(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("."))
    }

    const MIN: &str = "[[listener]]\naddr = \"127.0.0.1:8080\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MIN).expect("valid");
        assert_eq!(c.edge.token_query_param, "rstream.token");
        assert_eq!(c.edge.max_head_bytes, 16 * 1024);
        assert_eq!(c.edge.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.listeners[0].name, "listener0");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[edge]\ncorez = 1\n", "corez"),
            ("[[listener]]\naddr = \"nope\"\n", "listener[0].addr"),
            (
                "[[listener]]\naddr = \"127.0.0.1:1\"\ndefault_tunnel = \"x\"\n",
                "listener[0].default_tunnel",
            ),
            (
                "[[listener]]\naddr = \"127.0.0.1:1\"\n[[tunnel]]\nname = \"a\"\nupstream = \"127.0.0.1\"\n",
                "tunnel[0].upstream",
            ),
            (
                "[[listener]]\naddr = \"127.0.0.1:1\"\n[[tunnel]]\nname = \"a\"\nupstream = \"h:1\"\nmode = \"tcp\"\n",
                "tunnel[0].mode",
            ),
            (
                "[[listener]]\naddr = \"127.0.0.1:1\"\n[[tunnel]]\nname = \"a\"\nupstream = \"h:1\"\nhostnames=[\"x\"]\n[[tunnel]]\nname = \"b\"\nupstream = \"h:1\"\nhostnames=[\"X\"]\n",
                "tunnel[1].hostnames",
            ),
            ("[[listener]]\naddr = \"127.0.0.1:1\"\ntls = { cert = \"/nonexistent.pem\", key = \"/k\" }\n", "listener[0].tls.cert"),
            ("[edge]\ncores = \"two\"\n", "cores"),
        ];
        for (text, field) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(field), "{err:?} should name {field}");
        }
    }

    #[test]
    fn httpupgrade_path_gets_leading_slash_and_hosts_lowercase() {
        let c = parse(
            "[[listener]]\naddr = \"127.0.0.1:1\"\n[[tunnel]]\nname = \"a\"\nupstream = \"localhost:9\"\nmode = \"httpupgrade\"\npath = \"ray\"\nhostnames = [\"Ex.Test.\"]\n",
        )
        .expect("valid");
        assert_eq!(c.tunnels[0].path, "/ray");
        assert_eq!(c.tunnels[0].hostnames, ["ex.test"]);
        assert_eq!(c.tunnels[0].mode, TunnelMode::HttpUpgrade);
    }
}
