//! Labeled counter families for `/metrics`: relays by downstream version and
//! kind, relay ends by data path, refusals by reason and answer, and the
//! handshake latency histogram.
//!
//! Every label set is a slot of a fixed array, indexed by the position of
//! its label value in a constant list: an update on the hot path is the
//! same relaxed load + store as any core counter, with no map, lock or
//! allocation. A scrape sums nothing; it writes one sample per core and
//! label set that was ever counted.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{add, sub};
use crate::plan::Version;

/// `downstream` label values, by [`Version`].
pub const VERSIONS: [&str; 3] = ["h1", "h2", "h3"];

/// `kind` label values: what is relayed (the access log's `kind`).
pub const KINDS: [&str; 9] = [
    "websocket",
    "httpupgrade",
    "connect",
    "upgrade",
    "request",
    "webtransport",
    "connect-udp",
    "connect-ip",
    "other",
];

/// `path` label values: how a relay's bytes moved.
pub const PATHS: [&str; 2] = ["splice", "copy"];

/// `end` label values: how a relay ended (the access log's `end`).
pub const ENDS: [&str; 3] = ["closed", "reset", "idle_timeout"];

/// `reason` label values: [`crate::error::Rejection::reason`], and the
/// refusals that come before a request.
pub const REASONS: [&str; 19] = [
    "bad_head",
    "bad_intent",
    "head_timeout",
    "unknown_host",
    "no_connect_tunnel",
    "unauthorized",
    "forbidden_network",
    "upgrade_not_allowed",
    "connect_not_allowed",
    "wrong_path",
    "not_upgrade",
    "upstream_unreachable",
    "upstream_timeout",
    "upstream_bad_answer",
    "misdirected",
    "body_too_large",
    "not_supported",
    "closed_before_request",
    "h2_enhance_your_calm",
];

/// `answer` label values: a status the edge sends, or how it refused
/// without one.
pub const ANSWERS: [&str; 18] = [
    "400", "401", "403", "404", "408", "413", "421", "426", "431", "500", "501", "502", "503", "504",
    "other", "silent", "stream_error", "closed",
];

/// Upper bounds of the handshake histogram's buckets, in seconds.
pub const HANDSHAKE_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How a refusal answered, as its `answer` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerLabel {
    /// This status.
    Status(u16),
    /// Closed without a word (stealth HTTPUpgrade tunnel).
    Silent,
    /// A stream error (h2 RST_STREAM, h3 H3_MESSAGE_ERROR).
    StreamError,
    /// The connection was closed (before a request, or with a GOAWAY).
    Closed,
}

impl AnswerLabel {
    fn index(self) -> usize {
        let label = match self {
            AnswerLabel::Status(s) => {
                let code = s.to_string();
                return ANSWERS.iter().position(|a| *a == code).unwrap_or(14);
            }
            AnswerLabel::Silent => "silent",
            AnswerLabel::StreamError => "stream_error",
            AnswerLabel::Closed => "closed",
        };
        position(&ANSWERS, label)
    }
}

fn position(list: &[&str], value: &str) -> usize {
    list.iter().position(|v| *v == value).unwrap_or(list.len() - 1)
}

fn version_index(v: Version) -> usize {
    match v {
        Version::H1 => 0,
        Version::H2 => 1,
        Version::H3 => 2,
    }
}

/// The labeled counters of one core (single writer: that core).
#[derive(Debug, Default)]
pub struct Families {
    relays_started: [[AtomicU64; KINDS.len()]; VERSIONS.len()],
    relays_active: [[AtomicU64; KINDS.len()]; VERSIONS.len()],
    relays_ended: [[AtomicU64; ENDS.len()]; PATHS.len()],
    rejections: [[AtomicU64; ANSWERS.len()]; REASONS.len()],
    /// Per bucket (not cumulative); the `+Inf` bucket is `handshake_count`.
    handshake_buckets: [AtomicU64; HANDSHAKE_BUCKETS.len()],
    handshake_count: AtomicU64,
    handshake_sum_us: AtomicU64,
}

