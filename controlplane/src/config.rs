//! The `[control]` section of the shared configuration file (DESIGN §8).
//!
//! The data plane and the control plane read the same TOML file; this side
//! reads only `[control]` and `edge.cores` and ignores the rest, so that one
//! file drives `controlplane up`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::error::StartError;

/// Default ring size per core: room for ~50k token records in flight.
pub const DEFAULT_RING_BYTES: u64 = 4 << 20;

/// Where tunnels and tokens live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// One node: the embedded redb file.
    File(PathBuf),
    /// A fleet: etcd under a key prefix (`etcd://host:port[,host:port]/prefix`).
    Etcd(EtcdConfig),
}

/// `control.store = "etcd://…"` and `[control.etcd]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `host:port` of each member.
    pub endpoints: Vec<String>,
    /// Key prefix without a trailing slash, e.g. `/switchyard`.
    pub prefix: String,
    /// This node's name in the fleet (`control.node`, default: the host name).
    pub node: String,
    /// The gRPC address other nodes reach this one at (`control.advertise`,
    /// default: `control.grpc`).
    pub advertise: String,
    /// Local copy of the tables, served when etcd is down at start
    /// (`control.cache`).
    pub cache: PathBuf,
    /// `[control.etcd] user` and the file holding its password.
    pub user: Option<(String, PathBuf)>,
    /// `[control.etcd] ca`: PEM of the CAs that sign the members' certificates
    /// (TLS toward etcd when set).
    pub ca: Option<PathBuf>,
    /// `[control.etcd] cert` and `key`: client certificate (mutual TLS).
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl StoreConfig {
    /// For logs: the file, or the etcd endpoints and prefix.
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::File(p) => p.display().to_string(),
            StoreConfig::Etcd(e) => format!("etcd://{}{}", e.endpoints.join(","), e.prefix),
        }
    }
}

/// What the control plane needs from the file.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// gRPC listen address.
    pub grpc: SocketAddr,
    /// The store.
    pub store: StoreConfig,
    /// Shared-memory file.
    pub shm: PathBuf,
    /// Admin token file (created if missing).
    pub admin_token_file: PathBuf,
    /// Ring data bytes per core.
    pub ring_bytes: u64,
    /// Data-plane cores (rings to create).
    pub cores: u32,
}

fn bad(field: &str, why: impl std::fmt::Display) -> StartError {
    StartError::Config(format!("field `{field}`: {why}"))
}

impl ControlConfig {
    /// Reads the file.
    pub fn load(path: &Path) -> Result<ControlConfig, StartError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| StartError::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text)
    }

    /// Parses configuration text.
    pub fn parse(text: &str) -> Result<ControlConfig, StartError> {
        let doc: toml::Table = toml::from_str(text)
            .map_err(|e| StartError::Config(e.to_string().trim_end().replace('\n', " | ")))?;
        let empty = toml::Table::new();
        let control = match doc.get("control") {
            Some(toml::Value::Table(t)) => t,
            Some(_) => return Err(bad("control", "must be a table")),
            None => &empty,
        };
        let string = |k: &str, default: &str| -> Result<String, StartError> {
            match control.get(k) {
                None => Ok(default.to_owned()),
                Some(toml::Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(bad(&format!("control.{k}"), "must be a string")),
            }
        };
        let grpc_text = string("grpc", "127.0.0.1:50051")?;
        let grpc = grpc_text.parse().map_err(|e| {
            bad(
                "control.grpc",
                format!("`{grpc_text}` is not ip:port ({e})"),
            )
        })?;
        let ring_bytes = match control.get("ring_bytes") {
            None => DEFAULT_RING_BYTES,
            Some(toml::Value::Integer(n)) if *n > 0 => *n as u64,
            Some(_) => return Err(bad("control.ring_bytes", "must be a positive integer")),
        };
        if shmring::layout::Layout::new(1, ring_bytes).is_none() {
            return Err(bad(
                "control.ring_bytes",
                "must be a multiple of 4096 between 4096 and 1 GiB",
            ));
        }
        let cores = match doc
            .get("edge")
            .and_then(|e| e.as_table())
            .and_then(|e| e.get("cores"))
        {
            None => 0,
            Some(toml::Value::Integer(n)) if *n >= 0 => *n as u32,
            Some(_) => return Err(bad("edge.cores", "must be a non-negative integer")),
        };
        let cores = match cores {
            0 => std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            n => n,
        };
        let store_text = string("store", "var/switchyard.db")?;
        let store = match store_text.strip_prefix("etcd://") {
            None => StoreConfig::File(store_text.into()),
            Some(rest) => StoreConfig::Etcd(etcd_config(rest, control, &grpc_text)?),
        };
        Ok(ControlConfig {
            grpc,
            store,
            shm: string("shm", "/dev/shm/switchyard")?.into(),
            admin_token_file: string("admin_token_file", "var/admin.token")?.into(),
            ring_bytes,
            cores,
        })
    }
}

