//! Client text on its way into a log line: the escaped form is one quoted
//! field with no raw control, line-breaking or bidi character, bounded in
//! length, and it unescapes back to the input when not truncated; target
//! redaction never panics and leaves no token value in the query.
#![no_main]
use dataplane::logsafe::{needs_escape, redact_target, Escaped, MAX_FIELD_CHARS};
use libfuzzer_sys::fuzz_target;

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('u') => {
                let hex: String = it.by_ref().skip(1).take_while(|&c| c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
            }
            other => panic!("bad escape {other:?}"),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let out = Escaped(&text).to_string();
    assert!(out.starts_with('"') && out.ends_with('"') && out.len() >= 2);
    assert!(!out.chars().any(needs_escape), "{out:?}");
    let inner = &out[1..out.len() - 1];
    // Every quote inside is escaped: the field cannot be closed early.
    let mut escaped = false;
    for c in inner.chars() {
        assert!(escaped || c != '"', "{out:?}");
        escaped = !escaped && c == '\\';
    }
    assert!(out.chars().count() <= MAX_FIELD_CHARS * 10 + 32);
    if text.chars().count() <= MAX_FIELD_CHARS {
        assert_eq!(unescape(inner), text);
    }
    let redacted = redact_target(&text, "rstream.token");
    if let Some((_, q)) = redacted.split_once('?') {
        for pair in q.split('&') {
            if let Some(("rstream.token", v)) = pair.split_once('=') {
                assert_eq!(v, "<redacted>", "{text:?} -> {redacted:?}");
            }
        }
    }
});
