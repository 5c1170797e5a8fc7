//! One answer table: every refusal ([`Rejection`]) becomes one answer per
//! downstream version, one log line and its counters, here and nowhere else.
//!
//! ```text
//! Rejection ─► answer(rej, tunnel, version) ─┬─ Silent       stealth tunnel: close (h1) / reset CANCEL (h2)
//!                                            ├─ StreamError  malformed on h2/h3: RST_STREAM(PROTOCOL_ERROR)
//!                                            └─ Respond      status + fields + one-line body
//!           ─► record(...)                   one log line (client text escaped, credentials redacted)
//! ```
//! The drivers only write what [`answer`] decided: `downstream::h1` as
//! [`h1_bytes`], `downstream::h2` as a stream answer.

use std::net::SocketAddr;

use crate::config::TunnelMode;
use crate::core::CoreCtx;
use crate::error::{reason_phrase, Rejection, Side};
use crate::logsafe::{redact_target, Escaped};
use crate::message::{Field, RequestHead};
use crate::plan::Version;
use crate::stats;
use crate::stats::families::AnswerLabel;
use crate::transport::TransportError;
use crate::tunnel::Tunnel;

/// A response the edge sends itself (or relays whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Fields, without framing fields (h2 lower-cases the names).
    pub fields: Vec<Field>,
    /// The whole body.
    pub body: Vec<u8>,
}

/// What a refusal turns into on one downstream version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Stealth HTTPUpgrade tunnel (Xray): no word; h1 closes, h2 resets the
    /// stream with CANCEL.
    Silent,
    /// A malformed request on a multiplexed version: a stream error
    /// (RFC 9113 §8.1.1, DESIGN §5).
    StreamError,
    /// This response.
    Respond(Response),
}

impl Answer {
    /// Its `answer` label in metrics.
    fn label(&self) -> AnswerLabel {
        match self {
            Answer::Silent => AnswerLabel::Silent,
            Answer::StreamError => AnswerLabel::StreamError,
            Answer::Respond(r) => AnswerLabel::Status(r.status),
        }
    }

    fn describe(&self) -> String {
        match self {
            Answer::Silent => "closed silently (stealth)".into(),
            Answer::StreamError => "stream error".into(),
            Answer::Respond(r) => r.status.to_string(),
        }
    }
}

/// The answer to `rej` on `version`, for a request that selected `tunnel`.
pub fn answer(rej: &Rejection, tunnel: Option<&Tunnel>, version: Version) -> Answer {
    if tunnel.is_some_and(|t| t.config.mode == TunnelMode::HttpUpgrade && t.config.stealth) {
        return Answer::Silent;
    }
    let status = rej.status();
    if version != Version::H1 && rej.is_malformed() && status == 400 {
        return Answer::StreamError;
    }
    let mut fields: Vec<Field> = vec![("Content-Type".into(), b"text/plain".to_vec())];
    match rej {
        Rejection::Auth(_) => fields.push(("WWW-Authenticate".into(), b"Bearer".to_vec())),
        // Upgrade is connection-specific: only an HTTP/1.1 answer carries it.
        Rejection::NotUpgrade if version == Version::H1 => {
            fields.push(("Upgrade".into(), b"websocket".to_vec()))
        }
        _ => {}
    }
    Answer::Respond(Response {
        status,
        fields,
        body: format!("{status} {}\n", reason_phrase(status)).into_bytes(),
    })
}

/// `resp` as a complete HTTP/1.1 response after which the connection closes.
pub fn h1_bytes(resp: &Response) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        resp.status,
        reason_phrase(resp.status)
    )
    .into_bytes();
    crate::codec::h1::write_fields(&mut out, &resp.fields);
    out.extend_from_slice(
        format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            resp.body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&resp.body);
    out
}

/// Counts a refusal and writes its one log line.
pub fn record(
    core: &CoreCtx,
    client: SocketAddr,
    rej: &Rejection,
    head: Option<&RequestHead>,
    tunnel: Option<&Tunnel>,
    answer: &Answer,
) {
    stats::add(&core.stats.rejected_total, 1);
    if let Some(t) = tunnel {
        stats::add(&core.tunnel_counters(&t.config.name).rejected_total, 1);
    }
    core.stats.families.rejected(rej.reason(), answer.label());
    match rej.side() {
        Side::Upstream => stats::add(&core.stats.upstream_errors, 1),
        Side::Downstream if matches!(rej, Rejection::Auth(_)) => {
            stats::add(&core.stats.auth_failures, 1)
        }
        _ => {}
    }
    let Some(suppressed) = log_budget(core) else {
        return;
    };
    let target = head.map(|h| redact_target(&h.target, &core.edge.token_query_param));
    let target = target.as_deref().map(Escaped);
    let method = head.map(|h| Escaped(&h.method));
    let tunnel = tunnel.map(|t| t.config.name.as_str());
    let answer = answer.describe();
    let suppressed = (suppressed > 0).then_some(suppressed);
    tracing::warn!(core = core.core, %client, method = method.map(tracing::field::display), target = target.map(tracing::field::display), tunnel, answer, suppressed, "rejected: {rej}");
}

/// Whether the next refusal line may be written (`Some`: how many were
/// suppressed before it); a suppressed line is counted.
pub fn log_budget(core: &CoreCtx) -> Option<u64> {
    let taken = core.log_budget.take(std::time::Instant::now());
    if taken.is_none() {
        stats::add(&core.stats.log_lines_suppressed, 1);
    }
    taken
}

/// Counts and logs a connection closed before its first request.
pub fn record_closed(core: &CoreCtx, client: SocketAddr, err: &TransportError) {
    stats::add(&core.stats.rejected_total, 1);
    core.stats.families.rejected("closed_before_request", AnswerLabel::Closed);
    if let Some(suppressed) = log_budget(core) {
        let suppressed = (suppressed > 0).then_some(suppressed);
        tracing::warn!(core = core.core, %client, suppressed, "connection closed: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthError;
    use crate::message::{HeadError, Headers};

    fn respond(a: Answer) -> Response {
        match a {
            Answer::Respond(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_table_for_every_version() {
        let r = h1_bytes(&respond(answer(
            &Rejection::Auth(AuthError::Missing),
            None,
            Version::H1,
        )));
        let (head, len) = crate::codec::h1::parse_response(&r, 4096).unwrap().unwrap();
        assert_eq!(head.status, 401);
        assert_eq!(head.get("www-authenticate"), Some(&b"Bearer"[..]));
        assert_eq!(r.len() - len, "401 Unauthorized\n".len());
        let malformed = Rejection::Head(HeadError::Malformed("x"));
        assert_eq!(respond(answer(&malformed, None, Version::H1)).status, 400);
        assert_eq!(answer(&malformed, None, Version::H2), Answer::StreamError);
        let too_long = Rejection::Head(HeadError::UriTooLong(1));
        assert_eq!(respond(answer(&too_long, None, Version::H2)).status, 414);
        let h1 = respond(answer(&Rejection::NotUpgrade, None, Version::H1));
        assert!(h1.fields.iter().any(|(n, _)| n == "Upgrade"));
        let h2 = respond(answer(&Rejection::NotUpgrade, None, Version::H2));
        assert_eq!(h2.status, 426);
        assert!(!h2.fields.iter().any(|(n, _)| n == "Upgrade"));
    }
}
