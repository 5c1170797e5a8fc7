//! QPACK (RFC 9204) with the static table only: the edge advertises a
//! dynamic table capacity of 0 and never blocks a stream, so every field
//! section it accepts refers to the static table or carries literals. A
//! reference to the dynamic table is QPACK_DECOMPRESSION_FAILED. (A peer's
//! encoder stream is still drained by the connection: with capacity 0 it can
//! only say "capacity 0".)
//!
//! Field lines come out as they were sent: in order, duplicates kept, as
//! bytes. Which names and values are acceptable is the header policy's
//! business, not this decoder's. Huffman coding is `httlib-huffman`'s.

use super::error::{Code, H3Error};

mod static_table;
use static_table::STATIC;

/// One field line: name and value as sent.
pub type Field = (Vec<u8>, Vec<u8>);

fn failed(reason: &'static str) -> H3Error {
    H3Error::connection(Code::QPACK_DECOMPRESSION_FAILED, reason)
}

/// Reads an integer with an `n`-bit prefix (RFC 7541 §5.1) from the front
/// of `buf`: its value and the bytes it took; `None` when `buf` ends inside
/// it, `Err` past 62 bits (all any QPACK integer needs; more is an attack).
/// Field sections and the encoder/decoder streams share it.
pub(super) fn prefixed_int(buf: &[u8], n: u8) -> Option<Result<(u64, usize), ()>> {
    let max = (1u64 << n) - 1;
    let mut value = u64::from(*buf.first()?) & max;
    if value < max {
        return Some(Ok((value, 1)));
    }
    for (i, b) in buf[1..].iter().enumerate() {
        if i > 8 {
            return Some(Err(()));
        }
        value += u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(Ok((value, i + 2)));
        }
    }
    None
}

/// [`prefixed_int`] in a field section, which is whole: the end of input
/// is an error too.
fn read_int(buf: &[u8], n: u8) -> Result<(u64, usize), H3Error> {
    match prefixed_int(buf, n) {
        Some(Ok(read)) => Ok(read),
        Some(Err(())) => Err(failed("integer too large")),
        None => Err(failed("field section ends inside an integer")),
    }
}

/// Appends `value` with an `n`-bit prefix; `flags` are the bits above it.
fn write_int(value: u64, n: u8, flags: u8, out: &mut Vec<u8>) {
    let max = (1u64 << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Reads a string literal whose length has an `n`-bit prefix and whose
/// Huffman flag is the bit just above it: the string and the bytes taken.
/// Its encoded length is bounded by the HEADERS frame that carries it, and
/// Huffman codes are at least 5 bits, so the decoded string is too.
fn read_string(buf: &[u8], n: u8) -> Result<(Vec<u8>, usize), H3Error> {
    let huffman = buf.first().is_some_and(|b| b & (1 << n) != 0);
    let (len, at) = read_int(buf, n)?;
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| at.checked_add(len))
        .ok_or_else(|| failed("string literal too long"))?;
    let raw = buf.get(at..end).ok_or_else(|| failed("field section ends inside a string"))?;
    let text = if huffman {
        let mut text = Vec::with_capacity(raw.len() * 8 / 5);
        httlib_huffman::decode(raw, &mut text, httlib_huffman::DecoderSpeed::FourBits)
            .map_err(|_| failed("invalid Huffman string"))?;
        // The decoder accepts any padding; RFC 7541 §5.2 allows only the
        // EOS code's leading ones, fewer than 8 bits. The code is canonical,
        // so a valid string is exactly the encoding of what it decodes to.
        let mut again = Vec::with_capacity(raw.len());
        if httlib_huffman::encode(&text, &mut again).is_err() || again != raw {
            return Err(failed("invalid Huffman padding"));
        }
        text
    } else {
        raw.to_vec()
    };
    Ok((text, end))
}

/// Appends a string literal: Huffman-coded when that is shorter.
fn write_string(text: &[u8], n: u8, flags: u8, out: &mut Vec<u8>) {
    let mut coded = Vec::with_capacity(text.len());
    if httlib_huffman::encode(text, &mut coded).is_ok() && coded.len() < text.len() {
        write_int(coded.len() as u64, n, flags | (1 << n), out);
        out.extend_from_slice(&coded);
    } else {
        write_int(text.len() as u64, n, flags, out);
        out.extend_from_slice(text);
    }
}

fn static_entry(index: u64) -> Result<&'static (&'static str, &'static str), H3Error> {
    usize::try_from(index)
        .ok()
        .and_then(|i| STATIC.get(i))
        .ok_or_else(|| failed("static table index out of range"))
}

