//! Stored resources (tunnels, token grants), their validation, and their
//! conversions to the API messages and to ring records.
//!
//! Validation is pure: [`validate_tunnel`] turns an API `Tunnel` into a
//! [`TunnelEntry`] or an [`ApiError::Invalid`] naming the field. Uniqueness
//! (names, hostnames) needs the current state and lives in `hub`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::pb;

/// A tunnel as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelEntry {
    /// Server-assigned id (`tun_…`).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Lower-case hostnames.
    pub hostnames: Vec<String>,
    /// "http" | "httpupgrade".
    pub mode: String,
    /// `host:port`.
    pub upstream: String,
    /// "http/1.1" | "h2c" | "h3".
    pub http_version: String,
    /// Bearer token required.
    pub token_auth: bool,
    /// Allowed client networks (normalized CIDR text); empty = all.
    pub trusted_cidrs: Vec<String>,
    /// Free labels.
    pub labels: BTreeMap<String, String>,
    /// httpupgrade path, with a leading `/`.
    pub path: String,
    /// httpupgrade: close silently on rejection.
    pub stealth: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Store version of the last change (for "routed on every core").
    pub version: u64,
    /// h3 upstreams: how the certificate is checked (absent: system roots).
    #[serde(default)]
    pub upstream_tls: Option<UpstreamTlsEntry>,
}

/// How an h3 upstream's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UpstreamTlsEntry {
    /// PEM of the CAs to trust; empty = the system roots.
    pub ca_pem: String,
    /// Name to verify; empty = the upstream's host.
    pub server_name: String,
    /// Any certificate (tests only).
    pub insecure: bool,
}

/// A token grant as stored: never the secret, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    /// Server-assigned id (`tok_…`).
    pub id: String,
    /// Free-form label.
    pub name: String,
    /// SHA-256 of the secret (hex in the store). Kept inline, not as a
    /// hex `String`: encoding a snapshot reads a million of them, and one
    /// cache miss per token was most of its time.
    #[serde(with = "hex::serde")]
    pub sha256: [u8; 32],
    /// Tunnel names; empty = every tunnel.
    pub tunnels: Vec<String>,
    /// Unix seconds; 0 = never.
    pub expires_at: i64,
    /// Unix seconds.
    pub created_at: i64,
}

