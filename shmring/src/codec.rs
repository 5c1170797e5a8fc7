//! Ring records: a sans-IO encoder and decoder.
//!
//! A record travels through a ring as one frame: `u32` body length (LE),
//! then the body. The body is
//!
//! ```text
//! kind: u8 | seq: u64 LE | fields of the kind
//!   1 SnapshotBegin  generation: u64, tunnels: u64, tokens: u64   (counts to come: capacity hints)
//!   2 SnapshotEnd    tunnels: u64, tokens: u64         (counts, checked by the core)
//!   3 TunnelUpsert   TunnelRec
//!   4 TunnelDelete   name: str
//!   5 TokenUpsert    TokenRec
//!   6 TokenRevoke    digest: [u8; 32]
//!   7 Rebase         from: u64                         (no table change: the store moved from `from` to `seq`)
//! str  = u16 LE length + UTF-8 bytes      list = u16 LE count + items
//! TunnelRec = name str, hostnames list<str>, upstream str, mode u8 (1 http, 2 httpupgrade),
//!             http_version u8 (1 http/1.1, 2 h2c, 3 h3), flags u8 (bit 0 token_auth,
//!             bit 1 stealth, bit 2 upstream TLS insecure), path str, trusted_cidrs list<str>,
//!             upstream_ca_pem str (empty = system roots), upstream_server_name str (empty = host)
//! TokenRec  = digest [u8; 32] (SHA-256 of the secret), expires_unix_s u64 (0 = never),
//!             tunnels list<str> (empty = every tunnel)
//! ```
//!
//! Sequence numbers: a delta carries the store version it produces, so the
//! deltas a core sees are consecutive (`applied + 1`); records inside a
//! snapshot carry the snapshot's version. A store whose versions have gaps
//! (etcd: revisions also count writes outside the tables) says so with a
//! `Rebase` from the core's version to the one before the next delta, so a
//! lost record is still told from a gap by design. Token secrets never
//! appear here: only their SHA-256 digests.

/// Largest body the decoder accepts (and the encoder produces).
pub const MAX_RECORD: usize = 64 * 1024;

/// One record with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Store version this record belongs to.
    pub seq: u64,
    /// What it says.
    pub body: Body,
}

/// The kinds of record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A full table follows; the core builds it aside.
    SnapshotBegin {
        /// Region generation of the producer that sent it.
        generation: u64,
        /// Tunnels the snapshot will carry (lets the core size its table once).
        tunnels: u64,
        /// Tokens the snapshot will carry.
        tokens: u64,
    },
    /// The snapshot is complete: swap it in.
    SnapshotEnd {
        /// Tunnels sent in the snapshot.
        tunnels: u64,
        /// Tokens sent in the snapshot.
        tokens: u64,
    },
    /// Add or replace a tunnel (by name).
    TunnelUpsert(TunnelRec),
    /// Remove a tunnel.
    TunnelDelete {
        /// Its name.
        name: String,
    },
    /// Add or replace a token grant (by digest).
    TokenUpsert(TokenRec),
    /// Remove a token grant.
    TokenRevoke {
        /// SHA-256 of the secret.
        digest: [u8; 32],
    },
    /// No table change: the store's version moved from `from` to this
    /// record's `seq` (versions between them touched no table).
    Rebase {
        /// The version the core must be at for this to apply.
        from: u64,
    },
}

/// A tunnel as the data plane needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TunnelRec {
    /// Unique name.
    pub name: String,
    /// Hostnames that select it.
    pub hostnames: Vec<String>,
    /// `host:port`.
    pub upstream: String,
    /// 1 http, 2 httpupgrade.
    pub mode: u8,
    /// 1 http/1.1, 2 h2c, 3 h3.
    pub http_version: u8,
    /// Bearer token required.
    pub token_auth: bool,
    /// httpupgrade: close silently on rejection.
    pub stealth: bool,
    /// httpupgrade path.
    pub path: String,
    /// Allowed client networks (`a.b.c.d/n`); empty = all.
    pub trusted_cidrs: Vec<String>,
    /// h3 upstream: PEM of the CAs to trust (empty: the system roots).
    pub upstream_ca_pem: String,
    /// h3 upstream: the name to verify (empty: the upstream's host).
    pub upstream_server_name: String,
    /// h3 upstream: accept any certificate (tests only).
    pub upstream_insecure: bool,
}

