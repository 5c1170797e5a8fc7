//! Request targets and authorities from the network (h1 request lines, h2
//! `:path` / `:authority`, CONNECT targets): never panic, never accept
//! userinfo, a fragment or a bad port, and the h1 parser's one authority
//! rule holds (origin-form target + exactly one Host after parsing).
#![no_main]
use dataplane::codec::h1::parse_request;
use dataplane::target::{origin_form, parse_authority, parse_target, Port, Target};
use libfuzzer_sys::fuzz_target;

const METHODS: [&str; 4] = ["GET", "CONNECT", "OPTIONS", "POST"];

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let method = METHODS[m as usize % METHODS.len()];
    for rule in [Port::Optional, Port::Required] {
        if let Ok(a) = parse_authority(text, rule) {
            assert!(!text.contains('@'), "userinfo accepted: {text:?}");
            assert!(text.starts_with(a.host));
            assert!(rule == Port::Optional || (a.port.unwrap_or(0) > 0 && !a.host.is_empty()));
        }
    }
    match parse_target(method, text) {
        Ok(Target::Absolute { authority, path_and_query }) => {
            assert!(!authority.host.is_empty() && !authority.host.contains('@'));
            let origin = origin_form(path_and_query);
            assert_eq!(parse_target("GET", &origin), Ok(Target::Origin), "{origin:?}");
        }
        Ok(Target::Authority(a)) => assert!(method == "CONNECT" && a.port.unwrap_or(0) > 0),
        Ok(Target::Asterisk) => assert!(method == "OPTIONS" && text == "*"),
        Ok(Target::Origin) => assert!(text.starts_with('/')),
        Err(_) => {}
    }
    if let Ok(t) = parse_target(method, text) {
        assert!(!text.contains('#') && text.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{t:?}");
    }
    // The same target on an h1 request line.
    let req = format!("{method} {text} HTTP/1.1\r\nHost: fuzz.test\r\n\r\n");
    if let Ok(Some((head, _))) = parse_request(req.as_bytes(), 1 << 16) {
        let hosts = head.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("host")).count();
        assert_eq!(hosts, 1);
        assert!(head.target.starts_with('/') || head.target == "*" || method == "CONNECT");
        assert!(head.host().is_some_and(|h| !h.contains('@')));
    }
});
