//! Any datagram: splitting and parsing must not panic, and everything a parsed line borrows
//! must be walkable and consistent with what the parser counted.

#![no_main]

use corral_statsd::{lines, parse, MetricType, Parsed, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The datagram as one line too: `parse` must cope with `\n` and `\r` inside.
    check(data);
    for line in lines(data) {
        // Only one `\r` is stripped: in `a\r\r\n` the first is part of the line.
        assert!(!line.is_empty() && !line.contains(&b'\n'));
        check(line);
    }
});

fn check(line: &[u8]) {
    let Ok(parsed) = parse(line) else { return };
    let tags = match parsed {
        Parsed::Metric(m) => {
            assert!(!m.name.is_empty() && m.name.len() <= 1024);
            assert!(m.sample_rate > 0.0 && m.sample_rate <= 1.0);
            assert!(!m.bad_sample_rate || m.sample_rate == 1.0);
            assert_ne!(m.container_id, Some(""));
            let mut samples = 0;
            for value in m.values {
                samples += 1;
                match value {
                    Value::Number { value, .. } => {
                        assert!(value.is_finite() && m.kind != MetricType::Set)
                    }
                    Value::Member(member) => {
                        assert!(!member.is_empty() && m.kind == MetricType::Set)
                    }
                }
            }
            assert!(samples >= 1);
            m.tags
        }
        Parsed::Event(e) => {
            assert!(!e.title.is_empty());
            e.tags
        }
        Parsed::ServiceCheck(sc) => {
            assert!(!sc.name.is_empty() && sc.status <= 3);
            sc.tags
        }
    };
    let mut count = 0;
    for (key, value) in tags {
        count += 1;
        assert!(!key.is_empty() || !value.is_empty());
        assert!(key.len() + value.len() <= 1024);
    }
    assert_eq!(count, tags.len());
    assert!(count <= 64);
}
