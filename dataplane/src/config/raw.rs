//! The configuration file as written (serde types and defaults), and its
//! validation into [`super::Config`]: every error names the field it is
//! about.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::*;

/// The file as written, before validation.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    edge: RawEdge,
    /// Managed mode; read by the control plane. Accepted here so that one file
    /// serves both processes.
    #[serde(default)]
    control: Option<toml::Table>,
    #[serde(default, rename = "listener")]
    listeners: Vec<RawListener>,
    #[serde(default, rename = "tunnel")]
    tunnels: Vec<RawTunnel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEdge {
    #[serde(default)]
    cores: usize,
    #[serde(default = "default_token_param")]
    token_query_param: String,
    #[serde(default = "default_max_head")]
    max_head_bytes: usize,
    #[serde(default = "default_handshake_ms")]
    handshake_timeout_ms: u64,
    #[serde(default = "default_idle_ms")]
    idle_timeout_ms: u64,
    #[serde(default = "default_connect_ms")]
    upstream_connect_timeout_ms: u64,
    #[serde(default = "default_upstream_handshake_ms")]
    upstream_handshake_timeout_ms: u64,
    #[serde(default = "default_grace_ms")]
    shutdown_grace_ms: u64,
    #[serde(default)]
    admin: Option<String>,
    #[serde(default = "default_splice")]
    splice: bool,
    #[serde(default)]
    resolver: Option<String>,
    #[serde(default)]
    max_connections: usize,
    #[serde(default = "default_quic_retry")]
    quic_handshakes_before_retry: usize,
    #[serde(default = "default_quic_udp")]
    quic_max_udp_payload: u16,
    #[serde(default = "default_true")]
    quic_steering: bool,
    #[serde(default)]
    access_log: Option<String>,
    #[serde(default)]
    access_log_path: Option<PathBuf>,
}

fn default_quic_udp() -> u16 {
    1452
}

fn default_quic_retry() -> usize {
    256
}

impl Default for RawEdge {
    fn default() -> Self {
        // Deserializing an empty table applies every serde default above.
        toml::from_str("").unwrap_or_else(|_| unreachable!("empty edge table always parses"))
    }
}

