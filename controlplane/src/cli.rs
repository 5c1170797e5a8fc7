//! Client subcommands: `tunnel …`, `token …`, `stats [--watch]`. Each calls
//! the gRPC API with the admin token and prints a short human-readable
//! answer, or one JSON document per answer with `--json`.

use std::collections::HashMap;

use clap::{Args, Subcommand};
use serde_json::json;
use tonic::transport::Channel;

use crate::pb;

/// Where and how to reach the API.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port`.
    pub url: String,
    /// Admin token.
    pub token: String,
    /// Print JSON.
    pub json: bool,
}

/// Tunnel properties given on the command line.
#[derive(Debug, Args, Clone)]
pub struct TunnelArgs {
    /// Tunnel name.
    pub name: String,
    /// Hostname that selects the tunnel (repeatable).
    #[arg(long = "hostname", required = true)]
    pub hostnames: Vec<String>,
    /// Upstream `host:port`.
    #[arg(long)]
    pub upstream: String,
    /// http | httpupgrade.
    #[arg(long, default_value = "http")]
    pub mode: String,
    /// http/1.1 | h2c | h3.
    #[arg(long, default_value = "http/1.1")]
    pub http_version: String,
    /// Require a bearer token.
    #[arg(long)]
    pub token_auth: bool,
    /// Trusted client network (repeatable); none = all.
    #[arg(long = "cidr")]
    pub cidrs: Vec<String>,
    /// Label `key=value` (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// httpupgrade path.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// httpupgrade: close silently on rejection.
    #[arg(long)]
    pub stealth: bool,
    /// h3 upstream: PEM file of the CAs to trust (default: the system roots).
    #[arg(long)]
    pub upstream_ca: Option<std::path::PathBuf>,
    /// h3 upstream: the name to verify (default: the upstream's host).
    #[arg(long)]
    pub upstream_server_name: Option<String>,
    /// h3 upstream: accept any certificate (tests only).
    #[arg(long)]
    pub upstream_insecure: bool,
}

/// `tunnel …`
#[derive(Debug, Subcommand)]
pub enum TunnelCmd {
    /// Create a tunnel.
    Create(TunnelArgs),
    /// Show one tunnel (name or id).
    Get {
        /// Name or `tun_…` id.
        key: String,
    },
    /// List tunnels, optionally by label.
    List {
        /// `key=value` (repeatable; all must match).
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Replace a tunnel's properties.
    Update(TunnelArgs),
    /// Delete a tunnel (name or id).
    Delete {
        /// Name or `tun_…` id.
        key: String,
    },
}

/// `token …`
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token; prints its secret once.
    Create {
        /// Label.
        #[arg(long, default_value = "")]
        name: String,
        /// Tunnel it opens (repeatable); none = every tunnel.
        #[arg(long = "tunnel")]
        tunnels: Vec<String>,
        /// Lifetime in seconds; none = no expiry.
        #[arg(long)]
        expires_in: Option<u64>,
    },
    /// List tokens (never secrets).
    List,
    /// Revoke a token by id.
    Revoke {
        /// `tok_…` id.
        id: String,
    },
}

/// A client-side failure.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Cannot connect.
    #[error("cannot reach the control plane at {0}: {1}")]
    Connect(String, String),
    /// The server said no.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// Bad argument.
    #[error("{0}")]
    Usage(String),
}

type Auth = tonic::service::interceptor::InterceptedService<
    Channel,
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>,
>;

async fn channel(t: &Target) -> Result<Auth, CliError> {
    let ch = Channel::from_shared(t.url.clone())
        .map_err(|e| CliError::Connect(t.url.clone(), e.to_string()))?
        .connect()
        .await
        .map_err(|e| CliError::Connect(t.url.clone(), e.to_string()))?;
    let value: tonic::metadata::MetadataValue<_> = format!("Bearer {}", t.token)
        .parse()
        .map_err(|_| CliError::Usage("admin token has invalid characters".into()))?;
    let f: Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send> =
        Box::new(move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", value.clone());
            Ok(r)
        });
    Ok(tonic::service::interceptor::InterceptedService::new(ch, f))
}

fn labels(list: &[String]) -> Result<HashMap<String, String>, CliError> {
    list.iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| CliError::Usage(format!("label `{l}`: expected key=value")))
        })
        .collect()
}

