//! The StatsD dialect, line by line: table tests (input => rendered result or `!reason`) and
//! property tests.

use std::fmt::Write;

use corral_statsd::{lines, parse, MetricType, Parsed, Reject, Tags, Value};
use proptest::prelude::*;

/// Renders a parse result compactly, so that one table row is one case:
/// - metric: `{type} {name} [{values}]`, then ` @{rate}` (or ` @!` for a bad rate),
///   ` #[k=v,...]`, ` c={container}`, ` T={timestamp}` when present; signed numbers keep their
///   sign (`+1`), set members are quoted (`'x'`);
/// - event: `event "{title}" "{text}"` then tags;
/// - service check: `sc {name} {status}` then tags, container and timestamp;
/// - rejection: `!{reason label}`.
fn render(result: Result<Parsed<'_>, Reject>) -> String {
    let mut out = String::new();
    match result {
        Err(reject) => write!(out, "!{}", reject.as_str()).unwrap(),
        Ok(Parsed::Metric(line)) => {
            write!(out, "{} {} [", type_str(line.kind), line.name).unwrap();
            for (i, value) in line.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match value {
                    Value::Number {
                        value,
                        signed: true,
                    } => write!(out, "{value:+}").unwrap(),
                    Value::Number {
                        value,
                        signed: false,
                    } => write!(out, "{value}").unwrap(),
                    Value::Member(member) => write!(out, "'{member}'").unwrap(),
                }
            }
            out.push(']');
            if line.bad_sample_rate {
                assert_eq!(line.sample_rate, 1.0);
                out.push_str(" @!");
            } else if line.sample_rate != 1.0 {
                write!(out, " @{}", line.sample_rate).unwrap();
            }
            render_tags(&mut out, &line.tags);
            if let Some(id) = line.container_id {
                write!(out, " c={id}").unwrap();
            }
            if let Some(ts) = line.timestamp {
                write!(out, " T={ts}").unwrap();
            }
        }
        Ok(Parsed::Event(event)) => {
            write!(out, "event {:?} {:?}", event.title, event.text).unwrap();
            render_tags(&mut out, &event.tags);
        }
        Ok(Parsed::ServiceCheck(check)) => {
            write!(out, "sc {} {}", check.name, check.status).unwrap();
            render_tags(&mut out, &check.tags);
            if let Some(id) = check.container_id {
                write!(out, " c={id}").unwrap();
            }
            if let Some(ts) = check.timestamp {
                write!(out, " T={ts}").unwrap();
            }
        }
    }
    out
}

fn render_tags(out: &mut String, tags: &Tags<'_>) {
    assert_eq!(tags.iter().count(), tags.len(), "tag count");
    assert_eq!(tags.is_empty(), tags.iter().next().is_none());
    if tags.is_empty() {
        return;
    }
    out.push_str(" #[");
    for (i, (key, value)) in tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write!(out, "{key}={value}").unwrap();
    }
    out.push(']');
}

fn type_str(kind: MetricType) -> &'static str {
    match kind {
        MetricType::Counter => "c",
        MetricType::Gauge => "g",
        MetricType::Timer => "ms",
        MetricType::Histogram => "h",
        MetricType::Distribution => "d",
        MetricType::Set => "s",
    }
}

/// Checks every case and reports all mismatches at once.
fn check(cases: &[(&[u8], &str)]) {
    let mut failures = String::new();
    for (input, expect) in cases {
        let got = render(parse(input));
        if got != *expect {
            writeln!(
                failures,
                "  {:?}\n    expected {expect}\n    got      {got}",
                String::from_utf8_lossy(input)
            )
            .unwrap();
        }
    }
    assert!(failures.is_empty(), "mismatches:\n{failures}");
}

/// `table![input => expected, ...]` with inputs as `&str` or byte strings.
macro_rules! table {
    ($($input:expr => $expect:expr),* $(,)?) => {
        check(&[$((AsRef::<[u8]>::as_ref($input), $expect)),*])
    };
}