impl Families {
    /// A relay of `kind` started on a `version` downstream.
    pub fn relay_started(&self, version: Version, kind: &str) {
        let (v, k) = (version_index(version), position(&KINDS, kind));
        add(&self.relays_started[v][k], 1);
        add(&self.relays_active[v][k], 1);
    }

    /// That relay is gone (ended, or dropped before it could start).
    pub fn relay_gone(&self, version: Version, kind: &str) {
        sub(&self.relays_active[version_index(version)][position(&KINDS, kind)], 1);
    }

    /// A relay ended `end` (an [`ENDS`] value), spliced or copied.
    pub fn relay_ended(&self, spliced: bool, end: &str) {
        add(&self.relays_ended[usize::from(!spliced)][position(&ENDS, end)], 1);
    }

    /// A refusal for `reason` (a [`REASONS`] value) answered `answer`.
    pub fn rejected(&self, reason: &str, answer: AnswerLabel) {
        add(&self.rejections[position(&REASONS, reason)][answer.index()], 1);
    }

    /// A relay's handshake (routed request to its success answer) took `d`.
    pub fn handshake(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = HANDSHAKE_BUCKETS.iter().position(|b| secs <= *b) {
            add(&self.handshake_buckets[i], 1);
        }
        add(&self.handshake_count, 1);
        add(&self.handshake_sum_us, d.as_micros() as u64);
    }
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn family(out: &mut String, metric: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {metric} {help}");
    let _ = writeln!(out, "# TYPE {metric} {kind}");
}

/// A label's name and its values.
type Labels<'a> = (&'a str, &'a [&'a str]);

/// The samples of a family with two labels: one per core and pair of label
/// values for which `sample` has a value.
fn grid(
    out: &mut String,
    cores: &[&Families],
    metric: &str,
    ((first, firsts), (second, seconds)): (Labels<'_>, Labels<'_>),
    sample: impl Fn(&Families, usize, usize) -> Option<u64>,
) {
    for (core, f) in cores.iter().enumerate() {
        for (i, a) in firsts.iter().enumerate() {
            for (j, b) in seconds.iter().enumerate() {
                if let Some(n) = sample(f, i, j) {
                    let _ = writeln!(out, "{metric}{{core=\"{core}\",{first}=\"{a}\",{second}=\"{b}\"}} {n}");
                }
            }
        }
    }
}