fn to_pb(a: &TunnelArgs) -> Result<pb::Tunnel, CliError> {
    let mode = match a.mode.as_str() {
        "http" => pb::Mode::Http,
        "httpupgrade" => pb::Mode::Httpupgrade,
        m => return Err(CliError::Usage(format!("--mode {m}: http or httpupgrade"))),
    };
    let http_version = match a.http_version.as_str() {
        "http/1.1" => pb::HttpVersion::Http1,
        "h2c" => pb::HttpVersion::H2c,
        "h3" => pb::HttpVersion::H3,
        v => {
            return Err(CliError::Usage(format!(
                "--http-version {v}: http/1.1, h2c or h3"
            )))
        }
    };
    let upstream_tls =
        if a.upstream_ca.is_some() || a.upstream_server_name.is_some() || a.upstream_insecure {
            let ca_pem = match &a.upstream_ca {
                Some(p) => std::fs::read_to_string(p)
                    .map_err(|e| CliError::Usage(format!("--upstream-ca {}: {e}", p.display())))?,
                None => String::new(),
            };
            Some(pb::UpstreamTls {
                ca_pem,
                server_name: a.upstream_server_name.clone().unwrap_or_default(),
                insecure: a.upstream_insecure,
            })
        } else {
            None
        };
    Ok(pb::Tunnel {
        upstream_tls,
        name: a.name.clone(),
        hostnames: a.hostnames.clone(),
        mode: mode as i32,
        upstream: a.upstream.clone(),
        http_version: http_version as i32,
        token_auth: a.token_auth,
        trusted_cidrs: a.cidrs.clone(),
        labels: labels(&a.labels)?,
        path: a.path.clone(),
        stealth: a.stealth,
        ..Default::default()
    })
}

fn tunnel_json(t: &pb::Tunnel) -> serde_json::Value {
    json!({
        "id": t.id, "name": t.name, "hostnames": t.hostnames,
        "mode": if t.mode == pb::Mode::Httpupgrade as i32 { "httpupgrade" } else { "http" },
        "upstream": t.upstream,
        "http_version": match pb::HttpVersion::try_from(t.http_version) {
            Ok(pb::HttpVersion::H2c) => "h2c",
            Ok(pb::HttpVersion::H3) => "h3",
            _ => "http/1.1",
        },
        "upstream_tls": t.upstream_tls.as_ref().map(|u| json!({
            "ca_pem": !u.ca_pem.is_empty(), "server_name": u.server_name, "insecure": u.insecure,
        })),
        "token_auth": t.token_auth,
        "trusted_cidrs": t.trusted_cidrs, "labels": t.labels, "path": t.path,
        "stealth": t.stealth, "created_at": t.created_at.as_ref().map(|c| c.seconds),
    })
}

fn tunnel_line(t: &pb::Tunnel) -> String {
    let v = tunnel_json(t);
    format!(
        "{}  {}  {} → {}  mode={} token_auth={}",
        t.id,
        t.name,
        t.hostnames.join(","),
        t.upstream,
        v["mode"].as_str().unwrap_or("http"),
        t.token_auth
    )
}

fn token_json(t: &pb::Token) -> serde_json::Value {
    json!({
        "id": t.id, "name": t.name, "tunnels": t.tunnels,
        "expires_at": t.expires_at.as_ref().map(|c| c.seconds),
        "created_at": t.created_at.as_ref().map(|c| c.seconds),
        "sha256_prefix": t.sha256_prefix,
    })
}

fn key_of(k: &str) -> (String, String) {
    if k.starts_with("tun_") {
        (k.to_owned(), String::new())
    } else {
        (String::new(), k.to_owned())
    }
}