#[test]
fn types() {
    table![
        "a:1|c" => "c a [1]",
        "a:1|g" => "g a [1]",
        "a:1|ms" => "ms a [1]",
        "a:1|h" => "h a [1]",
        "a:1|d" => "d a [1]",
        "a:x|s" => "s a ['x']",
        "a:1|C" => "!unknown_type",
        "a:1|MS" => "!unknown_type",
        "a:1|t" => "!unknown_type",
        "a:1|e" => "!unknown_type",
        "a:1|mss" => "!unknown_type",
        "a:1|cc" => "!unknown_type",
        "a:1| c" => "!unknown_type",
        "a:1|c " => "!unknown_type",
        "a:1|c:x" => "!unknown_type",
        "a:1|" => "!unknown_type",
        "a:1||c" => "!unknown_type",
        "a:1" => "!unknown_type",
        "a:1:2" => "!unknown_type",
    ];
}

#[test]
fn values() {
    table![
        "a:0|c" => "c a [0]",
        "a:1.5|c" => "c a [1.5]",
        "a:.5|c" => "c a [0.5]",
        "a:5.|c" => "c a [5]",
        "a:+1|g" => "g a [+1]",
        "a:-1|g" => "g a [-1]",
        "a:-0|g" => "g a [-0]",
        "a:+0.5|c" => "c a [+0.5]",
        "a:4.696E+5|ms" => "ms a [469600]",
        "a:-1e10|g" => "g a [-10000000000]",
        "a:1e-3|h" => "h a [0.001]",
        "a:1.5e15|g" => "g a [1500000000000000]",
        "a:-2.5E-3|g" => "g a [-0.0025]",
        "a:NaN|g" => "!bad_value",
        "a:nan|g" => "!bad_value",
        "a:-nan|g" => "!bad_value",
        "a:inf|g" => "!bad_value",
        "a:-inf|g" => "!bad_value",
        "a:+inf|g" => "!bad_value",
        "a:Infinity|g" => "!bad_value",
        "a:-Infinity|g" => "!bad_value",
        "a:1e999|g" => "!bad_value",
        "a:-1e999|g" => "!bad_value",
        "a:0x10|c" => "!bad_value",
        "a:1,5|c" => "!bad_value",
        "a: 1|c" => "!bad_value",
        "a:1 |c" => "!bad_value",
        "a:abc|c" => "!bad_value",
        "a:++1|c" => "!bad_value",
        "a:+-1|c" => "!bad_value",
        "a:--1|c" => "!bad_value",
        "a:-|c" => "!bad_value",
        "a:+|c" => "!bad_value",
        "a:.|c" => "!bad_value",
        "a:1e|c" => "!bad_value",
        "a:1.2.3|c" => "!bad_value",
        "a:1_000|c" => "!bad_value",
        "a:|c" => "!no_value",
        "a:" => "!no_value",
        "a" => "!no_value",
        "" => "!no_value",
        "a:b:1|c" => "!bad_value",
    ];
}

#[test]
fn packed_values() {
    table![
        "t:1:2:3|ms" => "ms t [1,2,3]",
        "t:1::2|ms" => "ms t [1,2]",
        "t::1|ms" => "ms t [1]",
        "t:1:|ms" => "ms t [1]",
        "t:::1:::|h" => "h t [1]",
        "t:+1:-2:3|g" => "g t [+1,-2,3]",
        "t:1:2|c" => "c t [1,2]",
        "t::|ms" => "!no_value",
        "t:::|c" => "!no_value",
        "t:1:x|ms" => "!bad_value",
        "t:1:nan|ms" => "!bad_value",
        "t:x::|ms" => "!bad_value",
        // A set member is the whole value section, colons included.
        "s:a:b|s" => "s s ['a:b']",
        "s::|s" => "s s [':']",
        "s:1:|s" => "s s ['1:']",
        "s:x y|s" => "s s ['x y']",
        "s:nan|s" => "s s ['nan']",
        "s:|s" => "!no_value",
    ];
}

#[test]
fn names() {
    table![
        "my metric:1|c" => "c my metric [1]",
        "métrique.é:1|c" => "c métrique.é [1]",
        "日本語:1|c" => "c 日本語 [1]",
        "a#b@c,d:1|c" => "c a#b@c,d [1]",
        " :1|c" => "c   [1]",
        ":1|c" => "!empty_name",
        ":|c" => "!empty_name",
        // The name ends at the first `:` only when no `|` comes before it.
        "a|b:1|c" => "!no_value",
        "abc|c" => "!no_value",
        "|c" => "!no_value",
        "|" => "!no_value",
        // Only `_e{` and `_sc|` start events and service checks.
        "_sc:1|c" => "c _sc [1]",
        "_e:1|c" => "c _e [1]",
        "_:1|c" => "c _ [1]",
        "_e{x}:1|c" => "!bad_event",
    ];
}