/// A token grant: digest, scope, expiry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenRec {
    /// SHA-256 of the secret.
    pub digest: [u8; 32],
    /// Unix seconds after which the token is refused; 0 = never.
    pub expires_unix_s: u64,
    /// Tunnel names it opens; empty = every tunnel.
    pub tunnels: Vec<String>,
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body ends inside a field.
    Truncated,
    /// Bytes left after the last field.
    Trailing,
    /// Unknown record kind.
    UnknownKind(u8),
    /// A string is not UTF-8.
    BadUtf8,
    /// An enum byte out of range.
    BadValue(&'static str),
    /// Larger than [`MAX_RECORD`].
    TooLarge,
}

/// Why a record could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// A string longer than 65535 bytes or a list longer than 65535 items.
    FieldTooLong(&'static str),
    /// The body would exceed [`MAX_RECORD`].
    TooLarge,
}

// Display + Error by hand: the contract crate stays free of dependencies
// beyond libc.
impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("record truncated"),
            DecodeError::Trailing => f.write_str("bytes after the last field"),
            DecodeError::UnknownKind(k) => write!(f, "unknown record kind {k}"),
            DecodeError::BadUtf8 => f.write_str("string is not UTF-8"),
            DecodeError::BadValue(what) => write!(f, "bad value for {what}"),
            DecodeError::TooLarge => f.write_str("record larger than MAX_RECORD"),
        }
    }
}
impl std::error::Error for DecodeError {}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EncodeError::FieldTooLong(what) => write!(f, "field `{what}` too long"),
            EncodeError::TooLarge => f.write_str("record larger than MAX_RECORD"),
        }
    }
}
impl std::error::Error for EncodeError {}

const K_SNAP_BEGIN: u8 = 1;
const K_SNAP_END: u8 = 2;
const K_TUNNEL_UPSERT: u8 = 3;
const K_TUNNEL_DELETE: u8 = 4;
const K_TOKEN_UPSERT: u8 = 5;
const K_TOKEN_REVOKE: u8 = 6;
const K_REBASE: u8 = 7;