/// Runs a `tunnel` subcommand.
pub async fn tunnel(t: &Target, cmd: TunnelCmd) -> Result<(), CliError> {
    let mut c = pb::tunnels_client::TunnelsClient::new(channel(t).await?);
    let print = |tun: &pb::Tunnel| {
        if t.json {
            println!("{}", tunnel_json(tun));
        } else {
            println!("{}", tunnel_line(tun));
        }
    };
    match cmd {
        TunnelCmd::Create(a) => {
            let r = c
                .create_tunnel(pb::CreateTunnelRequest {
                    tunnel: Some(to_pb(&a)?),
                })
                .await?;
            print(r.get_ref());
        }
        TunnelCmd::Update(a) => {
            let r = c
                .update_tunnel(pb::UpdateTunnelRequest {
                    tunnel: Some(to_pb(&a)?),
                })
                .await?;
            print(r.get_ref());
        }
        TunnelCmd::Get { key } => {
            let (id, name) = key_of(&key);
            print(
                c.get_tunnel(pb::GetTunnelRequest { id, name })
                    .await?
                    .get_ref(),
            );
        }
        TunnelCmd::List { labels: l } => {
            let r = c
                .list_tunnels(pb::ListTunnelsRequest {
                    label_selector: labels(&l)?,
                })
                .await?
                .into_inner();
            if t.json {
                let all: Vec<_> = r.tunnels.iter().map(tunnel_json).collect();
                println!("{}", json!({ "tunnels": all }));
            } else {
                r.tunnels
                    .iter()
                    .for_each(|x| println!("{}", tunnel_line(x)));
            }
        }
        TunnelCmd::Delete { key } => {
            let (id, name) = key_of(&key);
            c.delete_tunnel(pb::DeleteTunnelRequest { id, name })
                .await?;
            if t.json {
                println!("{}", json!({ "deleted": key }));
            } else {
                println!("deleted {key}");
            }
        }
    }
    Ok(())
}

/// Runs a `token` subcommand.
pub async fn token(t: &Target, cmd: TokenCmd) -> Result<(), CliError> {
    let mut c = pb::tokens_client::TokensClient::new(channel(t).await?);
    match cmd {
        TokenCmd::Create {
            name,
            tunnels,
            expires_in,
        } => {
            let expires_at = expires_in.map(|s| prost_types::Timestamp {
                seconds: crate::model::now_s() + s as i64,
                nanos: 0,
            });
            let r = c
                .create_token(pb::CreateTokenRequest {
                    name,
                    tunnels,
                    expires_at,
                })
                .await?
                .into_inner();
            let tok = r.token.unwrap_or_default();
            if t.json {
                println!(
                    "{}",
                    json!({ "token": token_json(&tok), "secret": r.secret })
                );
            } else {
                println!("{}", r.secret);
                eprintln!(
                    "token {} created; the secret above is shown only once",
                    tok.id
                );
            }
        }
        TokenCmd::List => {
            let r = c.list_tokens(pb::ListTokensRequest {}).await?.into_inner();
            if t.json {
                let all: Vec<_> = r.tokens.iter().map(token_json).collect();
                println!("{}", json!({ "tokens": all }));
            } else {
                for k in &r.tokens {
                    let scope = if k.tunnels.is_empty() {
                        "*".to_owned()
                    } else {
                        k.tunnels.join(",")
                    };
                    let exp = k
                        .expires_at
                        .as_ref()
                        .map(|e| e.seconds.to_string())
                        .unwrap_or_else(|| "never".into());
                    println!(
                        "{}  {}  tunnels={scope}  expires={exp}  sha256={}…",
                        k.id, k.name, k.sha256_prefix
                    );
                }
            }
        }
        TokenCmd::Revoke { id } => {
            c.revoke_token(pb::RevokeTokenRequest { id: id.clone() })
                .await?;
            if t.json {
                println!("{}", json!({ "revoked": id }));
            } else {
                println!("revoked {id}");
            }
        }
    }
    Ok(())
}

