//! Aggregator throughput: samples/s added to one receive thread's aggregator, on realistic
//! pre-parsed lines (~40 bytes, 20 to a datagram; counters, timers, gauges, a few sets), for 1k and 100k
//! distinct series, with and without tags; plus the cost of a flush and of sorting its
//! datapoints into the API's order.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use corral_model::{Datapoint, MetricBatch, Source};
use corral_statsd::{lines, parse, Aggregator, AggregatorConfig, Batcher, FlushState, Parsed};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const LINES_PER_DATAGRAM: usize = 20;

fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// The tags of the lines.
#[derive(Clone, Copy)]
enum Tagging {
    None,
    /// The same two tags on every line (a service's environment and zone).
    Shared,
    /// A tag set of each series' own (e.g. an instance id): as many tag sets as series.
    PerSeries,
}

impl Tagging {
    fn id(self) -> &'static str {
        match self {
            Tagging::None => "",
            Tagging::Shared => "_tagged",
            Tagging::PerSeries => "_tagged_per_series",
        }
    }
}

fn make_lines(series: usize, tagging: Tagging, count: usize) -> Vec<String> {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    (0..count)
        .map(|_| {
            let s = xorshift(&mut seed) as usize % series;
            let tags = match tagging {
                Tagging::None => String::new(),
                Tagging::Shared => "|#env:prod,az:us-east-1b".to_string(),
                Tagging::PerSeries => format!("|#env:prod,instance:i-{s:05}"),
            };
            match xorshift(&mut seed) % 100 {
                0..=59 => format!("web.checkout.svc{s:05}.requests:1|c{tags}"),
                60..=84 => format!(
                    "web.checkout.svc{s:05}.latency_ms:{}|ms{tags}",
                    xorshift(&mut seed) % 900
                ),
                85..=97 => format!(
                    "web.checkout.svc{s:05}.queue_depth:{}|g{tags}",
                    xorshift(&mut seed) % 50
                ),
                _ => format!(
                    "web.checkout.svc{s:05}.users:u{}|s{tags}",
                    xorshift(&mut seed) % 1000
                ),
            }
        })
        .collect()
}

fn bench_add(c: &mut Criterion) {
    let mut group = c.benchmark_group("aggregate");
    group
        .measurement_time(Duration::from_secs(4))
        .sample_size(20);
    for series in [1_000usize, 10_000, 100_000] {
        for tagging in [Tagging::None, Tagging::Shared, Tagging::PerSeries] {
            // Packed 20 to a datagram, as they arrive: the lines of a datagram are contiguous.
            let datagrams: Vec<String> = make_lines(series, tagging, 200_000)
                .chunks(LINES_PER_DATAGRAM)
                .map(|c| c.join("\n"))
                .collect();
            let parsed: Vec<_> = datagrams
                .iter()
                .flat_map(|d| lines(d.as_bytes()))
                .map(|l| match parse(l) {
                    Ok(Parsed::Metric(m)) => m,
                    other => panic!("{}: {other:?}", String::from_utf8_lossy(l)),
                })
                .collect();
            let config = Arc::new(AggregatorConfig::default());
            let mut agg = Aggregator::new(config.clone());
            // Warm: every series interned, as in steady state.
            for m in &parsed {
                let _ = agg.add(m, None, 0);
            }
            agg.take_interval();
            group.throughput(Throughput::Elements(parsed.len() as u64));
            let id = format!("{series}_series{}", tagging.id());
            // Each pass over the lines is one interval: timed while adding, then handed over
            // (untimed), so that timers stay in exact mode as they would at a real flush rate.
            group.bench_function(&id, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        for m in &parsed {
                            let _ = black_box(agg.add(m, None, 0));
                        }
                        total += start.elapsed();
                        black_box(agg.take_interval());
                    }
                    total
                })
            });
            // As the receive threads add them: a batch at a time, lookups overlapped.
            group.bench_function(format!("{id}_batched"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let mut batch = Batcher::new(&mut agg, 0);
                        for m in &parsed {
                            batch.push(m.clone(), None);
                        }
                        black_box(batch.finish());
                        total += start.elapsed();
                        black_box(agg.take_interval());
                    }
                    total
                })
            });
        }
    }
    group.finish();
}

fn bench_flush(c: &mut Criterion) {
    let mut group = c.benchmark_group("flush");
    group
        .measurement_time(Duration::from_secs(4))
        .sample_size(10);
    for series in [1_000usize, 100_000] {
        let lines = make_lines(series, Tagging::Shared, series * 4);
        group.throughput(Throughput::Elements(series as u64));
        group.bench_function(format!("{series}_series"), |b| {
            let config = Arc::new(AggregatorConfig::default());
            let mut agg = Aggregator::new(config.clone());
            let mut state = FlushState::new(config);
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for l in &lines {
                        if let Ok(Parsed::Metric(m)) = parse(l.as_bytes()) {
                            let _ = agg.add(&m, None, 0);
                        }
                    }
                    let start = std::time::Instant::now();
                    black_box(state.flush(vec![agg.take_interval()]));
                    total += start.elapsed();
                }
                total
            })
        });
    }
    group.finish();
}

/// Sorting one flush's datapoints by name, then tags (what every flush does to each batch
/// before publishing it): the datapoints of 100k series, in the order the flush emits them.
fn bench_sort(c: &mut Criterion) {
    let mut group = c.benchmark_group("sort");
    group
        .measurement_time(Duration::from_secs(4))
        .sample_size(10);
    for tagging in [Tagging::None, Tagging::Shared] {
        let series = 100_000;
        let config = Arc::new(AggregatorConfig::default());
        let mut agg = Aggregator::new(config.clone());
        let mut state = FlushState::new(config);
        for l in make_lines(series, tagging, series * 4) {
            if let Ok(Parsed::Metric(m)) = parse(l.as_bytes()) {
                let _ = agg.add(&m, None, 0);
            }
        }
        let points: Vec<Datapoint> = state
            .flush(vec![agg.take_interval()])
            .groups
            .into_iter()
            .flat_map(|(_, p)| p)
            .collect();
        group.throughput(Throughput::Elements(points.len() as u64));
        group.bench_function(format!("{series}_series{}", tagging.id()), |b| {
            b.iter_batched(
                || MetricBatch {
                    source: Source::App,
                    container_id: None,
                    dimensions: Arc::default(),
                    timestamp: SystemTime::UNIX_EPOCH,
                    points: points.clone(),
                },
                |mut batch| {
                    batch.sort();
                    batch
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench_add, bench_flush, bench_sort);
criterion_main!(benches);