impl Record {
    /// Appends the body (without the frame length) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let mut w = Writer { out };
        match &self.body {
            Body::SnapshotBegin {
                generation,
                tunnels,
                tokens,
            } => {
                w.head(K_SNAP_BEGIN, self.seq);
                w.u64(*generation);
                w.u64(*tunnels);
                w.u64(*tokens);
            }
            Body::SnapshotEnd { tunnels, tokens } => {
                w.head(K_SNAP_END, self.seq);
                w.u64(*tunnels);
                w.u64(*tokens);
            }
            Body::TunnelUpsert(t) => {
                w.head(K_TUNNEL_UPSERT, self.seq);
                w.str("name", &t.name)?;
                w.list("hostnames", &t.hostnames)?;
                w.str("upstream", &t.upstream)?;
                w.out.push(t.mode);
                w.out.push(t.http_version);
                w.out.push(
                    u8::from(t.token_auth)
                        | (u8::from(t.stealth) << 1)
                        | (u8::from(t.upstream_insecure) << 2),
                );
                w.str("path", &t.path)?;
                w.list("trusted_cidrs", &t.trusted_cidrs)?;
                w.str("upstream_ca_pem", &t.upstream_ca_pem)?;
                w.str("upstream_server_name", &t.upstream_server_name)?;
            }
            Body::TunnelDelete { name } => {
                w.head(K_TUNNEL_DELETE, self.seq);
                w.str("name", name)?;
            }
            Body::TokenUpsert(t) => {
                w.head(K_TOKEN_UPSERT, self.seq);
                w.out.extend_from_slice(&t.digest);
                w.u64(t.expires_unix_s);
                w.list("tunnels", &t.tunnels)?;
            }
            Body::TokenRevoke { digest } => {
                w.head(K_TOKEN_REVOKE, self.seq);
                w.out.extend_from_slice(digest);
            }
            Body::Rebase { from } => {
                w.head(K_REBASE, self.seq);
                w.u64(*from);
            }
        }
        if out.len() - start > MAX_RECORD {
            out.truncate(start);
            return Err(EncodeError::TooLarge);
        }
        Ok(())
    }

    /// Appends the whole ring frame (length, then body) to `out`: a
    /// snapshot is one buffer of frames, pushed in as few copies as fit.
    pub fn encode_frame(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        if let Err(e) = self.encode(out) {
            out.truncate(at);
            return Err(e);
        }
        // encode() caps the body at MAX_RECORD, so the length fits a u32.
        let len = (out.len() - at - 4) as u32;
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
        Ok(())
    }

    /// Encodes into a fresh buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut v = Vec::with_capacity(64);
        self.encode(&mut v)?;
        Ok(v)
    }

    /// Decodes one complete body. Never panics, whatever the bytes.
    pub fn decode(body: &[u8]) -> Result<Record, DecodeError> {
        if body.len() > MAX_RECORD {
            return Err(DecodeError::TooLarge);
        }
        let mut r = Reader { b: body };
        let kind = r.u8()?;
        let seq = r.u64()?;
        let body = match kind {
            K_SNAP_BEGIN => Body::SnapshotBegin {
                generation: r.u64()?,
                tunnels: r.u64()?,
                tokens: r.u64()?,
            },
            K_SNAP_END => Body::SnapshotEnd {
                tunnels: r.u64()?,
                tokens: r.u64()?,
            },
            K_TUNNEL_UPSERT => {
                let name = r.str()?;
                let hostnames = r.list()?;
                let upstream = r.str()?;
                let mode = r.u8()?;
                if !(1..=2).contains(&mode) {
                    return Err(DecodeError::BadValue("mode"));
                }
                let http_version = r.u8()?;
                if !(1..=3).contains(&http_version) {
                    return Err(DecodeError::BadValue("http_version"));
                }
                let flags = r.u8()?;
                if flags & !7 != 0 {
                    return Err(DecodeError::BadValue("flags"));
                }
                Body::TunnelUpsert(TunnelRec {
                    name,
                    hostnames,
                    upstream,
                    mode,
                    http_version,
                    token_auth: flags & 1 != 0,
                    stealth: flags & 2 != 0,
                    upstream_insecure: flags & 4 != 0,
                    path: r.str()?,
                    trusted_cidrs: r.list()?,
                    upstream_ca_pem: r.str()?,
                    upstream_server_name: r.str()?,
                })
            }
            K_TUNNEL_DELETE => Body::TunnelDelete { name: r.str()? },
            K_TOKEN_UPSERT => Body::TokenUpsert(TokenRec {
                digest: r.digest()?,
                expires_unix_s: r.u64()?,
                tunnels: r.list()?,
            }),
            K_TOKEN_REVOKE => Body::TokenRevoke {
                digest: r.digest()?,
            },
            K_REBASE => Body::Rebase { from: r.u64()? },
            k => return Err(DecodeError::UnknownKind(k)),
        };
        if !r.b.is_empty() {
            return Err(DecodeError::Trailing);
        }
        Ok(Record { seq, body })
    }
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    fn head(&mut self, kind: u8, seq: u64) {
        self.out.push(kind);
        self.u64(seq);
    }
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u16(&mut self, field: &'static str, n: usize) -> Result<(), EncodeError> {
        let n = u16::try_from(n).map_err(|_| EncodeError::FieldTooLong(field))?;
        self.out.extend_from_slice(&n.to_le_bytes());
        Ok(())
    }
    fn str(&mut self, field: &'static str, s: &str) -> Result<(), EncodeError> {
        self.u16(field, s.len())?;
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }
    fn list(&mut self, field: &'static str, items: &[String]) -> Result<(), EncodeError> {
        self.u16(field, items.len())?;
        for s in items {
            self.str(field, s)?;
        }
        Ok(())
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.b.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn digest(&mut self) -> Result<[u8; 32], DecodeError> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(a)
    }
    fn str(&mut self) -> Result<String, DecodeError> {
        let n = self.u16()?;
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::BadUtf8)
    }
    fn list(&mut self) -> Result<Vec<String>, DecodeError> {
        let n = self.u16()?;
        // Each item needs at least its 2-byte length: bound the allocation by
        // what the input can hold, not by what it claims.
        if n * 2 > self.b.len() {
            return Err(DecodeError::Truncated);
        }
        (0..n).map(|_| self.str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record> {
        vec![
            Record {
                seq: 1,
                body: Body::SnapshotBegin {
                    generation: 7,
                    tunnels: 1,
                    tokens: 2,
                },
            },
            Record {
                seq: 1,
                body: Body::TunnelUpsert(TunnelRec {
                    name: "chat".into(),
                    hostnames: vec!["chat.test".into(), "x.test".into()],
                    upstream: "127.0.0.1:9000".into(),
                    mode: 2,
                    http_version: 1,
                    token_auth: true,
                    stealth: false,
                    path: "/ray".into(),
                    trusted_cidrs: vec!["10.0.0.0/8".into()],
                    upstream_ca_pem:
                        "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n".into(),
                    upstream_server_name: "origin.internal".into(),
                    upstream_insecure: false,
                }),
            },
            Record {
                seq: 1,
                body: Body::TokenUpsert(TokenRec {
                    digest: [9; 32],
                    expires_unix_s: 1_900_000_000,
                    tunnels: vec!["chat".into()],
                }),
            },
            Record {
                seq: 1,
                body: Body::SnapshotEnd {
                    tunnels: 1,
                    tokens: 1,
                },
            },
            Record {
                seq: 2,
                body: Body::TunnelDelete {
                    name: "chat".into(),
                },
            },
            Record {
                seq: 3,
                body: Body::TokenRevoke { digest: [1; 32] },
            },
            Record {
                seq: 9,
                body: Body::Rebase { from: 3 },
            },
        ]
    }

    #[test]
    fn round_trip_every_kind() {
        for r in samples() {
            let b = r.to_bytes().unwrap();
            assert_eq!(Record::decode(&b).unwrap(), r);
        }
    }

    #[test]
    fn every_prefix_and_extension_is_refused_without_panic() {
        for r in samples() {
            let b = r.to_bytes().unwrap();
            for n in 0..b.len() {
                assert!(Record::decode(&b[..n]).is_err(), "{r:?} prefix {n}");
            }
            let mut longer = b.clone();
            longer.push(0);
            assert_eq!(Record::decode(&longer), Err(DecodeError::Trailing));
        }
    }

    #[test]
    fn bad_values() {
        assert_eq!(
            Record::decode(&[99, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::UnknownKind(99))
        );
        let mut b = Record {
            seq: 0,
            body: Body::TunnelDelete { name: "ab".into() },
        }
        .to_bytes()
        .unwrap();
        let n = b.len();
        b[n - 1] = 0xff;
        assert_eq!(Record::decode(&b), Err(DecodeError::BadUtf8));
        // A list claiming 65535 items in a few bytes is refused before allocating.
        let mut t = vec![K_TOKEN_UPSERT];
        t.extend_from_slice(&[0; 8 + 32 + 8]);
        t.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(Record::decode(&t), Err(DecodeError::Truncated));
    }

    #[test]
    fn oversize_fields_are_encode_errors() {
        let r = Record {
            seq: 0,
            body: Body::TunnelDelete {
                name: "x".repeat(70_000),
            },
        };
        assert_eq!(r.to_bytes(), Err(EncodeError::FieldTooLong("name")));
    }
}
