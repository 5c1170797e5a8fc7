//! Read-only admin endpoint: `GET /stats` → per-core counters as JSON.
//!
//! Off the data path: one plain thread with blocking std sockets (like
//! Envoy's admin listener, it is for operators and tests, not for traffic).
//! It only reads the cores' counters; it never touches a core's state.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use crate::stats::{self, CoreStats};

/// Serves the admin endpoint on `addr` in a background thread.
pub fn spawn(addr: SocketAddr, cores: Vec<(usize, Arc<CoreStats>)>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    tracing::info!(%addr, "admin endpoint: GET /stats");
    std::thread::Builder::new().name("admin".into()).spawn(move || {
        for conn in listener.incoming().flatten() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut conn = conn;
            let mut buf = [0u8; 2048];
            let n = conn.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if req.starts_with("GET /stats") {
                ("200 OK", stats::to_json(&cores))
            } else {
                ("404 Not Found", "{\"error\":\"try GET /stats\"}".to_string())
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    })?;
    Ok(())
}