fn default_token_param() -> String {
    "rstream.token".into()
}
fn default_max_head() -> usize {
    16 * 1024
}
fn default_handshake_ms() -> u64 {
    10_000
}
fn default_idle_ms() -> u64 {
    300_000
}
fn default_connect_ms() -> u64 {
    5_000
}
fn default_upstream_handshake_ms() -> u64 {
    10_000
}
fn default_grace_ms() -> u64 {
    10_000
}
fn default_splice() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: Option<String>,
    addr: String,
    tls: Option<RawTls>,
    #[serde(default)]
    quic: bool,
    #[serde(default)]
    proxy_protocol: bool,
    #[serde(default)]
    h2c: bool,
    #[serde(default)]
    trusted_forwarded_for: bool,
    #[serde(default)]
    default_tunnel: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTunnel {
    name: String,
    #[serde(default)]
    hostnames: Vec<String>,
    upstream: String,
    #[serde(default = "default_http_version")]
    http_version: String,
    #[serde(default = "default_mode")]
    mode: String,
    #[serde(default = "default_path")]
    path: String,
    #[serde(default)]
    token_auth: bool,
    #[serde(default)]
    tokens: Vec<String>,
    /// httpupgrade: close silently on rejection (Xray behaviour) instead of
    /// answering with a status.
    #[serde(default = "default_stealth")]
    stealth: bool,
    /// Client networks allowed to use the tunnel; empty means everyone.
    #[serde(default)]
    allowed_cidrs: Vec<String>,
    /// `Upgrade:` tokens the tunnel relays; empty means any.
    #[serde(default)]
    allowed_upgrades: Vec<String>,
    #[serde(default = "default_true")]
    allow_connect: bool,
    #[serde(default)]
    upstream_tls: Option<RawUpstreamTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstreamTls {
    ca: Option<PathBuf>,
    server_name: Option<String>,
    #[serde(default)]
    insecure: bool,
}

fn default_http_version() -> String {
    "http/1.1".into()
}
fn default_mode() -> String {
    "http".into()
}
fn default_path() -> String {
    "/".into()
}
fn default_stealth() -> bool {
    true
}
fn default_true() -> bool {
    true
}

impl RawConfig {
    pub(super) fn validate(self, base: &Path) -> Result<Config, ConfigError> {
        let control = match &self.control {
            None => None,
            Some(t) => match t.get("shm") {
                None => None,
                Some(toml::Value::String(p)) if !p.is_empty() => Some(ControlSettings {
                    shm: PathBuf::from(p),
                    snapshot_wait: match t.get("snapshot_wait_ms") {
                        None => Duration::from_millis(5000),
                        Some(toml::Value::Integer(ms)) if *ms >= 0 => {
                            Duration::from_millis(*ms as u64)
                        }
                        Some(_) => {
                            return Err(invalid(
                                "control.snapshot_wait_ms",
                                "must be a non-negative integer",
                            ))
                        }
                    },
                }),
                Some(_) => return Err(invalid("control.shm", "must be a non-empty path")),
            },
        };
        let e = self.edge;
        if e.token_query_param.is_empty() {
            return Err(invalid("edge.token_query_param", "must not be empty"));
        }
        if !(1024..=1 << 20).contains(&e.max_head_bytes) {
            return Err(invalid(
                "edge.max_head_bytes",
                "must be between 1024 and 1048576",
            ));
        }
        for (field, v) in [
            ("edge.handshake_timeout_ms", e.handshake_timeout_ms),
            ("edge.idle_timeout_ms", e.idle_timeout_ms),
            (
                "edge.upstream_connect_timeout_ms",
                e.upstream_connect_timeout_ms,
            ),
            (
                "edge.upstream_handshake_timeout_ms",
                e.upstream_handshake_timeout_ms,
            ),
        ] {
            if v == 0 {
                return Err(invalid(field, "must be greater than 0"));
            }
        }
        let admin =
            match e.admin.as_deref() {
                None | Some("") => None,
                Some(a) => Some(a.parse::<SocketAddr>().map_err(|err| {
                    invalid("edge.admin", format!("`{a}` is not ip:port ({err})"))
                })?),
            };
        let resolver = match e.resolver.as_deref() {
            None | Some("") => None,
            Some(a) => Some(a.parse::<SocketAddr>().map_err(|err| {
                invalid("edge.resolver", format!("`{a}` is not ip:port ({err})"))
            })?),
        };
        let edge = EdgeSettings {
            cores: e.cores,
            token_query_param: e.token_query_param,
            max_head_bytes: e.max_head_bytes,
            handshake_timeout: Duration::from_millis(e.handshake_timeout_ms),
            idle_timeout: Duration::from_millis(e.idle_timeout_ms),
            upstream_connect_timeout: Duration::from_millis(e.upstream_connect_timeout_ms),
            upstream_handshake_timeout: Duration::from_millis(e.upstream_handshake_timeout_ms),
            shutdown_grace: Duration::from_millis(e.shutdown_grace_ms),
            admin,
            splice: e.splice,
            resolver,
            max_connections: (e.max_connections > 0).then_some(e.max_connections),
            quic_handshakes_before_retry: e.quic_handshakes_before_retry,
            quic_max_udp_payload: e.quic_max_udp_payload,
            quic_steering: e.quic_steering,
            access_log: match e.access_log.as_deref() {
                None | Some("off") => crate::config::AccessLogFormat::Off,
                Some("text") => crate::config::AccessLogFormat::Text,
                Some("json") => crate::config::AccessLogFormat::Json,
                Some(other) => {
                    return Err(invalid(
                        "edge.access_log",
                        format!("`{other}`: expected off, text or json"),
                    ))
                }
            },
            access_log_path: e.access_log_path.filter(|p| !p.as_os_str().is_empty()),
        };
        if !(1200..=65_527).contains(&edge.quic_max_udp_payload) {
            return Err(invalid(
                "edge.quic_max_udp_payload",
                format!("{}: expected 1200-65527", edge.quic_max_udp_payload),
            ));
        }

        let tunnels = validate_tunnels(self.tunnels, base)?;
        let names: HashSet<&str> = tunnels.iter().map(|t| t.name.as_str()).collect();

        if self.listeners.is_empty() {
            return Err(invalid("listener", "at least one [[listener]] is required"));
        }
        let mut listeners = Vec::new();
        let mut addrs = HashSet::new();
        for (i, l) in self.listeners.into_iter().enumerate() {
            let at = |f: &str| format!("listener[{i}].{f}");
            let addr: SocketAddr = l.addr.parse().map_err(|err| {
                invalid(at("addr"), format!("`{}` is not ip:port ({err})", l.addr))
            })?;
            if !addrs.insert(addr) {
                return Err(invalid(
                    at("addr"),
                    format!("{addr} is used by another listener"),
                ));
            }
            if l.quic && l.tls.is_none() {
                return Err(invalid(
                    at("quic"),
                    "QUIC needs TLS: set `tls` on this listener (HTTP/3 is served on the same port, over UDP)",
                ));
            }
            if l.h2c && l.tls.is_some() {
                return Err(invalid(
                    at("h2c"),
                    "h2c is for cleartext listeners; a TLS listener offers h2 by ALPN",
                ));
            }
            let tls = match l.tls {
                None => None,
                Some(t) => Some(TlsFiles {
                    cert: existing_file(&at("tls.cert"), &t.cert, base)?,
                    key: existing_file(&at("tls.key"), &t.key, base)?,
                }),
            };
            let default_tunnel = match l.default_tunnel.as_str() {
                "" => None,
                n if names.contains(n) => Some(n.to_owned()),
                n => {
                    return Err(invalid(
                        at("default_tunnel"),
                        format!("no tunnel is named `{n}`"),
                    ))
                }
            };
            listeners.push(ListenerConfig {
                name: l.name.unwrap_or_else(|| format!("listener{i}")),
                addr,
                tls,
                proxy_protocol: l.proxy_protocol,
                trusted_forwarded_for: l.trusted_forwarded_for,
                default_tunnel,
                h2c: l.h2c,
                quic: l.quic,
            });
        }
        Ok(Config {
            edge,
            listeners,
            tunnels,
            control,
        })
    }
}

fn validate_tunnels(raw: Vec<RawTunnel>, base: &Path) -> Result<Vec<TunnelConfig>, ConfigError> {
    let mut names = HashSet::new();
    let mut hosts = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, t) in raw.into_iter().enumerate() {
        let at = |f: &str| format!("tunnel[{i}].{f}");
        if t.name.is_empty() {
            return Err(invalid(at("name"), "must not be empty"));
        }
        if !names.insert(t.name.clone()) {
            return Err(invalid(
                at("name"),
                format!("`{}` is used by another tunnel", t.name),
            ));
        }
        let mut hostnames = Vec::new();
        for h in &t.hostnames {
            let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
            if h.is_empty() || h.contains(|c: char| c.is_whitespace() || c == '/' || c == ':') {
                return Err(invalid(at("hostnames"), format!("`{h}` is not a hostname")));
            }
            if !hosts.insert(h.clone()) {
                return Err(invalid(
                    at("hostnames"),
                    format!("`{h}` is claimed by another tunnel"),
                ));
            }
            hostnames.push(h);
        }
        if let Err(e) = crate::target::Upstream::parse(&t.upstream) {
            return Err(invalid(at("upstream"), e));
        }
        let http_version = match t.http_version.as_str() {
            "http/1.1" => UpstreamVersion::Http1,
            "h2c" => UpstreamVersion::H2c,
            "h3" => UpstreamVersion::H3,
            other => {
                return Err(invalid(
                    at("http_version"),
                    format!("`{other}`: expected http/1.1, h2c or h3"),
                ))
            }
        };
        let mode = match t.mode.as_str() {
            "http" => TunnelMode::Http,
            "httpupgrade" => TunnelMode::HttpUpgrade,
            other => {
                return Err(invalid(
                    at("mode"),
                    format!("`{other}`: expected http or httpupgrade"),
                ))
            }
        };
        let path = if t.path.starts_with('/') {
            t.path
        } else {
            format!("/{}", t.path)
        };
        if t.token_auth && t.tokens.is_empty() {
            tracing::warn!(tunnel = %t.name, "token_auth is on but no tokens are configured: every request will get 401");
        }
        if t.tokens.iter().any(|s| s.is_empty()) {
            return Err(invalid(at("tokens"), "tokens must not be empty strings"));
        }
        let mut allowed_cidrs = Vec::new();
        for c in &t.allowed_cidrs {
            let net = c
                .parse::<ipnet::IpNet>()
                .or_else(|_| c.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    invalid(
                        at("allowed_cidrs"),
                        format!("`{c}` is not an address or CIDR"),
                    )
                })?;
            allowed_cidrs.push(net);
        }
        let upstream_tls = match t.upstream_tls {
            None => UpstreamTls::default(),
            Some(u) => {
                if http_version != UpstreamVersion::H3 {
                    return Err(invalid(
                        at("upstream_tls"),
                        "only h3 upstreams use TLS (set http_version = \"h3\")",
                    ));
                }
                if u.insecure && (u.ca.is_some() || u.server_name.is_some()) {
                    return Err(invalid(
                        at("upstream_tls"),
                        "`insecure` checks nothing: do not combine it with `ca` or `server_name`",
                    ));
                }
                if u.insecure {
                    tracing::warn!(tunnel = %t.name, "upstream_tls.insecure: the upstream's certificate is NOT checked (tests only)");
                }
                let ca = match u.ca {
                    Some(p) => Some(existing_file(&at("upstream_tls.ca"), &p, base)?),
                    None => None,
                };
                UpstreamTls {
                    ca,
                    ca_pem: None,
                    server_name: u.server_name,
                    insecure: u.insecure,
                }
            }
        };
        out.push(TunnelConfig {
            name: t.name,
            hostnames,
            upstream: t.upstream,
            mode,
            path,
            token_auth: t.token_auth,
            tokens: t.tokens,
            stealth: t.stealth,
            allowed_cidrs,
            allowed_upgrades: t
                .allowed_upgrades
                .iter()
                .map(|u| u.to_ascii_lowercase())
                .collect(),
            allow_connect: t.allow_connect,
            http_version,
            upstream_tls,
        });
    }
    Ok(out)
}

fn existing_file(field: &str, p: &Path, base: &Path) -> Result<PathBuf, ConfigError> {
    if p.is_file() {
        return Ok(p.to_owned());
    }
    let rel = base.join(p);
    if p.is_relative() && rel.is_file() {
        return Ok(rel);
    }
    Err(invalid(
        field,
        format!("file `{}` does not exist", p.display()),
    ))
}