/// Decodes one encoded field section (a HEADERS frame's payload).
/// `max_size`: the edge's SETTINGS_MAX_FIELD_SECTION_SIZE, counted as RFC
/// 9114 §4.2.2 does (name + value + 32 per line); past it, a stream error
/// (H3_EXCESSIVE_LOAD) the caller answers with 431 or a reset.
pub fn decode(block: &[u8], max_size: u64) -> Result<Vec<Field>, H3Error> {
    let (required_insert_count, a) = read_int(block, 8)?;
    if required_insert_count != 0 {
        return Err(failed("dynamic table reference with capacity 0"));
    }
    // Sign bit and Delta Base: meaningless without a dynamic table.
    let (_, b) = read_int(&block[a..], 7)?;
    let mut at = a + b;
    let mut size = 0u64;
    let mut fields = Vec::new();
    while at < block.len() {
        let first = block[at];
        let rest = &block[at..];
        let field = if first & 0x80 != 0 {
            // Indexed field line: 1 T index(6).
            if first & 0x40 == 0 {
                return Err(failed("dynamic table reference with capacity 0"));
            }
            let (index, n) = read_int(rest, 6)?;
            at += n;
            let (name, value) = static_entry(index)?;
            (name.as_bytes().to_vec(), value.as_bytes().to_vec())
        } else if first & 0x40 != 0 {
            // Literal with name reference: 01 N T index(4), value.
            if first & 0x10 == 0 {
                return Err(failed("dynamic table reference with capacity 0"));
            }
            let (index, n) = read_int(rest, 4)?;
            let (name, _) = static_entry(index)?;
            let (value, m) = read_string(&rest[n..], 7)?;
            at += n + m;
            (name.as_bytes().to_vec(), value)
        } else if first & 0x20 != 0 {
            // Literal with literal name: 001 N H len(3) name, value.
            let (name, n) = read_string(rest, 3)?;
            let (value, m) = read_string(&rest[n..], 7)?;
            at += n + m;
            (name, value)
        } else {
            // 0001 (post-base index) and 0000 (post-base name reference):
            // both name the dynamic table.
            return Err(failed("dynamic table reference with capacity 0"));
        };
        size += (field.0.len() + field.1.len()) as u64 + 32;
        if size > max_size {
            return Err(H3Error::stream(Code::EXCESSIVE_LOAD, "field section larger than advertised"));
        }
        fields.push(field);
    }
    Ok(fields)
}