#[test]
fn fields_in_any_order() {
    table![
        "a:1|c|@0.5|#x:y|c:abc|T123" => "c a [1] @0.5 #[x=y] c=abc T=123",
        "a:1|c|T123|c:abc|#x:y|@0.5" => "c a [1] @0.5 #[x=y] c=abc T=123",
        "a:1|c|#x:y|T123|@0.5|c:abc" => "c a [1] @0.5 #[x=y] c=abc T=123",
        // Unknown and empty fields are ignored.
        "a:1|c|zzz|#x" => "c a [1] #[x=]",
        "a:1|c||#x" => "c a [1] #[x=]",
        "a:1|c|" => "c a [1]",
        "a:1|c|e:foo|card|xyz" => "c a [1]",
        "a:1|c|#x|" => "c a [1] #[x=]",
    ];
}

#[test]
fn sample_rates() {
    table![
        "a:1|c|@0.5" => "c a [1] @0.5",
        "a:1|c|@1" => "c a [1]",
        "a:1|c|@1.0" => "c a [1]",
        "a:1|c|@1." => "c a [1]",
        "a:1|c|@.25" => "c a [1] @0.25",
        "a:1|c|@0.4e-3" => "c a [1] @0.0004",
        "a:1|c|@000.0100" => "c a [1] @0.01",
        "a:1|ms|@0.1" => "ms a [1] @0.1",
        "a:1|c|@0" => "c a [1] @!",
        "a:1|c|@0.0" => "c a [1] @!",
        "a:1|c|@-0" => "c a [1] @!",
        "a:1|c|@2" => "c a [1] @!",
        "a:1|c|@1.0001" => "c a [1] @!",
        "a:1|c|@-1" => "c a [1] @!",
        "a:1|c|@-0.5" => "c a [1] @!",
        "a:1|c|@abc" => "c a [1] @!",
        "a:1|c|@" => "c a [1] @!",
        "a:1|c|@nan" => "c a [1] @!",
        "a:1|c|@inf" => "c a [1] @!",
        "a:1|c|@1e999" => "c a [1] @!",
        "a:1|c|@0.5x" => "c a [1] @!",
        // The last `@` wins.
        "a:1|c|@0.5|@abc" => "c a [1] @!",
        "a:1|c|@abc|@0.5" => "c a [1] @0.5",
    ];
}

#[test]
fn tags() {
    table![
        "a:1|c|#a:b,c" => "c a [1] #[a=b,c=]",
        "a:1|c|#bare" => "c a [1] #[bare=]",
        "a:1|c|#k:" => "c a [1] #[k=]",
        "a:1|c|#:v" => "c a [1] #[=v]",
        "a:1|c|#::" => "c a [1] #[=:]",
        "a:1|c|#url:http://x:80" => "c a [1] #[url=http://x:80]",
        "a:1|c|#" => "c a [1]",
        "a:1|c|#,," => "c a [1]",
        "a:1|c|#:" => "c a [1]",
        "a:1|c|#:,:,," => "c a [1]",
        "a:1|c|#f,,z" => "c a [1] #[f=,z=]",
        "a:1|c|#,a," => "c a [1] #[a=]",
        "a:1|c|#a|#b:c" => "c a [1] #[a=,b=c]",
        "a:1|c|#a|@0.5|#|#b" => "c a [1] @0.5 #[a=,b=]",
        "a:1|c|#a:b|#a:b" => "c a [1] #[a=b,a=b]",
        "a:1|c|#k:v w,é:ü" => "c a [1] #[k=v w,é=ü]",
        "a:1|c|#x@y" => "c a [1] #[x@y=]",
        "a:1|c|#,:,::,:::,a:,:b" => "c a [1] #[=:,=::,a=,=b]",
        "a:1|c|#a,#b,|c,d" => "c a [1] #[a=,#b=]",
        "a:1|c|#a:b:c,,:" => "c a [1] #[a=b:c]",
        "a:1|c|#k:é,ü:v,日:本" => "c a [1] #[k=é,ü=v,日=本]",
        "a:1|c|##" => "c a [1] #[#=]",
        "a:1|c|#@0.5,T1,c:x" => "c a [1] #[@0.5=,T1=,c=x]",
        "a:1|c|#a b ,\t" => "c a [1] #[a b =,\t=]",
        "s:m|s|#env:prod" => "s s ['m'] #[env=prod]",
    ];
}

