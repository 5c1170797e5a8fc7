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

/// What the control plane needs from the file.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// gRPC listen address.
    pub grpc: SocketAddr,
    /// redb file.
    pub store: PathBuf,
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
        Ok(ControlConfig {
            grpc,
            store: string("store", "var/switchyard.db")?.into(),
            shm: string("shm", "/dev/shm/switchyard")?.into(),
            admin_token_file: string("admin_token_file", "var/admin.token")?.into(),
            ring_bytes,
            cores,
        })
    }
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
}
