//! The Xray-compatible HTTPUpgrade dialer, sans-IO (DESIGN §6).
//!
//! * [`request`] builds the request head: header names byte-exact as given
//!   (no canonicalisation), Host = configured host, else SNI, else address.
//! * [`ResponseReader`] parses the answer the way Xray's `ConnRF` does: the
//!   status must be exactly `101 Switching Protocols`, `Upgrade: websocket`
//!   and `Connection: upgrade` (case-insensitive); bytes that arrived after
//!   the head in the same read are handed back, never lost, whatever the
//!   read size.
//! * `ed` mode: the caller sends payload right after the head without waiting
//!   for the 101, then feeds every read to the reader until it completes.

/// Why the upstream's answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// Not an HTTP response head.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// A head, but not the exact upgrade answer.
    #[error("unrecognized reply: {0}")]
    Unrecognized(String),
    /// Head larger than the limit.
    #[error("response head too large")]
    TooLarge,
}

/// Settings of the dialer.
#[derive(Debug, Clone, Default)]
pub struct DialConfig {
    /// Host header; empty = SNI, else the address.
    pub host: String,
    /// Path (a leading `/` is added).
    pub path: String,
    /// Extra headers, names sent exactly as written.
    pub headers: Vec<(String, String)>,
}

/// Builds the request head.
pub fn request(cfg: &DialConfig, sni: Option<&str>, addr: &str) -> Vec<u8> {
    let host = if !cfg.host.is_empty() {
        cfg.host.as_str()
    } else {
        sni.unwrap_or(addr)
    };
    let path = if cfg.path.starts_with('/') {
        cfg.path.clone()
    } else {
        format!("/{}", cfg.path)
    };
    let mut out = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    );
    for (k, v) in &cfg.headers {
        out.push_str(k);
        out.push_str(": ");
        out.push_str(v);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

const MAX_HEAD: usize = 8192;

/// Incremental reader of the upgrade answer.
#[derive(Debug, Default)]
pub struct ResponseReader {
    buf: Vec<u8>,
}

impl ResponseReader {
    /// Feeds bytes from one read. Returns `Ok(Some(rest))` once the answer is
    /// accepted (`rest` = bytes after the head), `Ok(None)` if more are needed.
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<Vec<u8>>, DialError> {
        self.buf.extend_from_slice(data);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if self.buf.len() > MAX_HEAD => {
                return Err(DialError::TooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(DialError::Malformed(e.to_string())),
        };
        let status = format!("{} {}", resp.code.unwrap_or(0), resp.reason.unwrap_or(""));
        let first = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
                .unwrap_or_default()
        };
        if status != "101 Switching Protocols"
            || first("upgrade") != "websocket"
            || first("connection") != "upgrade"
        {
            return Err(DialError::Unrecognized(status));
        }
        Ok(Some(self.buf.split_off(len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";

    #[test]
    fn request_keeps_header_case_and_picks_host() {
        let cfg = DialConfig {
            host: String::new(),
            path: "ray".into(),
            headers: vec![("X-WebSocket-Exact".into(), "1".into())],
        };
        let r = String::from_utf8(request(&cfg, Some("sni.example"), "1.2.3.4:443")).unwrap();
        assert_eq!(
            r,
            "GET /ray HTTP/1.1\r\nHost: sni.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-WebSocket-Exact: 1\r\n\r\n"
        );
        let r = String::from_utf8(request(&cfg, None, "1.2.3.4:443")).unwrap();
        assert!(r.contains("Host: 1.2.3.4:443\r\n"));
        let cfg = DialConfig {
            host: "h.example".into(),
            ..cfg
        };
        assert!(String::from_utf8(request(&cfg, Some("sni"), "a"))
            .unwrap()
            .contains("Host: h.example\r\n"));
    }

    /// The 101 and server data arrive together; whatever the read size, the
    /// data after the head comes out exactly once and in order.
    #[test]
    fn same_read_101_and_data_for_every_buffer_size() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut wire = OK.to_vec();
        wire.extend_from_slice(&data);
        for size in 1..=wire.len() + 1 {
            let mut r = ResponseReader::default();
            let mut got = Vec::new();
            let mut done = false;
            for chunk in wire.chunks(size) {
                if done {
                    got.extend_from_slice(chunk);
                } else if let Some(rest) = r.feed(chunk).unwrap() {
                    got.extend_from_slice(&rest);
                    done = true;
                }
            }
            assert!(done, "size {size}");
            assert_eq!(got, data, "size {size}");
        }
    }

    #[test]
    fn ed_mode_payload_goes_right_after_the_head() {
        let cfg = DialConfig {
            path: "/".into(),
            ..Default::default()
        };
        let mut first_write = request(&cfg, None, "a:1");
        let head_len = first_write.len();
        first_write.extend_from_slice(b"early payload");
        assert!(first_write[..head_len].ends_with(b"\r\n\r\n"));
        assert_eq!(&first_write[head_len..], b"early payload");
    }

    #[test]
    fn refuses_anything_but_the_exact_answer() {
        for bad in [
            &b"HTTP/1.1 101 Switching protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
        ] {
            assert!(matches!(ResponseReader::default().feed(bad), Err(DialError::Unrecognized(_))));
        }
        assert!(matches!(
            ResponseReader::default().feed(b"SSH-2.0\r\n\r\n"),
            Err(DialError::Malformed(_))
        ));
        let upper = b"HTTP/1.1 101 Switching Protocols\r\nCONNECTION: UPGRADE\r\nupgrade: WebSocket\r\n\r\n";
        assert_eq!(ResponseReader::default().feed(upper), Ok(Some(Vec::new())));
    }
}