/// A plain HTTP tunnel for unit tests.
#[cfg(test)]
pub(crate) fn sample_tunnel(name: &str, hosts: &[&str], version: u64) -> TunnelEntry {
    TunnelEntry {
        id: format!("tun_{name}"),
        name: name.into(),
        hostnames: hosts.iter().map(|h| h.to_string()).collect(),
        mode: "http".into(),
        upstream: "127.0.0.1:9".into(),
        http_version: "http/1.1".into(),
        token_auth: false,
        trusted_cidrs: vec![],
        labels: Default::default(),
        path: "/".into(),
        stealth: false,
        created_at: 1,
        version,
        upstream_tls: None,
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> ApiError {
    ApiError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Checks a tunnel name: 1–63 of `[A-Za-z0-9._-]`.
pub fn valid_name(field: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > 63 {
        return Err(invalid(field, "must be 1 to 63 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(invalid(field, format!("`{name}`: only A-Z a-z 0-9 . _ -")));
    }
    Ok(())
}

fn valid_upstream(s: &str) -> bool {
    if s.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                && port.parse::<u16>().is_ok_and(|p| p != 0)
        }
        None => false,
    }
}

/// Turns an API tunnel into a stored entry (id, created_at and version are
/// filled by the caller).
pub fn validate_tunnel(t: &pb::Tunnel) -> Result<TunnelEntry, ApiError> {
    valid_name("tunnel.name", &t.name)?;
    let mut hostnames = Vec::new();
    for h in &t.hostnames {
        let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
        let ok = !h.is_empty()
            && h.len() <= 253
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !ok {
            return Err(invalid(
                "tunnel.hostnames",
                format!("`{h}` is not a hostname"),
            ));
        }
        if hostnames.contains(&h) {
            return Err(invalid(
                "tunnel.hostnames",
                format!("`{h}` is listed twice"),
            ));
        }
        hostnames.push(h);
    }
    if hostnames.is_empty() {
        return Err(invalid(
            "tunnel.hostnames",
            "at least one hostname is required",
        ));
    }
    if !valid_upstream(&t.upstream) {
        return Err(invalid(
            "tunnel.upstream",
            format!("`{}` is not host:port", t.upstream),
        ));
    }
    let mode = match pb::Mode::try_from(t.mode) {
        Ok(pb::Mode::Unspecified | pb::Mode::Http) => "http",
        Ok(pb::Mode::Httpupgrade) => "httpupgrade",
        Err(_) => return Err(invalid("tunnel.mode", format!("unknown mode {}", t.mode))),
    };
    let http_version = match pb::HttpVersion::try_from(t.http_version) {
        Ok(pb::HttpVersion::Unspecified | pb::HttpVersion::Http1) => "http/1.1",
        Ok(pb::HttpVersion::H2c) => "h2c",
        Ok(pb::HttpVersion::H3) => "h3",
        Err(_) => {
            return Err(invalid(
                "tunnel.http_version",
                format!("unknown http_version {}", t.http_version),
            ))
        }
    };
    let mut trusted_cidrs = Vec::new();
    for c in &t.trusted_cidrs {
        let net = c
            .parse::<ipnet::IpNet>()
            .or_else(|_| c.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| invalid("tunnel.trusted_cidrs", format!("`{c}` is not a CIDR")))?;
        trusted_cidrs.push(net.to_string());
    }
    for (k, v) in &t.labels {
        if k.is_empty() || k.len() > 63 || v.len() > 255 {
            return Err(invalid(
                "tunnel.labels",
                format!("`{k}`: keys 1-63 bytes, values up to 255"),
            ));
        }
    }
    let path = match t.path.as_str() {
        "" => "/".to_owned(),
        p if p.starts_with('/') => p.to_owned(),
        p => format!("/{p}"),
    };
    if path.chars().any(|c| c.is_whitespace() || c == '?') {
        return Err(invalid("tunnel.path", format!("`{path}` is not a path")));
    }
    let upstream_tls = match &t.upstream_tls {
        None => None,
        Some(u) => {
            if http_version != "h3" {
                return Err(invalid(
                    "tunnel.upstream_tls",
                    "only h3 upstreams use TLS (http_version H3)",
                ));
            }
            if u.insecure && (!u.ca_pem.is_empty() || !u.server_name.is_empty()) {
                return Err(invalid(
                    "tunnel.upstream_tls",
                    "`insecure` checks nothing: do not combine it with ca_pem or server_name",
                ));
            }
            if !u.ca_pem.is_empty() && !u.ca_pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(invalid(
                    "tunnel.upstream_tls.ca_pem",
                    "not a PEM certificate",
                ));
            }
            if u.ca_pem.len() > 32 * 1024 || u.server_name.len() > 253 {
                return Err(invalid(
                    "tunnel.upstream_tls",
                    "ca_pem up to 32 KiB, server_name up to 253 bytes",
                ));
            }
            Some(UpstreamTlsEntry {
                ca_pem: u.ca_pem.clone(),
                server_name: u.server_name.clone(),
                insecure: u.insecure,
            })
        }
    };
    Ok(TunnelEntry {
        id: String::new(),
        name: t.name.clone(),
        hostnames,
        mode: mode.into(),
        upstream: t.upstream.clone(),
        http_version: http_version.into(),
        token_auth: t.token_auth,
        trusted_cidrs,
        labels: t.labels.clone().into_iter().collect(),
        path,
        stealth: t.stealth,
        created_at: 0,
        version: 0,
        upstream_tls,
    })
}

fn timestamp(secs: i64) -> Option<prost_types::Timestamp> {
    (secs != 0).then_some(prost_types::Timestamp {
        seconds: secs,
        nanos: 0,
    })
}

impl TunnelEntry {
    /// The API view.
    pub fn to_pb(&self) -> pb::Tunnel {
        pb::Tunnel {
            id: self.id.clone(),
            name: self.name.clone(),
            hostnames: self.hostnames.clone(),
            mode: if self.mode == "httpupgrade" {
                pb::Mode::Httpupgrade
            } else {
                pb::Mode::Http
            } as i32,
            upstream: self.upstream.clone(),
            http_version: match self.http_version.as_str() {
                "h2c" => pb::HttpVersion::H2c,
                "h3" => pb::HttpVersion::H3,
                _ => pb::HttpVersion::Http1,
            } as i32,
            token_auth: self.token_auth,
            trusted_cidrs: self.trusted_cidrs.clone(),
            labels: self.labels.clone().into_iter().collect(),
            path: self.path.clone(),
            stealth: self.stealth,
            created_at: timestamp(self.created_at),
            upstream_tls: self.upstream_tls.as_ref().map(|u| pb::UpstreamTls {
                ca_pem: u.ca_pem.clone(),
                server_name: u.server_name.clone(),
                insecure: u.insecure,
            }),
        }
    }

    /// The ring view.
    pub fn to_rec(&self) -> shmring::TunnelRec {
        shmring::TunnelRec {
            name: self.name.clone(),
            hostnames: self.hostnames.clone(),
            upstream: self.upstream.clone(),
            mode: if self.mode == "httpupgrade" { 2 } else { 1 },
            http_version: match self.http_version.as_str() {
                "h2c" => 2,
                "h3" => 3,
                _ => 1,
            },
            token_auth: self.token_auth,
            stealth: self.stealth,
            path: self.path.clone(),
            trusted_cidrs: self.trusted_cidrs.clone(),
            upstream_ca_pem: self
                .upstream_tls
                .as_ref()
                .map(|u| u.ca_pem.clone())
                .unwrap_or_default(),
            upstream_server_name: self
                .upstream_tls
                .as_ref()
                .map(|u| u.server_name.clone())
                .unwrap_or_default(),
            upstream_insecure: self.upstream_tls.as_ref().is_some_and(|u| u.insecure),
        }
    }
}

impl TokenEntry {
    /// The API view (no secret: it is not kept).
    pub fn to_pb(&self) -> pb::Token {
        pb::Token {
            id: self.id.clone(),
            name: self.name.clone(),
            tunnels: self.tunnels.clone(),
            expires_at: timestamp(self.expires_at),
            created_at: timestamp(self.created_at),
            sha256_prefix: hex::encode(&self.sha256[..4]),
        }
    }

    /// The ring view.
    pub fn to_rec(&self) -> shmring::TokenRec {
        shmring::TokenRec {
            digest: self.sha256,
            expires_unix_s: self.expires_at.max(0) as u64,
            tunnels: self.tunnels.clone(),
        }
    }
}

/// Current Unix time in seconds.
pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Current Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A random id with a prefix, e.g. `tun_5f2c…`.
pub fn new_id(prefix: &str) -> String {
    let b: [u8; 8] = rand::random();
    format!("{prefix}_{}", hex::encode(b))
}

/// A fresh token secret (256 random bits, URL-safe) and its SHA-256 hex.
pub fn new_secret() -> (String, [u8; 32]) {
    use base64::Engine;
    use sha2::Digest;
    let b: [u8; 32] = rand::random();
    let secret = format!(
        "sy_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    );
    let digest = sha2::Sha256::digest(secret.as_bytes()).into();
    (secret, digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> pb::Tunnel {
        pb::Tunnel {
            name: "chat".into(),
            hostnames: vec!["Chat.Test.".into()],
            upstream: "127.0.0.1:9000".into(),
            trusted_cidrs: vec!["10.0.0.1".into()],
            path: "ray".into(),
            ..Default::default()
        }
    }

    #[test]
    fn normalizes() {
        let e = validate_tunnel(&good()).unwrap();
        assert_eq!(e.hostnames, ["chat.test"]);
        assert_eq!(e.trusted_cidrs, ["10.0.0.1/32"]);
        assert_eq!(e.path, "/ray");
        assert_eq!(e.mode, "http");
    }

    #[test]
    fn errors_name_the_field() {
        let cases: Vec<(fn(&mut pb::Tunnel), &str)> = vec![
            (|t| t.name = "".into(), "tunnel.name"),
            (|t| t.name = "a b".into(), "tunnel.name"),
            (|t| t.hostnames = vec!["a/b".into()], "tunnel.hostnames"),
            (|t| t.hostnames.clear(), "tunnel.hostnames"),
            (|t| t.upstream = "nope".into(), "tunnel.upstream"),
            (|t| t.mode = 9, "tunnel.mode"),
            (|t| t.http_version = 9, "tunnel.http_version"),
            (
                |t| {
                    t.upstream_tls = Some(pb::UpstreamTls {
                        server_name: "o.internal".into(),
                        ..Default::default()
                    })
                },
                "tunnel.upstream_tls",
            ),
            (
                |t| t.trusted_cidrs = vec!["10.0.0.0/99".into()],
                "tunnel.trusted_cidrs",
            ),
        ];
        for (f, field) in cases {
            let mut t = good();
            f(&mut t);
            let e = validate_tunnel(&t).unwrap_err().to_string();
            assert!(e.starts_with(field), "{e} should name {field}");
        }
    }

    #[test]
    fn secrets_hash() {
        let (s, d) = new_secret();
        assert!(s.starts_with("sy_") && s.len() > 40);
        use sha2::Digest;
        assert_eq!(d, <[u8; 32]>::from(sha2::Sha256::digest(s.as_bytes())));
    }
}