/// Tag sections around the lengths where the parser changes method: sections of under 64
/// bytes are counted and walked by bit masks, lines of up to 64 bytes are classified whole.
#[test]
fn tag_section_lengths() {
    let mut cases: Vec<(String, String)> = Vec::new();
    for len in [0, 1, 2, 61, 62, 63, 64, 65, 66, 127, 128, 129] {
        // `k:xxx...` of `len` bytes in all.
        let tag = if len < 2 {
            long(len)
        } else {
            format!("k:{}", long(len - 2))
        };
        let rendered = match len {
            0 => String::new(),
            1 => " #[x=]".to_string(),
            _ => format!(" #[k={}]", long(len - 2)),
        };
        // The section alone, at the end of a short line and of a long one, and before and
        // after other fields; then split in two sections, which are walked as written.
        for (prefix, head) in [
            ("a:1|c|", "c a [1]"),
            ("name.of.some.length:1|c|", "c name.of.some.length [1]"),
        ] {
            cases.push((format!("{prefix}#{tag}"), format!("{head}{rendered}")));
            cases.push((
                format!("{prefix}#{tag}|T5"),
                format!("{head}{rendered} T=5"),
            ));
            cases.push((
                format!("{prefix}@0.5|#{tag},"),
                format!("{head} @0.5{rendered}"),
            ));
            cases.push((
                format!("{prefix}#,{tag}|c:x"),
                format!("{head}{rendered} c=x"),
            ));
            let both = match len {
                0 => " #[z=]".to_string(),
                1 => " #[x=,z=]".to_string(),
                _ => format!(" #[k={},z=]", long(len - 2)),
            };
            cases.push((format!("{prefix}#{tag}|#z"), format!("{head}{both}")));
        }
    }
    // Lines of 63 to 66 bytes whose last tag ends at the line's end.
    for len in 63..=66 {
        let line = format!("a:1|c|#env:prod,k:{}", long(len - 18));
        assert_eq!(line.len(), len);
        cases.push((line, format!("c a [1] #[env=prod,k={}]", long(len - 18))));
    }
    let cases: Vec<(&[u8], &str)> = cases
        .iter()
        .map(|(input, expect)| (input.as_bytes(), expect.as_str()))
        .collect();
    check(&cases);
}

#[test]
fn container_ids_and_timestamps() {
    table![
        "a:1|c|c:abc" => "c a [1] c=abc",
        "a:1|c|c:a:b" => "c a [1] c=a:b",
        "a:1|c|c:a|c:b" => "c a [1] c=b",
        "a:1|c|c:" => "!bad_field",
        "a:1|c|#x|c:" => "!bad_field",
        "a:1|c|T1700000000" => "c a [1] T=1700000000",
        "a:1|c|T0" => "c a [1] T=0",
        "a:1|c|T007" => "c a [1] T=7",
        "a:1|c|T18446744073709551615" => "c a [1] T=18446744073709551615",
        "a:1|c|T1|T2" => "c a [1] T=2",
        "a:1|c|T" => "!bad_value",
        "a:1|c|T-1" => "!bad_value",
        "a:1|c|T+1" => "!bad_value",
        "a:1|c|Tabc" => "!bad_value",
        "a:1|c|T1.5" => "!bad_value",
        "a:1|c|T1e9" => "!bad_value",
        "a:1|c|T 1" => "!bad_value",
        "a:1|c|T18446744073709551616" => "!bad_value",
    ];
}