fn print_stats(s: &pb::StatsSnapshot, as_json: bool, tunnel: Option<&str>) {
    if as_json {
        let cores: Vec<_> = s
            .cores
            .iter()
            .map(|c| {
                json!({
                    "core": c.core, "attached": c.attached, "applied_seq": c.applied_seq,
                    "tunnels": c.tunnels, "tokens": c.tokens, "snapshots": c.snapshots,
                    "connections_total": c.connections_total, "connections_active": c.connections_active,
                    "bytes_downstream_to_upstream": c.bytes_downstream_to_upstream,
                    "bytes_upstream_to_downstream": c.bytes_upstream_to_downstream,
                    "bytes_spliced": c.bytes_spliced, "bytes_copied": c.bytes_copied,
                    "auth_failures": c.auth_failures, "relays_total": c.relays_total, "errors": c.errors,
                })
            })
            .collect();
        let tunnels: Vec<_> = s
            .tunnels
            .iter()
            .filter(|t| tunnel.is_none() || tunnel == Some(t.name.as_str()))
            .map(|t| {
                json!({
                    "name": t.name, "cores_with_route": t.cores_with_route,
                    "relays_total": t.relays_total, "relays_active": t.relays_active,
                    "bytes_downstream_to_upstream": t.bytes_downstream_to_upstream,
                    "bytes_upstream_to_downstream": t.bytes_upstream_to_downstream,
                    "rejected_total": t.rejected_total,
                })
            })
            .collect();
        println!(
            "{}",
            json!({"store_version": s.store_version, "cores": cores, "tunnels": tunnels})
        );
        return;
    }
    println!("store version {}", s.store_version);
    for t in s
        .tunnels
        .iter()
        .filter(|t| tunnel.is_none() || tunnel == Some(t.name.as_str()))
    {
        println!(
            "tunnel {}: on {} cores, relays {} ({} active), bytes up={} down={}, rejected {}",
            t.name,
            t.cores_with_route,
            t.relays_total,
            t.relays_active,
            t.bytes_downstream_to_upstream,
            t.bytes_upstream_to_downstream,
            t.rejected_total
        );
    }
    if tunnel.is_some() {
        return;
    }
    for c in &s.cores {
        println!(
            "core {}: {} seq={} tunnels={} tokens={} conns={}/{} active bytes up={} down={} spliced={} copied={} auth_failures={}",
            c.core,
            if c.attached { "attached" } else { "detached" },
            c.applied_seq,
            c.tunnels,
            c.tokens,
            c.connections_total,
            c.connections_active,
            c.bytes_downstream_to_upstream,
            c.bytes_upstream_to_downstream,
            c.bytes_spliced,
            c.bytes_copied,
            c.auth_failures
        );
    }
}

/// Runs `stats [--tunnel NAME] [--watch]`.
pub async fn stats(
    t: &Target,
    watch: bool,
    interval_ms: u32,
    tunnel: Option<&str>,
) -> Result<(), CliError> {
    let mut c = pb::stats_client::StatsClient::new(channel(t).await?);
    if !watch {
        let s = c.get_stats(pb::GetStatsRequest {}).await?.into_inner();
        print_stats(&s, t.json, tunnel);
        return Ok(());
    }
    let mut stream = c
        .watch_stats(pb::WatchStatsRequest { interval_ms })
        .await?
        .into_inner();
    while let Some(s) = stream.message().await? {
        print_stats(&s, t.json, tunnel);
    }
    Ok(())
}

/// `stats --fleet`: every node of an etcd fleet, as the asked node sees it.
pub async fn fleet(t: &Target) -> Result<(), CliError> {
    let mut c = pb::stats_client::StatsClient::new(channel(t).await?);
    let f = c.get_fleet(pb::GetFleetRequest {}).await?.into_inner();
    if t.json {
        let nodes: Vec<_> = f
            .nodes
            .iter()
            .map(|n| {
                json!({
                    "node": n.node, "grpc": n.grpc, "reachable": n.reachable, "error": n.error,
                    "store_version": n.store_version, "followed_revision": n.followed_revision,
                    "lag": n.lag, "cores": n.cores, "cores_current": n.cores_current,
                    "etcd_connected": n.etcd_connected,
                })
            })
            .collect();
        println!(
            "{}",
            json!({"cluster_revision": f.cluster_revision, "nodes": nodes})
        );
        return Ok(());
    }
    println!(
        "etcd revision {}, {} nodes",
        f.cluster_revision,
        f.nodes.len()
    );
    println!(
        "{:<16} {:<22} {:>10} {:>6} {:>10} {:>7} {:<5}",
        "NODE", "GRPC", "REVISION", "LAG", "TABLES", "CORES", "ETCD"
    );
    for n in &f.nodes {
        if !n.reachable {
            println!("{:<16} {:<22} unreachable: {}", n.node, n.grpc, n.error);
            continue;
        }
        println!(
            "{:<16} {:<22} {:>10} {:>6} {:>10} {:>7} {:<5}",
            n.node,
            n.grpc,
            n.followed_revision,
            n.lag,
            n.store_version,
            format!("{}/{}", n.cores_current, n.cores),
            if n.etcd_connected { "up" } else { "down" }
        );
    }
    Ok(())
}