/// `host:port[,host:port…]/prefix` plus the fleet keys of `[control]`.
fn etcd_config(rest: &str, control: &toml::Table, grpc: &str) -> Result<EtcdConfig, StartError> {
    let (hosts, prefix) = rest.split_once('/').unwrap_or((rest, "switchyard"));
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() || prefix.contains("//") {
        return Err(bad(
            "control.store",
            "etcd://host:port[,host:port]/prefix needs a prefix (e.g. /switchyard)",
        ));
    }
    let mut endpoints = Vec::new();
    for h in hosts.split(',') {
        let ok = h
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            return Err(bad(
                "control.store",
                format!("`{h}` is not host:port (etcd://host:port[,host:port]/prefix)"),
            ));
        }
        endpoints.push(h.to_owned());
    }
    let string = |t: &toml::Table, k: &str, field: &str| -> Result<Option<String>, StartError> {
        match t.get(k) {
            None => Ok(None),
            Some(toml::Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(bad(field, "must be a non-empty string")),
        }
    };
    let node = match string(control, "node", "control.node")? {
        Some(n) => n,
        None => hostname(),
    };
    if !node
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(bad(
            "control.node",
            "letters, digits, `-`, `_` and `.` only",
        ));
    }
    let empty = toml::Table::new();
    let etcd = match control.get("etcd") {
        None => &empty,
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err(bad("control.etcd", "must be a table")),
    };
    let user = match (
        string(etcd, "user", "control.etcd.user")?,
        string(etcd, "password_file", "control.etcd.password_file")?,
    ) {
        (None, None) => None,
        (Some(u), Some(p)) => Some((u, p.into())),
        _ => {
            return Err(bad(
                "control.etcd",
                "`user` and `password_file` go together",
            ))
        }
    };
    let identity = match (
        string(etcd, "cert", "control.etcd.cert")?,
        string(etcd, "key", "control.etcd.key")?,
    ) {
        (None, None) => None,
        (Some(c), Some(k)) => Some((c.into(), k.into())),
        _ => return Err(bad("control.etcd", "`cert` and `key` go together")),
    };
    let ca = string(etcd, "ca", "control.etcd.ca")?.map(PathBuf::from);
    if identity.is_some() && ca.is_none() {
        return Err(bad("control.etcd", "`cert` needs `ca` (TLS toward etcd)"));
    }
    let advertise =
        string(control, "advertise", "control.advertise")?.unwrap_or_else(|| grpc.to_owned());
    // Other nodes dial it (`stats --fleet`): a wildcard address reaches
    // nobody.
    if advertise
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_unspecified())
    {
        return Err(bad(
            "control.advertise",
            format!(
                "`{advertise}` is not an address other nodes can reach \
                 (control.grpc listens on a wildcard: set control.advertise to this node's host:port)"
            ),
        ));
    }
    Ok(EtcdConfig {
        endpoints,
        prefix: format!("/{}", prefix.trim_start_matches('/')),
        advertise,
        cache: string(control, "cache", "control.cache")?
            .unwrap_or_else(|| format!("var/{node}-cache.db"))
            .into(),
        node,
        user,
        ca,
        identity,
    })
}

/// The kernel's host name (`/proc/sys/kernel/hostname`), else `node`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned())
}

/// The admin token: `SWITCHYARD_ADMIN_TOKEN`, else the file, else a fresh
/// one written to the file (mode 0600) and printed once on stdout.
pub fn admin_token(file: &Path) -> Result<String, StartError> {
    if let Ok(t) = std::env::var("SWITCHYARD_ADMIN_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_owned());
        }
    }
    match std::fs::read_to_string(file) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bad("control.admin_token_file", e)),
    }
    use base64::Engine;
    let b: [u8; 32] = rand::random();
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    if let Some(dir) = file.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| bad("control.admin_token_file", e))?;
        }
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| bad("control.admin_token_file", e))?;
    writeln!(f, "{token}").map_err(|e| bad("control.admin_token_file", e))?;
    println!(
        "generated admin token (saved to {}): {token}",
        file.display()
    );
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors() {
        let c = ControlConfig::parse("[edge]\ncores = 2\n").unwrap();
        assert_eq!(c.cores, 2);
        assert_eq!(c.grpc.to_string(), "127.0.0.1:50051");
        assert_eq!(c.ring_bytes, DEFAULT_RING_BYTES);
        for (text, field) in [
            ("[control]\ngrpc = \"x\"\n", "control.grpc"),
            ("[control]\nring_bytes = 100\n", "control.ring_bytes"),
            ("[edge]\ncores = -1\n", "edge.cores"),
        ] {
            let e = ControlConfig::parse(text).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }

    #[test]
    fn etcd_store() {
        let c = ControlConfig::parse(
            "[control]\nstore = \"etcd://127.0.0.1:2379,[::1]:2380/fleet/\"\nnode = \"edge-a\"\n",
        )
        .unwrap();
        let StoreConfig::Etcd(e) = c.store else {
            panic!("not etcd")
        };
        assert_eq!(e.endpoints, ["127.0.0.1:2379", "[::1]:2380"]);
        assert_eq!(e.prefix, "/fleet");
        assert_eq!(e.node, "edge-a");
        assert_eq!(e.advertise, "127.0.0.1:50051");
        assert_eq!(e.cache, PathBuf::from("var/edge-a-cache.db"));
        for (text, field) in [
            ("store = \"etcd://x/p\"", "control.store"),
            ("store = \"etcd://h:1/\"", "control.store"),
            ("store = \"etcd://h:1/p\"\nnode = \"a b\"", "control.node"),
            (
                "store = \"etcd://h:1/p\"\n[control.etcd]\nuser = \"u\"",
                "control.etcd",
            ),
            (
                "store = \"etcd://h:1/p\"\ngrpc = \"0.0.0.0:50051\"",
                "control.advertise",
            ),
        ] {
            let e = ControlConfig::parse(&format!("[control]\n{text}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
    }
}
