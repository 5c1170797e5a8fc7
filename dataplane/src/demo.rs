//! `dataplane demo`: a working edge with example origins, no set-up needed.
//!
//! Starts a WebSocket echo origin (tungstenite, one thread per connection:
//! it is an example upstream, not part of the data path) and a raw TCP echo
//! origin, writes a self-signed certificate if missing, then runs the edge
//! with `examples/demo.toml`.

use std::net::{TcpListener, TcpStream};
use std::path::Path;

/// WebSocket echo origin: echoes every text/binary message.
pub fn spawn_ws_echo(addr: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    std::thread::Builder::new()
        .name("ws-echo".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || ws_echo(stream));
            }
        })?;
    Ok(())
}

fn ws_echo(stream: TcpStream) {
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    while let Ok(msg) = ws.read() {
        match msg {
            m @ (tungstenite::Message::Text(_) | tungstenite::Message::Binary(_)) => {
                if ws.send(m).is_err() {
                    break;
                }
            }
            tungstenite::Message::Close(_) => break,
            _ => {}
        }
    }
}

/// Raw TCP echo origin (the HTTPUpgrade tunnel's upstream).
pub fn spawn_tcp_echo(addr: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    std::thread::Builder::new()
        .name("tcp-echo".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let Ok(mut r) = stream.try_clone() else {
                        return;
                    };
                    let mut w = stream;
                    let _ = std::io::copy(&mut r, &mut w);
                    let _ = w.shutdown(std::net::Shutdown::Write);
                });
            }
        })?;
    Ok(())
}

/// Starts the origins and returns the demo config path, creating the
/// certificate first.
pub fn prepare(config: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let cert = Path::new("var/demo/edge.pem");
    let key = Path::new("var/demo/edge.key");
    if !cert.exists() || !key.exists() {
        crate::tls::write_self_signed(
            &[
                "localhost",
                "echo.localhost",
                "raw.localhost",
                "private.localhost",
            ],
            cert,
            key,
        )?;
    }
    if !config.exists() {
        return Err(format!(
            "{} not found: run the demo from the repository root",
            config.display()
        )
        .into());
    }
    spawn_ws_echo("127.0.0.1:9001")?;
    spawn_tcp_echo("127.0.0.1:9002")?;
    tracing::info!("demo origins: WebSocket echo 127.0.0.1:9001, TCP echo 127.0.0.1:9002");
    Ok(())
}