#[test]
fn events() {
    table![
        "_e{5,4}:title|text" => r#"event "title" "text""#,
        "_e{5,4}:title|text|#a:b,c" => r#"event "title" "text" #[a=b,c=]"#,
        "_e{5,4}:title|text|d:1700000000|h:host|p:low|t:warning|k:agg|s:src|#a" => r#"event "title" "text" #[a=]"#,
        "_e{5,4}:title|text|#a|#b" => r#"event "title" "text" #[a=,b=]"#,
        "_e{5,4}:title|text|" => r#"event "title" "text""#,
        "_e{5,0}:title|" => r#"event "title" """#,
        "_e{5,0}:title||#a" => r#"event "title" "" #[a=]"#,
        "_e{3,4}:a|b|c|#d" => r##"event "a|b" "c|#d""##,
        "_e{2,3}:é|ü!" => r#"event "é" "ü!""#,
        "_e{05,4}:title|text" => r#"event "title" "text""#,
        "_e{5,4}:title|tex" => "!bad_event",
        "_e{5,4}:title|texts" => "!bad_event",
        "_e{4,4}:title|text" => "!bad_event",
        "_e{6,4}:title|text" => "!bad_event",
        "_e{5,4}:title" => "!bad_event",
        "_e{1,2}:é|ab" => "!bad_event",
        "_e{2,1}:é|ü" => "!bad_event",
        "_e{0,4}:|text" => "!bad_event",
        "_e{,4}:x|text" => "!bad_event",
        "_e{5}:title" => "!bad_event",
        "_e{a,b}:x|y" => "!bad_event",
        "_e{-1,4}:x|text" => "!bad_event",
        "_e{+1,4}:x|text" => "!bad_event",
        "_e{5,4}title|text" => "!bad_event",
        "_e{5,4:title|text" => "!bad_event",
        "_e{ 5,4}:title|text" => "!bad_event",
        "_e{99999999999999999999,4}:title|text" => "!bad_event",
        "_e{" => "!bad_event",
    ];
}

#[test]
fn service_checks() {
    table![
        "_sc|db.up|0" => "sc db.up 0",
        "_sc|db.up|1" => "sc db.up 1",
        "_sc|db.up|2" => "sc db.up 2",
        "_sc|db.up|3|#a:b" => "sc db.up 3 #[a=b]",
        "_sc|db.up|1|d:1700000000|h:host|#env:prod|c:abc|m:all good" => "sc db.up 1 #[env=prod] c=abc T=1700000000",
        "_sc|db.up|0|c:abc|#x|d:5" => "sc db.up 0 #[x=] c=abc T=5",
        "_sc|db.up|2|m:msg with |#notatag|and pipes" => "sc db.up 2",
        "_sc|db.up|2|#a|m:x|#b" => "sc db.up 2 #[a=]",
        "_sc|db.up|2|m:" => "sc db.up 2",
        "_sc|db.up|0|" => "sc db.up 0",
        "_sc|db.up|0|unknown|h:" => "sc db.up 0",
        "_sc|a:b|0" => "sc a:b 0",
        "_sc||0" => "!bad_service_check",
        "_sc|" => "!bad_service_check",
        "_sc|db" => "!bad_service_check",
        "_sc|db|" => "!bad_service_check",
        "_sc|db|4" => "!bad_service_check",
        "_sc|db|-1" => "!bad_service_check",
        "_sc|db|01" => "!bad_service_check",
        "_sc|db|x" => "!bad_service_check",
        "_sc|db|0x" => "!bad_service_check",
        "_sc|db|0|d:abc" => "!bad_service_check",
        "_sc|db|0|d:" => "!bad_service_check",
        "_sc|db|0|d:-1" => "!bad_service_check",
        "_sc|db|0|c:" => "!bad_service_check",
    ];
}

#[test]
fn not_utf8() {
    table![
        b"a\xff:1|c" => "!not_utf8",
        b"\xc3:1|c" => "!not_utf8",
        b"a:1|c|#k:\xfe" => "!not_utf8",
        b"a:1|c|#\xe2\x82" => "!not_utf8",
        b"a:\xff|s" => "!not_utf8",
        b"a:1|c|zz\xff" => "!not_utf8",
        b"_e{1,1}:\xff|x" => "!not_utf8",
        b"_sc|db|0|m:\xff" => "!not_utf8",
        b"\xed\xa0\x80:1|c" => "!not_utf8",
        b"\xc3\xa9:1|c" => "c \u{e9} [1]",
    ];
}

fn long(n: usize) -> String {
    "x".repeat(n)
}