/// Every core's families in the Prometheus text format (label sets never
/// counted are left out).
pub fn render(out: &mut String, cores: &[&Families]) {
    let counted = |n: u64| (n > 0).then_some(n);
    family(out, "switchyard_relays_started_total", "counter", "Relays started, by downstream version and what is relayed.");
    grid(out, cores, "switchyard_relays_started_total", (("downstream", &VERSIONS), ("kind", &KINDS)), |f, v, k| {
        counted(load(&f.relays_started[v][k]))
    });
    family(out, "switchyard_relays_active", "gauge", "Relays in progress, by downstream version and what is relayed.");
    grid(out, cores, "switchyard_relays_active", (("downstream", &VERSIONS), ("kind", &KINDS)), |f, v, k| {
        counted(load(&f.relays_started[v][k])).map(|_| load(&f.relays_active[v][k]))
    });
    family(out, "switchyard_relays_ended_total", "counter", "Relays ended, by data path (splice or copy) and how they ended.");
    grid(out, cores, "switchyard_relays_ended_total", (("path", &PATHS), ("end", &ENDS)), |f, p, e| counted(load(&f.relays_ended[p][e])));
    family(out, "switchyard_rejections_total", "counter", "Refusals, by reason and answer.");
    grid(out, cores, "switchyard_rejections_total", (("reason", &REASONS), ("answer", &ANSWERS)), |f, r, a| {
        counted(load(&f.rejections[r][a]))
    });
    family(out, "switchyard_upstream_errors_by_kind_total", "counter", "Upstream dials and handshakes that failed, by kind (unreachable, timeout, bad_answer).");
    for (core, f) in cores.iter().enumerate() {
        for kind in ["unreachable", "timeout", "bad_answer"] {
            let r = position(&REASONS, &format!("upstream_{kind}"));
            let n: u64 = f.rejections[r].iter().map(load).sum();
            let _ = writeln!(out, "switchyard_upstream_errors_by_kind_total{{core=\"{core}\",kind=\"{kind}\"}} {n}");
        }
    }
    family(out, "switchyard_handshake_seconds", "histogram", "Time from a routed, authorized request to its success answer (upstream dial and handshake included).");
    for (core, f) in cores.iter().enumerate() {
        let mut cumulative = 0;
        for (i, bound) in HANDSHAKE_BUCKETS.iter().enumerate() {
            cumulative += load(&f.handshake_buckets[i]);
            let _ = writeln!(out, "switchyard_handshake_seconds_bucket{{core=\"{core}\",le=\"{bound}\"}} {cumulative}");
        }
        let count = load(&f.handshake_count);
        let _ = writeln!(out, "switchyard_handshake_seconds_bucket{{core=\"{core}\",le=\"+Inf\"}} {count}");
        let sum = load(&f.handshake_sum_us) as f64 / 1e6;
        let _ = writeln!(out, "switchyard_handshake_seconds_sum{{core=\"{core}\"}} {sum}");
        let _ = writeln!(out, "switchyard_handshake_seconds_count{{core=\"{core}\"}} {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_sets_render_once_counted() {
        let f = Families::default();
        f.relay_started(Version::H2, "websocket");
        f.relay_started(Version::H2, "websocket");
        f.relay_gone(Version::H2, "websocket");
        f.relay_started(Version::H1, "no-such-kind");
        f.relay_ended(true, "closed");
        f.rejected("unauthorized", AnswerLabel::Status(401));
        f.rejected("upstream_timeout", AnswerLabel::Status(504));
        f.rejected("bad_head", AnswerLabel::StreamError);
        f.rejected("bad_head", AnswerLabel::Status(599));
        f.handshake(Duration::from_micros(700));
        f.handshake(Duration::from_secs(30));
        let mut out = String::new();
        render(&mut out, &[&f]);
        for line in [
            "switchyard_relays_started_total{core=\"0\",downstream=\"h2\",kind=\"websocket\"} 2\n",
            "switchyard_relays_active{core=\"0\",downstream=\"h2\",kind=\"websocket\"} 1\n",
            "switchyard_relays_started_total{core=\"0\",downstream=\"h1\",kind=\"other\"} 1\n",
            "switchyard_relays_ended_total{core=\"0\",path=\"splice\",end=\"closed\"} 1\n",
            "switchyard_rejections_total{core=\"0\",reason=\"unauthorized\",answer=\"401\"} 1\n",
            "switchyard_rejections_total{core=\"0\",reason=\"bad_head\",answer=\"stream_error\"} 1\n",
            "switchyard_rejections_total{core=\"0\",reason=\"bad_head\",answer=\"other\"} 1\n",
            "switchyard_upstream_errors_by_kind_total{core=\"0\",kind=\"timeout\"} 1\n",
            "switchyard_upstream_errors_by_kind_total{core=\"0\",kind=\"unreachable\"} 0\n",
            "switchyard_handshake_seconds_bucket{core=\"0\",le=\"0.0005\"} 0\n",
            "switchyard_handshake_seconds_bucket{core=\"0\",le=\"0.001\"} 1\n",
            "switchyard_handshake_seconds_bucket{core=\"0\",le=\"10\"} 1\n",
            "switchyard_handshake_seconds_bucket{core=\"0\",le=\"+Inf\"} 2\n",
            "switchyard_handshake_seconds_count{core=\"0\"} 2\n",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
        assert!(!out.contains("kind=\"connect\""), "{out}");
    }

    #[test]
    fn every_rejection_reason_has_a_slot() {
        use crate::error::Rejection;
        for r in [
            Rejection::NoConnectTunnel,
            Rejection::ConnectNotAllowed,
            Rejection::NotUpgrade,
            Rejection::UpstreamBadAnswer(String::new()),
            Rejection::NotSupported(String::new()),
            Rejection::HeadTimeout(Duration::ZERO),
            Rejection::BodyTooLarge(0),
            Rejection::Misdirected("CONNECT"),
        ] {
            assert!(REASONS.contains(&r.reason()), "{}", r.reason());
            assert!(ANSWERS.contains(&r.status().to_string().as_str()), "{}", r.status());
        }
    }
}
