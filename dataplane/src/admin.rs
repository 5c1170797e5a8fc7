//! Read-only admin endpoint: `GET /stats` → per-core (and per-tunnel)
//! counters as JSON; `GET /metrics` → the same in the Prometheus text format.
//!
//! Off the data path: plain threads with blocking std sockets (like Envoy's
//! admin listener, it is for operators and tests, not for traffic). Each
//! connection gets its own short-lived thread, so a client that connects and
//! says nothing holds only its own thread until the read timeout, never the
//! next operator's `/stats`; at most [`MAX_CONNECTIONS`] are served at once
//! (more are closed at once). It only reads the cores' counters; it never
//! touches a core's state.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::stats::{self, CoreStats};

/// Admin connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long one admin client may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves the admin endpoint on `addr` in a background thread.
pub fn spawn(addr: SocketAddr, cores: Vec<(usize, Arc<CoreStats>)>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    tracing::info!(%addr, "admin endpoint: GET /stats, GET /metrics");
    let cores = Arc::new(cores);
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                    tracing::warn!(
                        "admin: {MAX_CONNECTIONS} connections in progress; closing a new one"
                    );
                    continue;
                }
                active.fetch_add(1, Ordering::Relaxed);
                let (cores, done) = (cores.clone(), active.clone());
                let spawned =
                    std::thread::Builder::new()
                        .name("admin-conn".into())
                        .spawn(move || {
                            answer(conn, &cores);
                            done.fetch_sub(1, Ordering::Relaxed);
                        });
                if let Err(e) = spawned {
                    active.fetch_sub(1, Ordering::Relaxed);
                    tracing::warn!("admin: cannot start a connection thread: {e}");
                }
            }
        })?;
    Ok(())
}

fn answer(mut conn: TcpStream, cores: &[(usize, Arc<CoreStats>)]) {
    let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
    let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
    // The request line may come in more than one segment (a shell health
    // check writes it in pieces): read until the head ends, the buffer is
    // full, or the time is up.
    // IO_TIMEOUT bounds the whole request, not each read.
    let mut buf = [0u8; 2048];
    let mut n = 0;
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || conn.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match conn.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    if n == 0 {
        return;
    }
    const JSON: &str = "application/json";
    let (status, kind, body) = if buf[..n].starts_with(b"GET /stats") {
        ("200 OK", JSON, stats::to_json(cores))
    } else if buf[..n].starts_with(b"GET /metrics") {
        ("200 OK", "text/plain; version=0.0.4; charset=utf-8", stats::to_prometheus(cores))
    } else {
        ("404 Not Found", JSON, "{\"error\":\"try GET /stats or GET /metrics\"}".to_string())
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
