//! The version-neutral HTTP message every codec reads into and writes from
//! (HAProxy's HTX idea, pingora's vocabulary): a request or response head
//! with its fields in received order and case, and where its body ends.
//!
//! ```text
//! h1 bytes ─┐                              ┌─► h1 bytes
//! h2 frames ├─ codec::{h1,h2} ─► message ──┤   (codec::{h1,h2}, client side)
//! h3 frames ┘  (server side)        │      └─► h2 frames
//!                                  plan (route → access → auth), policy (fields)
//! ```
//!
//! A `RequestHead` always has at most one `Host` field, which names the
//! authority the request is for (the codecs put an absolute-form target's or
//! `:authority`'s there: `target` module), and a target in origin form (or
//! authority form for CONNECT, `*` for OPTIONS).

use std::fmt;

pub mod framing;
pub use framing::BodyFraming;

use crate::target::TargetError;

/// Most header fields accepted in one head.
pub const MAX_HEADERS: usize = 128;

/// One header field as received: name case and order preserved.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    /// Field name, as sent.
    pub name: String,
    /// Field value bytes (not necessarily UTF-8).
    pub value: Vec<u8>,
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if crate::logsafe::is_credential(&self.name) {
            write!(f, "{}: <redacted>", self.name)
        } else {
            write!(f, "{}: {}", self.name, String::from_utf8_lossy(&self.value))
        }
    }
}

/// One field as the pipeline passes it between versions: lower-cased name
/// (as h2 and h3 require), value bytes.
pub type Field = (String, Vec<u8>);

/// A request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Method, e.g. `GET`, `CONNECT`.
    pub method: String,
    /// Request target as sent (origin-, absolute- or authority-form).
    pub target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Header fields in order.
    pub headers: Vec<Header>,
}

/// A response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Reason phrase as sent.
    pub reason: String,
    /// Minor version.
    pub minor_version: u8,
    /// Header fields in order.
    pub headers: Vec<Header>,
}

/// Why a head was refused: 400 on h1 (a stream error on h2), except where
/// [`HeadError::status`] says otherwise (DESIGN §5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// Larger than the configured limit.
    #[error("head larger than {0} bytes")]
    TooLarge(usize),
    /// The request line alone is longer than the head limit (414).
    #[error("request line longer than {0} bytes")]
    UriTooLong(usize),
    /// More than [`MAX_HEADERS`] fields.
    #[error("more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    /// Not valid HTTP/1.x syntax.
    #[error("malformed head: {0}")]
    Malformed(&'static str),
    /// The request target is not valid for its method.
    #[error("invalid request target: {0}")]
    Target(TargetError),
    /// `Host` (or `:authority`) is not a valid authority.
    #[error("invalid Host: {0}")]
    Host(TargetError),
    /// A transfer coding other than `chunked` was applied (501, RFC 9112 §6.1).
    #[error("transfer coding other than chunked")]
    UnsupportedCoding,
}

impl HeadError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::UriTooLong(_) => 414,
            HeadError::UnsupportedCoding => 501,
            _ => 400,
        }
    }
}

/// Header-map helpers shared by request and response heads.
pub trait Headers {
    /// The fields.
    fn fields(&self) -> &[Header];

    /// First value of `name` (case-insensitive).
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields()
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// Every value of `name`, in order (case-insensitive name).
    fn all_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields()
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_slice())
    }

    /// The non-empty elements of the comma-separated list `name` across all
    /// its fields (RFC 9110 §5.6.1), trimmed.
    fn tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.all_values(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
    }

    /// Whether the list `name` contains `token` (case-insensitive), e.g.
    /// `Connection: keep-alive, Upgrade`.
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.tokens(name)
            .any(|v| v.eq_ignore_ascii_case(token.as_bytes()))
    }
}

impl Headers for RequestHead {
    fn fields(&self) -> &[Header] {
        &self.headers
    }
}

impl ResponseHead {
    /// The fields as `(name, value)` pairs.
    pub fn fields_iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_slice()))
    }
}

impl Headers for ResponseHead {
    fn fields(&self) -> &[Header] {
        &self.headers
    }
}

impl RequestHead {
    /// Removes every field named `name`; returns how many were removed.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.headers.len();
        self.headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
        before - self.headers.len()
    }

    /// Appends a field at the end.
    pub fn append(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.headers.push(Header {
            name: name.to_owned(),
            value: value.into(),
        });
    }

    /// The host the request is for: its `Host` field, which the parsers set
    /// from an absolute-form target or `:authority` (RFC 9112 §3.2.2,
    /// RFC 9113 §8.3.1), so there is only one answer.
    pub fn host(&self) -> Option<&str> {
        self.get("host")
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(|v| v.trim_matches([' ', '\t']))
    }
}
