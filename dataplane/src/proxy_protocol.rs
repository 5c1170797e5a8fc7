//! PROXY protocol v1/v2 header (HAProxy's spec), sans-IO.
//!
//! When a listener has `proxy_protocol = true` the header is required and is
//! read before TLS. [`parse`] is fed the bytes received so far and says whether
//! more are needed; parsing itself is the `ppp` crate's. Bytes after the header
//! belong to the next stage and are handed back by the caller, never dropped.

use std::net::SocketAddr;

/// The largest header we wait for: v2 fixed part plus the largest address
/// block we accept (v1 is at most 107 bytes).
pub const MAX_HEADER: usize = 16 + 536;

/// Outcome of feeding bytes to [`parse`].
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not enough bytes yet.
    Incomplete,
    /// A whole header of `len` bytes. `source` is the client address, or `None`
    /// for `LOCAL` / `UNKNOWN` (health checks): then the socket peer is used.
    Complete {
        /// Header length in bytes.
        len: usize,
        /// Original client address.
        source: Option<SocketAddr>,
    },
}

/// Why a PROXY header was refused (the connection is closed).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyHeaderError {
    /// Not a PROXY header at all.
    #[error("missing PROXY protocol header")]
    Missing,
    /// Starts like one but is malformed.
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(String),
    /// Longer than [`MAX_HEADER`].
    #[error("PROXY protocol header too long")]
    TooLong,
}

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Parses a PROXY v1 or v2 header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    if buf.is_empty() {
        return Ok(Parsed::Incomplete);
    }
    let n = buf.len().min(12);
    let v2 = buf[..n] == V2_SIGNATURE[..n];
    let v1 = buf[..buf.len().min(6)] == b"PROXY "[..buf.len().min(6)];
    if !v1 && !v2 {
        return Err(ProxyHeaderError::Missing);
    }
    if v2 {
        if buf.len() < 16 {
            return Ok(Parsed::Incomplete);
        }
        let len = 16 + u16::from_be_bytes([buf[14], buf[15]]) as usize;
        if len > MAX_HEADER {
            return Err(ProxyHeaderError::TooLong);
        }
        if buf.len() < len {
            return Ok(Parsed::Incomplete);
        }
        let h = ppp::v2::Header::try_from(&buf[..len])
            .map_err(|e| ProxyHeaderError::Invalid(e.to_string()))?;
        let source = match (h.command, h.addresses) {
            (ppp::v2::Command::Local, _) => None,
            (_, ppp::v2::Addresses::IPv4(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            (_, ppp::v2::Addresses::IPv6(a)) => {
                Some(SocketAddr::from((a.source_address, a.source_port)))
            }
            _ => None,
        };
        return Ok(Parsed::Complete { len, source });
    }
    let Some(cr) = buf.iter().position(|&b| b == b'\r') else {
        return if buf.len() >= 107 {
            Err(ProxyHeaderError::TooLong)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    if buf.len() < cr + 2 {
        return Ok(Parsed::Incomplete);
    }
    let h = ppp::v1::Header::try_from(&buf[..cr + 2])
        .map_err(|e| ProxyHeaderError::Invalid(e.to_string()))?;
    let source = match h.addresses {
        ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Unknown => None,
    };
    Ok(Parsed::Complete {
        len: cr + 2,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_tcp4_in_pieces() {
        let h = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET /";
        let end = h.len() - 5;
        for i in 0..end {
            assert_eq!(parse(&h[..i]), Ok(Parsed::Incomplete), "prefix {i}");
        }
        assert_eq!(
            parse(h),
            Ok(Parsed::Complete {
                len: end,
                source: Some("192.0.2.7:56324".parse().unwrap())
            })
        );
    }

    #[test]
    fn v1_unknown_and_v6() {
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Parsed::Complete {
                len: 15,
                source: None
            })
        );
        assert_eq!(
            parse(b"PROXY TCP6 2001:db8::1 ::1 1000 443\r\n").unwrap(),
            Parsed::Complete {
                len: 37,
                source: Some("[2001:db8::1]:1000".parse().unwrap())
            }
        );
    }

    #[test]
    fn v2_ipv4_and_local() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[
            0x21, 0x11, 0, 12, 10, 0, 0, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb,
        ]);
        let total = h.len();
        h.extend_from_slice(b"\x16\x03\x01");
        for i in 0..total {
            assert_eq!(parse(&h[..i]), Ok(Parsed::Incomplete));
        }
        assert_eq!(
            parse(&h),
            Ok(Parsed::Complete {
                len: total,
                source: Some("10.0.0.9:8080".parse().unwrap())
            })
        );
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(
            parse(&local),
            Ok(Parsed::Complete {
                len: 16,
                source: None
            })
        );
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyHeaderError::Missing));
        assert!(matches!(
            parse(b"PROXY TCP4 x y 1 2\r\n"),
            Err(ProxyHeaderError::Invalid(_))
        ));
        assert_eq!(
            parse(&[b'P', b'R', b'O', b'X', b'Y', b' '].repeat(20)),
            Err(ProxyHeaderError::TooLong)
        );
        let mut big = V2_SIGNATURE.to_vec();
        big.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&big), Err(ProxyHeaderError::TooLong));
    }
}