/// Encodes a field section: a line found whole in the static table is
/// indexed, one whose name is there refers to it, the rest are literals.
/// `N` (never index) is not set: nothing is ever indexed with capacity 0.
pub fn encode<'a>(fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>, out: &mut Vec<u8>) {
    out.push(0); // Required Insert Count 0
    out.push(0); // Sign 0, Delta Base 0
    for (name, value) in fields {
        let mut name_match = None;
        let mut full_match = None;
        for (i, (n, v)) in STATIC.iter().enumerate() {
            if n.as_bytes() == name {
                name_match.get_or_insert(i);
                if v.as_bytes() == value {
                    full_match = Some(i);
                    break;
                }
            }
        }
        match (full_match, name_match) {
            (Some(i), _) => write_int(i as u64, 6, 0xc0, out),
            (None, Some(i)) => {
                write_int(i as u64, 4, 0x50, out);
                write_string(value, 7, 0, out);
            }
            (None, None) => {
                write_string(name, 3, 0x20, out);
                write_string(value, 7, 0, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(fields: &[(&str, &str)]) -> Vec<Field> {
        fields.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
    }

    #[test]
    fn rfc_9204_appendix_b1_literal_with_name_reference() {
        // Appendix B.1, stream 4's field section: ":path" from the static
        // table with the literal value "/index.html".
        let block = [0x00, 0x00, 0x51, 0x0b, 0x2f, 0x69, 0x6e, 0x64, 0x65, 0x78, 0x2e, 0x68, 0x74, 0x6d, 0x6c];
        assert_eq!(decode(&block, 1 << 16).unwrap(), lines(&[(":path", "/index.html")]));
    }

    #[test]
    fn an_extended_connect_head_round_trips_in_order_with_duplicates() {
        let head = [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https"),
            (":authority", "ws.example"),
            (":path", "/chat?token=x"),
            ("sec-websocket-version", "13"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("x-custom", "Mixed Case Value"),
        ];
        let mut block = Vec::new();
        encode(head.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())), &mut block);
        assert_eq!(decode(&block, 1 << 16).unwrap(), lines(&head));
        // ":method CONNECT" is static entry 15, sent as one byte.
        assert_eq!(block[2], 0xc0 | 15);
    }

    #[test]
    fn dynamic_table_references_fail_decompression() {
        for block in [
            &[0x01, 0x00, 0xc0][..], // Required Insert Count 1
            &[0x00, 0x00, 0x80],     // indexed, dynamic
            &[0x00, 0x00, 0x40, 0x00], // name reference, dynamic
            &[0x00, 0x00, 0x10],     // post-base index
            &[0x00, 0x00, 0x00, 0x00], // post-base name reference
        ] {
            assert_eq!(decode(block, 1 << 16).unwrap_err().code, Code::QPACK_DECOMPRESSION_FAILED, "{block:?}");
        }
    }

    #[test]
    fn truncated_or_out_of_range_input_fails_without_panicking() {
        assert_eq!(decode(&[0x00, 0x00, 0xc0 | 63, 0xff], 1 << 16).unwrap_err().code, Code::QPACK_DECOMPRESSION_FAILED);
        assert_eq!(decode(&[0x00, 0x00, 0xc0 | 63, 0x30], 1 << 16).unwrap_err().code, Code::QPACK_DECOMPRESSION_FAILED);
        assert_eq!(decode(&[0x00, 0x00, 0x51, 0x0b, b'/'], 1 << 16).unwrap_err().code, Code::QPACK_DECOMPRESSION_FAILED);
        assert_eq!(decode(&[], 1 << 16).unwrap_err().code, Code::QPACK_DECOMPRESSION_FAILED);
        // An integer that never ends and one past 62 bits.
        let mut long = vec![0x00, 0x00, 0xff];
        long.extend([0xff; 12]);
        assert_eq!(decode(&long, 1 << 16).unwrap_err().code, Code::QPACK_DECOMPRESSION_FAILED);
    }

    #[test]
    fn a_field_section_over_the_limit_is_a_stream_error() {
        let big = "v".repeat(5000);
        let mut block = Vec::new();
        encode([(b"x-big".as_slice(), big.as_bytes())], &mut block);
        assert_eq!(decode(&block, 4096).unwrap_err(), H3Error::stream(Code::EXCESSIVE_LOAD, "field section larger than advertised"));
        assert_eq!(decode(&block, 8192).unwrap().len(), 1);
    }

    #[test]
    fn huffman_strings_decode_and_bad_padding_fails() {
        // RFC 7541 C.4.1: "www.example.com" Huffman-coded.
        let coded = [0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff];
        let mut block = vec![0x00, 0x00, 0x50, 0x80 | coded.len() as u8];
        block.extend(coded);
        assert_eq!(decode(&block, 1 << 16).unwrap(), lines(&[(":authority", "www.example.com")]));
        // "0" is 00000: padded with zeros instead of the EOS prefix, and
        // padded with a whole byte of ones.
        for bad in [&[0x00, 0x00, 0x50, 0x81, 0x00][..], &[0x00, 0x00, 0x50, 0x82, 0x07, 0xff]] {
            assert_eq!(decode(bad, 1 << 16).unwrap_err().code, Code::QPACK_DECOMPRESSION_FAILED, "{bad:?}");
        }
        assert_eq!(decode(&[0x00, 0x00, 0x50, 0x81, 0x07], 1 << 16).unwrap(), lines(&[(":authority", "0")]));
    }

    /// ls-qpack (pylsqpack, in the test venv) as the oracle: what each side
    /// encodes, the other decodes to the same lines, in order.
    #[test]
    fn ls_qpack_and_this_codec_read_each_other() {
        use std::io::{BufRead, BufReader, Write};
        let python = std::env::var("SWITCHYARD_PYTHON")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python").to_owned());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/qpack_oracle.py");
        let mut oracle = std::process::Command::new(&python)
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{python} {script}: {e} (run scripts/test.sh, which installs pylsqpack)"));
        let mut to = oracle.stdin.take().unwrap();
        let mut from = BufReader::new(oracle.stdout.take().unwrap());
        let mut ask = |line: String| {
            writeln!(to, "{line}").unwrap();
            let mut answer = String::new();
            from.read_line(&mut answer).unwrap();
            answer.trim_end().to_owned()
        };
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let unhex = |t: &str| (0..t.len()).step_by(2).map(|i| u8::from_str_radix(&t[i..i + 2], 16).unwrap()).collect::<Vec<u8>>();
        let show = |f: &[Field]| f.iter().map(|(n, v)| format!("{}:{}", hex(n), hex(v))).collect::<Vec<_>>().join(",");

        let long = "x".repeat(300);
        let mut cases: Vec<Vec<(String, Vec<u8>)>> = vec![
            vec![(":method".into(), b"CONNECT".to_vec()), (":protocol".into(), b"websocket".to_vec()),
                 (":scheme".into(), b"https".to_vec()), (":authority".into(), b"ws.example:8443".to_vec()),
                 (":path".into(), b"/chat?token=abc".to_vec()), ("sec-websocket-version".into(), b"13".to_vec())],
            vec![(":status".into(), b"200".to_vec()), ("cookie".into(), b"a=1".to_vec()), ("cookie".into(), b"b=2".to_vec()),
                 ("x-empty".into(), vec![]), ("x-long".into(), long.into_bytes()), ("x-bytes".into(), vec![0x80, 0xff, b'\t', b' '])],
        ];
        // Every static entry, whole and with another value.
        cases.push(STATIC.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect());
        cases.push(STATIC.iter().map(|(n, _)| (n.to_string(), b"other value".to_vec())).collect());

        for case in cases {
            let lines: Vec<Field> = case.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.clone())).collect();
            // Ours → ls-qpack.
            let mut block = Vec::new();
            encode(lines.iter().map(|(n, v)| (&n[..], &v[..])), &mut block);
            assert_eq!(ask(format!("D {}", hex(&block))), show(&lines));
            // ls-qpack → ours.
            let theirs = unhex(&ask(format!("E {}", show(&lines))));
            assert_eq!(decode(&theirs, 1 << 20).unwrap(), lines);
        }
        // Blocks both must refuse: a dynamic reference, bad Huffman padding.
        for bad in [&[0x00u8, 0x00, 0x80][..], &[0x00, 0x00, 0x50, 0x81, 0x00]] {
            assert!(ask(format!("D {}", hex(bad))).starts_with("ERR"), "{bad:?}");
            assert!(decode(bad, 1 << 16).is_err());
        }
        drop(to);
        let _ = oracle.wait();
    }
}
