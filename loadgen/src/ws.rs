//! Minimal RFC 6455 client pieces for load generation: the opening handshake
//! and binary frames (client frames masked, server frames unmasked).
//!
//! Written by hand because the generator must not allocate per message or
//! add a runtime adapter on its hot path; the full protocol (fragmentation,
//! control frames from the client side) is not needed to measure echo
//! latency. The interop tests use real clients (tungstenite, `websockets`).

use base64::Engine;
use sha1::{Digest, Sha1};

/// RFC 6455 §1.3 GUID.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a key.
pub fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// Builds an opening handshake; returns the request and the expected accept.
pub fn handshake(host: &str, path: &str, extra: &[(String, String)]) -> (Vec<u8>, String) {
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    (req.into_bytes(), accept_key(&key))
}

/// Appends a masked binary frame carrying `payload` to `out`.
pub fn encode_client_frame(payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    out.push(0x82);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// The echo of one client frame (`payload` as received, unmasked here with
/// `mask`), as a server frame appended to `out`: a data or continuation frame keeps its FIN bit
/// and opcode, so a fragmented message comes back fragmented and whole; a
/// ping is answered with a pong; a pong gets nothing; a close is echoed.
pub fn echo_frame(first: u8, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    let opcode = first & 0x0f;
    let first = match opcode {
        0x9 => 0x8a,
        0xa => return,
        _ => first & 0x8f,
    };
    out.push(first);
    let n = payload.len();
    if n < 126 {
        out.push(n as u8);
    } else if n <= u16::MAX as usize {
        out.push(126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// Parses a server frame header at the start of `buf`: `(header_len,
/// payload_len, opcode)`, or `None` if incomplete.
pub fn decode_server_header(buf: &[u8]) -> Option<(usize, usize, u8)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut hl) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => {
            let b: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    if masked {
        hl += 4;
    }
    if buf.len() < hl {
        return None;
    }
    Some((hl, len, opcode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6455_example_accept() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn echo_keeps_fragments_and_answers_pings() {
        // A message in three fragments: binary (no FIN), continuation (no
        // FIN), continuation (FIN); comes back the same, unmasked.
        let mut out = Vec::new();
        for (first, part) in [(0x02u8, &b"he"[..]), (0x00, b"ll"), (0x80, b"o")] {
            echo_frame(first, part, [0; 4], &mut out);
        }
        assert_eq!(out, b"\x02\x02he\x00\x02ll\x80\x01o");
        let mut out = Vec::new();
        echo_frame(0x89, b"p", [0; 4], &mut out);
        assert_eq!(out, b"\x8a\x01p");
        let mut out = Vec::new();
        echo_frame(0x8a, b"p", [0; 4], &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn frames_round_trip_lengths() {
        for n in [0usize, 1, 125, 126, 65535, 65536, 100_000] {
            let payload = vec![7u8; n];
            let mut out = Vec::new();
            encode_client_frame(&payload, [1, 2, 3, 4], &mut out);
            let (hl, len, op) = decode_server_header(&out).unwrap();
            assert_eq!((len, op), (n, 2));
            assert_eq!(out.len(), hl + n);
            assert_eq!(
                out[hl..]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ [1, 2, 3, 4][i & 3])
                    .collect::<Vec<_>>(),
                payload
            );
        }
    }
}
