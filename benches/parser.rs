//! Parser throughput in lines per second: `lines()` + `parse()` over whole datagrams of
//! realistic generated lines, consuming every value and tag.

use std::hint::black_box;
use std::time::Duration;

use corral_statsd::{lines, parse, Parsed, Value};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const LINES_PER_DATAGRAM: usize = 20;

/// Deterministic data without a rand dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const PREFIXES: &[&str] = &["app", "svc", "db", "queue", "cache", "http", "worker"];
const WORDS: &[&str] = &[
    "requests", "latency", "hits", "misses", "depth", "errors", "bytes", "jobs",
];
const ENVS: &[&str] = &["env:prod", "env:staging", "env:dev"];
const REGIONS: &[&str] = &["region:us-east-1", "region:eu-west-1", "region:ap-south-1"];
const OTHERS: &[&str] = &["q:jobs", "code:200", "host:node-7", "shard:3", "canary"];

/// Series names such as `app.requests.latency_417`.
fn series_names(rng: &mut XorShift, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            format!(
                "{}.{}.{}_{i}",
                rng.pick(PREFIXES),
                rng.pick(WORDS),
                rng.pick(WORDS)
            )
        })
        .collect()
}

/// One line: mostly counters and timers, some gauges, few sets.
fn metric_line(rng: &mut XorShift, name: &str, tagged: bool, out: &mut String) {
    use std::fmt::Write;
    match rng.below(100) {
        0..=44 => write!(out, "{name}:{}|c", 1 + rng.below(3) / 2).unwrap(),
        45..=79 => {
            let ms = rng.below(5000);
            write!(out, "{name}:{}.{}|ms", ms / 10, ms % 10).unwrap();
            if rng.below(10) == 0 {
                out.push_str("|@0.5");
            }
        }
        80..=94 => write!(out, "{name}:{}|g", rng.below(10_000)).unwrap(),
        _ => write!(out, "{name}:user{}|s", rng.below(100_000)).unwrap(),
    }
    if tagged {
        out.push_str("|#");
        out.push_str(rng.pick(ENVS));
        match rng.below(3) {
            0 => {}
            1 => write!(out, ",{}", rng.pick(REGIONS)).unwrap(),
            _ => write!(out, ",{},{}", rng.pick(REGIONS), rng.pick(OTHERS)).unwrap(),
        }
    }
}

/// Datagrams of lines drawn from `series` names: 20k lines (about 1 MB, cache-resident like a
/// datagram just received) for few series, one line per series for many (no longer cached).
fn datagrams(series: usize, tagged: bool) -> Vec<Vec<u8>> {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ series as u64);
    let names = series_names(&mut rng, series);
    let count = (series / LINES_PER_DATAGRAM).max(1_000);
    (0..count)
        .map(|_| {
            let mut datagram = String::new();
            for _ in 0..LINES_PER_DATAGRAM {
                let name = &names[rng.below(series as u64) as usize];
                metric_line(&mut rng, name, tagged, &mut datagram);
                datagram.push('\n');
            }
            datagram.into_bytes()
        })
        .collect()
}

/// Parses every line of every datagram and folds what it yields into a checksum.
fn parse_all(datagrams: &[Vec<u8>]) -> u64 {
    let mut acc = 0u64;
    for datagram in datagrams {
        for line in lines(black_box(datagram)) {
            match parse(line) {
                Ok(Parsed::Metric(line)) => {
                    acc = acc.wrapping_add(line.name.len() as u64);
                    for value in line.values {
                        acc = acc.wrapping_add(match value {
                            Value::Number { value, .. } => value.to_bits(),
                            Value::Member(member) => member.len() as u64,
                        });
                    }
                    for (key, value) in line.tags {
                        acc = acc.wrapping_add((key.len() + value.len()) as u64);
                    }
                    acc = acc.wrapping_add(line.sample_rate.to_bits());
                }
                Ok(_) => acc = acc.wrapping_add(1),
                Err(reject) => acc = acc.wrapping_add(reject.index() as u64),
            }
        }
    }
    acc
}

fn parser(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for series in [1_000, 100_000] {
        for tagged in [false, true] {
            let data = datagrams(series, tagged);
            let lines_total = (data.len() * LINES_PER_DATAGRAM) as u64;
            let bytes: usize = data.iter().map(Vec::len).sum();
            let label = format!(
                "{series}_series_{}_{}B_per_line",
                if tagged { "tagged" } else { "untagged" },
                bytes / lines_total as usize
            );
            group.throughput(Throughput::Elements(lines_total));
            group.bench_with_input(BenchmarkId::from_parameter(label), &data, |b, data| {
                b.iter(|| black_box(parse_all(data)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, parser);
criterion_main!(benches);
