//! Token auth on the initial request (DESIGN §1).
//!
//! A proof is `Authorization: Bearer <token>` or the query parameter named by
//! `edge.token_query_param`. Exactly one proof is allowed; the consumed proof
//! is removed before the request goes upstream. Tokens are kept only as
//! SHA-256 digests: the lookup hashes the presented token and finds the digest
//! in a map (so lookup time depends on the digest, not on how many leading
//! characters of a real token were guessed), then confirms with a
//! constant-time comparison.

use std::collections::HashSet;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::message::RequestHead;
use crate::target::query_values;

/// A set of accepted tokens, stored as SHA-256 digests.
#[derive(Debug, Default, Clone)]
pub struct TokenSet {
    digests: HashSet<[u8; 32]>,
}

/// SHA-256 of a token: the only form in which tokens are kept or shipped.
pub fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl TokenSet {
    /// Hashes plain-text tokens from a stand-alone config.
    pub fn from_plain(tokens: &[String]) -> TokenSet {
        TokenSet {
            digests: tokens.iter().map(|t| digest(t.as_bytes())).collect(),
        }
    }

    /// Whether `token` is accepted.
    pub fn accepts(&self, token: &[u8]) -> bool {
        let d = digest(token);
        match self.digests.get(&d) {
            Some(stored) => stored.ct_eq(&d).into(),
            None => false,
        }
    }
}

/// Why a request was refused (answers 401 with `WWW-Authenticate: Bearer`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No proof at all.
    #[error("no token presented")]
    Missing,
    /// A proof that is not a valid token.
    #[error("invalid token")]
    Invalid,
    /// More than one proof in one request.
    #[error("more than one token proof in the request")]
    Ambiguous,
    /// An `Authorization` header with another scheme or no value.
    #[error("Authorization header is not a Bearer token")]
    NotBearer,
}

/// Checks the request's proof and removes it from `head`; the decision on
/// the presented token is `accepts`' (static tokens, or the control plane's
/// scoped, expiring grants).
pub fn authorize_with(
    head: &mut RequestHead,
    query_param: &str,
    accepts: impl Fn(&[u8]) -> bool,
) -> Result<(), AuthError> {
    let headers: Vec<&[u8]> = head
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("authorization"))
        .map(|h| h.value.as_slice())
        .collect();
    let query = query_values(&head.target, query_param);
    if headers.len() + query.len() > 1 {
        return Err(AuthError::Ambiguous);
    }
    let token: Vec<u8> = if let Some(v) = headers.first() {
        bearer(v).ok_or(AuthError::NotBearer)?.to_vec()
    } else if let Some(v) = query.into_iter().next() {
        v
    } else {
        return Err(AuthError::Missing);
    };
    if token.is_empty() || !accepts(&token) {
        return Err(AuthError::Invalid);
    }
    crate::policy::strip_proof(head, query_param);
    Ok(())
}

fn bearer(v: &[u8]) -> Option<&[u8]> {
    let v = v.trim_ascii();
    let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::h1::parse_request;
    use crate::message::Headers;

    fn head(s: &str) -> RequestHead {
        parse_request(s.as_bytes(), 16384).unwrap().unwrap().0
    }

    fn authorize(h: &mut RequestHead, p: &str, tokens: &TokenSet) -> Result<(), AuthError> {
        authorize_with(h, p, |t| tokens.accepts(t))
    }

    fn tokens() -> TokenSet {
        TokenSet::from_plain(&["s3cret".into(), "other".into()])
    }

    const P: &str = "rstream.token";

    #[test]
    fn bearer_header_accepted_and_stripped() {
        let mut h =
            head("GET /ws HTTP/1.1\r\nHost: a\r\nauthorization: bearer  s3cret \r\nX: y\r\n\r\n");
        assert_eq!(authorize(&mut h, P, &tokens()), Ok(()));
        assert!(h.get("authorization").is_none());
        assert_eq!(h.headers.len(), 2);
    }

    #[test]
    fn query_token_accepted_and_stripped() {
        let mut h = head("GET /ws?a=1&rstream.token=s3cret&b=2 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(authorize(&mut h, P, &tokens()), Ok(()));
        assert_eq!(h.target, "/ws?a=1&b=2");
        let mut h = head("GET /ws?rstream%2Etoken=s3cre%74 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(authorize(&mut h, P, &tokens()), Ok(()));
        assert_eq!(h.target, "/ws");
    }

    #[test]
    fn refusals() {
        let cases = [
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", AuthError::Missing),
            ("GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer nope\r\n\r\n", AuthError::Invalid),
            ("GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer \r\n\r\n", AuthError::NotBearer),
            ("GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Basic czNjcmV0\r\n\r\n", AuthError::NotBearer),
            ("GET /?rstream.token= HTTP/1.1\r\nHost: a\r\n\r\n", AuthError::Invalid),
            (
                "GET /?rstream.token=s3cret HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret\r\n\r\n",
                AuthError::Ambiguous,
            ),
            ("GET /?rstream.token=s3cret&rstream.token=other HTTP/1.1\r\nHost: a\r\n\r\n", AuthError::Ambiguous),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret\r\nAuthorization: Bearer s3cret\r\n\r\n",
                AuthError::Ambiguous,
            ),
        ];
        for (req, want) in cases {
            let mut h = head(req);
            let before = h.clone();
            assert_eq!(authorize(&mut h, P, &tokens()), Err(want), "{req}");
            assert_eq!(h, before, "a refused request is not modified");
        }
    }
}
