//! The text format's pieces: names, escaping, values.

use corral_model::Stat;

use crate::render::write_value;

/// Appends the Prometheus name of a datapoint: the v0 name (`name` plus the statistic's
/// suffix) sanitised, with `_total` for counters.
pub(super) fn metric_name(out: &mut Vec<u8>, name: &str, stat: Stat, counter: bool) {
    if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
        out.push(b'_');
    }
    sanitize_into(out, name, true);
    if stat != Stat::Value {
        sanitize_into(out, stat.suffix().as_str(), true);
    }
    if counter && !out.ends_with(b"_total") {
        out.extend_from_slice(b"_total");
    }
}

/// A valid label name for `raw`; see the module docs.
pub(super) fn label_name(raw: &str) -> String {
    let mut out = Vec::with_capacity(raw.len() + 1);
    if raw.is_empty() || raw.as_bytes()[0].is_ascii_digit() {
        out.push(b'_');
    }
    sanitize_into(&mut out, raw, false);
    if out.starts_with(b"__") {
        out.splice(0..0, *b"label");
    }
    String::from_utf8(out).expect("sanitised names are ASCII")
}

/// Appends `s` with each character outside `[a-zA-Z0-9_]` (and `:` unless `colon` is false)
/// replaced by one `_`.
fn sanitize_into(out: &mut Vec<u8>, s: &str, colon: bool) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || (colon && b == b':') {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        // One `_` per character: UTF-8 continuation bytes add none.
        if b & 0xc0 != 0x80 {
            out.push(b'_');
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

pub(super) fn escape_label_value(out: &mut Vec<u8>, s: &str) {
    escape(out, s, true);
}

pub(super) fn escape_help(out: &mut Vec<u8>, s: &str) {
    escape(out, s, false);
}

/// Label values escape `\`, `"` and newline; help text only `\` and newline.
fn escape(out: &mut Vec<u8>, s: &str, quote: bool) {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Values rarely need escaping: skip clean 8-byte words whole.
        if let Some(word) = bytes.get(i..i + 8) {
            let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            let special = has_byte(w, b'\\') || has_byte(w, b'\n') || (quote && has_byte(w, b'"'));
            if !special {
                i += 8;
                continue;
            }
        }
        let esc: &[u8] = match bytes[i] {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'"' if quote => b"\\\"",
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Whether any byte of `w` is `b` (the classic zero-byte test on `w ^ b…b`).
fn has_byte(w: u64, b: u8) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let x = w ^ (LO * u64::from(b));
    x.wrapping_sub(LO) & !x & HI != 0
}

pub(super) fn write_sample_value(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v == f64::INFINITY {
        out.extend_from_slice(b"+Inf");
    } else if v == f64::NEG_INFINITY {
        out.extend_from_slice(b"-Inf");
    } else {
        write_value(out, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(raw: &str, stat: Stat, counter: bool) -> String {
        let mut s = Vec::new();
        metric_name(&mut s, raw, stat, counter);
        String::from_utf8(s).unwrap()
    }

    #[test]
    fn metric_names() {
        assert_eq!(name("cpu.total", Stat::Value, false), "cpu_total");
        assert_eq!(name("a-b/c d:e", Stat::Value, false), "a_b_c_d:e");
        assert_eq!(name("9lives", Stat::Value, false), "_9lives");
        assert_eq!(name("Hits", Stat::Value, true), "Hits_total");
        assert_eq!(name("x.total", Stat::Value, true), "x_total");
        assert_eq!(name("t", Stat::percentile(99.9), false), "t_p99_9");
        assert_eq!(name("t", Stat::Count, false), "t_count");
        assert_eq!(name("caf\u{e9}.\u{1d11e}", Stat::Value, false), "caf___");
        assert_eq!(name("", Stat::Value, false), "_");
    }

    #[test]
    fn label_names() {
        assert_eq!(label_name("route"), "route");
        assert_eq!(label_name("a.b:c"), "a_b_c");
        assert_eq!(label_name("1st"), "_1st");
        assert_eq!(label_name("__name__"), "label__name__");
        assert_eq!(label_name("_.x"), "label__x");
        assert_eq!(label_name("_x"), "_x");
        assert_eq!(label_name(""), "_");
    }

    #[test]
    fn escapes_and_values() {
        for s in [
            "",
            "plain",
            "0123456789abcdef",
            "01234567\"",
            "\\01234567",
            "é☃\n𝄞",
        ] {
            let mut out = Vec::new();
            escape_label_value(&mut out, s);
            let slow = s
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            assert_eq!(String::from_utf8(out).unwrap(), slow);
        }
        let mut out = Vec::new();
        escape_label_value(&mut out, "a\\b\"c\nd");
        assert_eq!(out, b"a\\\\b\\\"c\\nd");
        out.clear();
        escape_help(&mut out, "a\\b\"c\nd");
        assert_eq!(out, b"a\\\\b\"c\\nd");
        for (v, s) in [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (3.0, "3"),
            (0.25, "0.25"),
        ] {
            out.clear();
            write_sample_value(&mut out, v);
            assert_eq!(out, s.as_bytes());
        }
    }
}
