//! What a client controls, made safe for a log line: escaped, bounded,
//! credentials redacted.
//!
//! Every field a client chooses (target, path, Host, upgrade token,
//! `:protocol`) goes into logs through [`Escaped`]: quoted, with control
//! characters, quotes, backslashes and the Unicode characters that move or
//! reorder text (line/paragraph separators, bidi controls) written as escapes,
//! so one field can neither end the line nor forge another field or line.
//! Credentials never reach a log: [`redact_target`] replaces userinfo and the
//! token query value, and credential headers are printed as `<redacted>`
//! ([`is_credential`]).

use std::fmt;

/// Longest client text printed in one field; the rest is summarised.
pub const MAX_FIELD_CHARS: usize = 256;

/// Client-controlled text, printed quoted and escaped (see the module docs).
#[derive(Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        let mut chars = self.0.char_indices();
        for (n, (i, c)) in chars.by_ref().enumerate() {
            if n == MAX_FIELD_CHARS {
                write!(f, "\u{2026}(+{} bytes)", self.0.len() - i)?;
                break;
            }
            escape_char(c, f)?;
        }
        f.write_str("\"")
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn escape_char(c: char, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match c {
        '"' => f.write_str("\\\""),
        '\\' => f.write_str("\\\\"),
        '\n' => f.write_str("\\n"),
        '\r' => f.write_str("\\r"),
        '\t' => f.write_str("\\t"),
        c if needs_escape(c) => write!(f, "\\u{{{:x}}}", c as u32),
        c => write!(f, "{c}"),
    }
}

/// Control characters (C0, DEL, C1) and the format characters that break or
/// reorder a line on a terminal or in a viewer: never written raw.
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c as u32,
            0x2028 | 0x2029            // line / paragraph separator
            | 0x200e | 0x200f          // LRM, RLM
            | 0x202a..=0x202e          // bidi embeddings and overrides
            | 0x2066..=0x2069          // bidi isolates
            | 0x061c                   // arabic letter mark
            | 0xfeff) // BOM / zero-width no-break space
}

/// An owned client string that prints as [`Escaped`] (for error types that
/// carry client input into log lines).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientText(pub String);

impl ClientText {
    /// Takes client bytes (not necessarily UTF-8; invalid sequences become
    /// U+FFFD).
    #[cfg(test)]
    pub fn from_bytes(b: &[u8]) -> ClientText {
        ClientText(String::from_utf8_lossy(b).into_owned())
    }
}

impl fmt::Display for ClientText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Escaped(&self.0).fmt(f)
    }
}

impl fmt::Debug for ClientText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Escaped(&self.0).fmt(f)
    }
}

/// Header fields whose values never appear in logs.
pub fn is_credential(name: &str) -> bool {
    name.eq_ignore_ascii_case("authorization")
        || name.eq_ignore_ascii_case("proxy-authorization")
        || name.eq_ignore_ascii_case("cookie")
}

/// `target` fit for a log: userinfo (in an absolute URI or a CONNECT
/// authority) and the value of every `param` query parameter replaced by
/// `<redacted>`.
pub fn redact_target(target: &str, param: &str) -> String {
    let target = redact_userinfo(target);
    let Some((path, q)) = target.split_once('?') else {
        return target.into_owned();
    };
    let parts: Vec<String> = q
        .split('&')
        .map(|p| {
            if crate::target::param_name_matches(p, param) {
                format!("{}=<redacted>", p.split('=').next().unwrap_or(p))
            } else {
                p.to_owned()
            }
        })
        .collect();
    format!("{path}?{}", parts.join("&"))
}

fn redact_userinfo(target: &str) -> std::borrow::Cow<'_, str> {
    // The authority: after "scheme://" up to the path, or all of an
    // authority-form target.
    let (start, rest) = match target.find("://") {
        Some(i) => (i + 3, &target[i + 3..]),
        None if target.starts_with('/') => return target.into(),
        None => (0, target),
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{}<redacted>{}", &target[..start], &target[start + at..]).into(),
        None => target.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_forge_a_line_or_a_field() {
        let s = "/x\n2026-11-30T00:00:00Z INFO FORGED\r \"q\" \\ \u{1b}[31m \u{202e}abc \u{85}";
        let out = Escaped(s).to_string();
        assert_eq!(
            out,
            "\"/x\\n2026-11-30T00:00:00Z INFO FORGED\\r \\\"q\\\" \\\\ \\u{1b}[31m \\u{202e}abc \\u{85}\""
        );
        assert!(!out.chars().any(needs_escape));
        let long = "a".repeat(1000);
        let out = Escaped(&long).to_string();
        assert!(out.len() < 300, "{}", out.len());
        assert!(out.ends_with("(+744 bytes)\""));
        assert_eq!(
            ClientText::from_bytes(b"a\xffb").to_string(),
            "\"a\u{fffd}b\""
        );
    }

    #[test]
    fn redaction() {
        let p = "rstream.token";
        assert_eq!(
            redact_target("/x?a=1&rstream.token=s3cret", p),
            "/x?a=1&rstream.token=<redacted>"
        );
        assert_eq!(redact_target("/x", p), "/x");
        assert_eq!(
            redact_target("http://user:pa55word@host/p?rstream.token=t", p),
            "http://<redacted>@host/p?rstream.token=<redacted>"
        );
        assert_eq!(redact_target("user:pw@h:1", p), "<redacted>@h:1");
        assert_eq!(redact_target("/a@b", p), "/a@b");
    }
}