fn tag_list(n: usize) -> String {
    (0..n)
        .map(|i| format!("t{i}:v"))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn limits() {
    let name_ok = format!("{}:1|c", long(1024));
    let name_long = format!("{}:1|c", long(1025));
    let tag_ok = format!("a:1|c|#{}", long(1024));
    let tag_ok_kv = format!("a:1|c|#k:{}", long(1022));
    let tag_long = format!("a:1|c|#{}", long(1025));
    let tag_long_kv = format!("a:1|c|#k:{}", long(1023));
    let tags_64 = format!("a:1|c|#{}", tag_list(64));
    let tags_65 = format!("a:1|c|#{}", tag_list(65));
    // Empty entries do not count towards the limit; every `#` section does.
    let tags_64_sparse = format!("a:1|c|#,,{},:,", tag_list(64));
    let tags_65_split = format!("a:1|c|#{}|#last", tag_list(64));
    let event_65 = format!("_e{{1,1}}:a|b|#{}", tag_list(65));
    let event_long_tag = format!("_e{{1,1}}:a|b|#{}", long(1025));
    let check_65 = format!("_sc|x|0|#{}", tag_list(65));
    let check_name_ok = format!("_sc|{}|0", long(1024));
    let check_name_long = format!("_sc|{}|0", long(1025));

    let name_1024 = format!("c {} [1]", long(1024));
    let tags_render = |n: usize| {
        let tags: Vec<String> = (0..n).map(|i| format!("t{i}=v")).collect();
        format!("c a [1] #[{}]", tags.join(","))
    };
    let tag_1024 = format!("c a [1] #[{}=]", long(1024));
    let tag_1024_kv = format!("c a [1] #[k={}]", long(1022));
    let check_1024 = format!("sc {} 0", long(1024));
    table![
        &name_ok => &name_1024,
        &name_long => "!name_too_long",
        &tag_ok => &tag_1024,
        &tag_ok_kv => &tag_1024_kv,
        &tag_long => "!tag_too_long",
        &tag_long_kv => "!tag_too_long",
        &tags_64 => &tags_render(64),
        &tags_65 => "!too_many_tags",
        &tags_64_sparse => &tags_render(64),
        &tags_65_split => "!too_many_tags",
        &event_65 => "!too_many_tags",
        &event_long_tag => "!tag_too_long",
        &check_65 => "!too_many_tags",
        &check_name_ok => &check_1024,
        &check_name_long => "!name_too_long",
    ];
}

#[test]
fn datagrams() {
    let datagram = b"a:1|c\r\nb:2|g\n\n\r\nc:x|q\n\xff:1|c\nd:1:2|ms|#k:v\r\n\r\n";
    let got: Vec<String> = lines(datagram).map(|line| render(parse(line))).collect();
    assert_eq!(
        got,
        [
            "c a [1]",
            "g b [2]",
            "!unknown_type",
            "!not_utf8",
            "ms d [1,2] #[k=v]"
        ]
    );
    assert_eq!(lines(b"").count(), 0);
    assert_eq!(lines(b"\n\r\n\r\n\n").count(), 0);
    assert_eq!(lines(b"a:1|c").count(), 1);
    // A `\r` not at the end of a line stays in it.
    let got: Vec<&[u8]> = lines(b"a:1|c\r\r\nb\rc").collect();
    assert_eq!(got, [&b"a:1|c\r"[..], b"b\rc"]);
}

#[test]
fn reject_labels_are_distinct() {
    let labels: std::collections::HashSet<_> = Reject::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(labels.len(), Reject::ALL.len());
    for (i, reject) in Reject::ALL.iter().enumerate() {
        assert_eq!(reject.index(), i);
    }
}

/// Walks everything a parse result borrows, checking the invariants the aggregator relies on.
fn walk(result: Result<Parsed<'_>, Reject>) {
    let Ok(parsed) = result else { return };
    let tags = match &parsed {
        Parsed::Metric(line) => {
            let mut n = 0;
            for value in line.values {
                n += 1;
                match value {
                    Value::Number { value, .. } => {
                        assert!(value.is_finite());
                        assert_ne!(line.kind, MetricType::Set);
                    }
                    Value::Member(member) => {
                        assert!(!member.is_empty());
                        assert_eq!(line.kind, MetricType::Set);
                    }
                }
            }
            assert!(n >= 1, "a metric line has at least one value");
            assert!(line.sample_rate > 0.0 && line.sample_rate <= 1.0);
            assert!(!line.name.is_empty() && line.name.len() <= 1024);
            assert_ne!(line.container_id, Some(""));
            line.tags
        }
        Parsed::Event(event) => event.tags,
        Parsed::ServiceCheck(check) => {
            assert!(check.status <= 3);
            check.tags
        }
    };
    assert_eq!(tags.iter().count(), tags.len());
    assert!(tags.len() <= 64);
    for (key, value) in tags {
        assert!(key.len() + value.len() <= 1024);
        assert!(!key.is_empty() || !value.is_empty());
        assert!(!key.contains([',', '|']) && !value.contains([',', '|']));
    }
}

/// Bytes from the dialect's alphabet, so that random input reaches the deeper rules.
fn dialect_bytes() -> impl Strategy<Value = Vec<u8>> {
    let alphabet = b":|#,@cgmshdTe_{}0123456789.-+nafiE \r\n\xc3\xa9\xff".to_vec();
    prop::collection::vec(prop::sample::select(alphabet), 0..80)
}

const TYPES: [(&str, MetricType); 6] = [
    ("c", MetricType::Counter),
    ("g", MetricType::Gauge),
    ("ms", MetricType::Timer),
    ("h", MetricType::Histogram),
    ("d", MetricType::Distribution),
    ("s", MetricType::Set),
];

/// A well-formed metric line and what it must parse to.
#[derive(Debug, Clone)]
struct Generated {
    text: String,
    name: String,
    kind: MetricType,
    /// Set: one member. Else `(value, signed)` per non-empty slot.
    member: String,
    numbers: Vec<(f64, bool)>,
    tags: Vec<(String, String)>,
    rate: f64,
    container: Option<String>,
    timestamp: Option<u64>,
}

prop_compose! {
    fn generated()(
        name in "[a-zA-Z0-9_.-]{1,40}",
        type_index in 0..TYPES.len(),
        member in "[a-zA-Z0-9:._ -]{1,20}",
        numbers in prop::collection::vec(
            (prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO,
             any::<bool>(), any::<bool>()),
            1..5,
        ),
        tag_sections in prop::collection::vec(
            prop::collection::vec(("[a-z][a-z0-9_.]{0,10}", prop::option::of("[a-zA-Z0-9_.:/-]{0,20}")), 0..6),
            0..3,
        ),
        rate in prop::option::of(0.001f64..=1.0),
        container in prop::option::of("[a-f0-9-]{1,36}"),
        timestamp in prop::option::of(any::<u64>()),
        seed in any::<u64>(),
    ) -> Generated {
        let (type_text, kind) = TYPES[type_index];
        let mut slots = Vec::new();
        let mut expected_numbers = Vec::new();
        for (value, plus, empty_before) in numbers {
            if empty_before {
                slots.push(String::new());
            }
            let text = if plus && value.is_sign_positive() { format!("+{value}") } else { format!("{value}") };
            expected_numbers.push((value, text.starts_with(['+', '-'])));
            slots.push(text);
        }
        let values = if kind == MetricType::Set { member.clone() } else { slots.join(":") };

        // Each field with the tags it adds, so the expected tags follow the shuffled order.
        let mut fields: Vec<(String, Vec<(String, String)>)> = Vec::new();
        for section in tag_sections {
            let mut entries = Vec::new();
            let mut tags = Vec::new();
            for (key, value) in section {
                match value {
                    Some(value) => {
                        entries.push(format!("{key}:{value}"));
                        tags.push((key, value));
                    }
                    None => {
                        entries.push(key.clone());
                        tags.push((key, String::new()));
                    }
                }
            }
            fields.push((format!("#{}", entries.join(",")), tags));
        }
        if let Some(rate) = rate {
            fields.push((format!("@{rate}"), Vec::new()));
        }
        if let Some(id) = &container {
            fields.push((format!("c:{id}"), Vec::new()));
        }
        if let Some(ts) = timestamp {
            fields.push((format!("T{ts}"), Vec::new()));
        }
        let mut state = seed | 1;
        for i in (1..fields.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            fields.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut text = format!("{name}:{values}|{type_text}");
        let mut tags = Vec::new();
        for (field, field_tags) in fields {
            text.push('|');
            text.push_str(&field);
            tags.extend(field_tags);
        }
        Generated {
            text,
            name,
            kind,
            member,
            numbers: expected_numbers,
            tags,
            rate: rate.unwrap_or(1.0),
            container,
            timestamp,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn any_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..200)) {
        walk(parse(&data));
        for line in lines(&data) {
            prop_assert!(!line.is_empty() && !line.contains(&b'\n'));
            walk(parse(line));
        }
    }

    #[test]
    fn dialect_bytes_never_panic(data in dialect_bytes()) {
        walk(parse(&data));
        for line in lines(&data) {
            walk(parse(line));
        }
    }

    #[test]
    fn prefixed_bytes_never_panic(
        prefix in prop::sample::select(vec!["a:1|c|", "a:", "a:1|", "_e{", "_e{3,2}:", "_sc|", "_sc|x|0|", "s:x|s|#"]),
        data in dialect_bytes(),
    ) {
        let mut line = prefix.as_bytes().to_vec();
        line.extend_from_slice(&data);
        walk(parse(&line));
    }

    #[test]
    fn well_formed_lines_round_trip(g in generated()) {
        let parsed = parse(g.text.as_bytes());
        let Ok(Parsed::Metric(line)) = parsed else {
            return Err(TestCaseError::fail(format!("{:?} -> {parsed:?}", g.text)));
        };
        prop_assert_eq!(line.name, g.name.as_str());
        prop_assert_eq!(line.kind, g.kind);
        if g.kind == MetricType::Set {
            let members: Vec<_> = line.values.iter().collect();
            prop_assert_eq!(members, vec![Value::Member(&g.member)]);
        } else {
            let numbers: Vec<(u64, bool)> = line
                .values
                .iter()
                .map(|v| match v {
                    Value::Number { value, signed } => (value.to_bits(), signed),
                    Value::Member(_) => panic!("member in a {:?} line", g.kind),
                })
                .collect();
            let expected: Vec<(u64, bool)> = g.numbers.iter().map(|&(v, s)| (v.to_bits(), s)).collect();
            prop_assert_eq!(numbers, expected);
        }
        let tags: Vec<(&str, &str)> = line.tags.iter().collect();
        let expected: Vec<(&str, &str)> = g.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        prop_assert_eq!(line.tags.len(), expected.len());
        prop_assert_eq!(tags, expected);
        prop_assert_eq!(line.sample_rate.to_bits(), g.rate.to_bits());
        prop_assert!(!line.bad_sample_rate);
        prop_assert_eq!(line.container_id, g.container.as_deref());
        prop_assert_eq!(line.timestamp, g.timestamp);
    }

    #[test]
    fn tags_match_a_plain_split(
        name in "[a-z.]{1,100}",
        sections in prop::collection::vec(("[a:,\u{e9}#]{0,90}", any::<bool>()), 1..3),
    ) {
        let mut line = format!("{name}:1|c");
        let mut expected = Vec::new();
        for (section, timestamp_after) in &sections {
            line.push_str("|#");
            line.push_str(section);
            if *timestamp_after {
                line.push_str("|T1");
            }
            for tag in section.split(',').filter(|t| !t.is_empty() && *t != ":") {
                expected.push(tag.split_once(':').unwrap_or((tag, "")));
            }
        }
        let parsed = parse(line.as_bytes());
        if expected.len() > 64 {
            prop_assert_eq!(parsed, Err(Reject::TooManyTags));
        } else {
            let Ok(Parsed::Metric(parsed)) = parsed else {
                return Err(TestCaseError::fail(format!("{line:?} -> {parsed:?}")));
            };
            prop_assert_eq!(parsed.tags.len(), expected.len());
            prop_assert_eq!(parsed.tags.iter().collect::<Vec<_>>(), expected);
        }
    }

    #[test]
    fn well_formed_datagrams_keep_every_line(batch in prop::collection::vec(generated(), 1..20), crlf in any::<bool>()) {
        let sep = if crlf { "\r\n" } else { "\n" };
        let datagram = batch.iter().map(|g| g.text.as_str()).collect::<Vec<_>>().join(sep);
        let names: Vec<&str> = lines(datagram.as_bytes())
            .map(|l| match parse(l) {
                Ok(Parsed::Metric(line)) => line.name,
                other => panic!("{other:?}"),
            })
            .collect();
        let expected: Vec<&str> = batch.iter().map(|g| g.name.as_str()).collect();
        prop_assert_eq!(names, expected);
    }
}
