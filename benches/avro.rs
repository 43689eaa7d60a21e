//! Avro encoding throughput (datapoints/s into MetricList container files, per codec), and
//! flush-to-acknowledged latency through the Kafka sink against a real broker (tansu) at 10k
//! and 100k series per flush. The broker part is skipped, with a message, when tansu is not
//! installed (`.ci/setup.d/20-tansu.sh`, or `CORRAL_TEST_TANSU`).

#[path = "../tests/kafka/tansu.rs"]
mod tansu;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use corral_collector::config::{AvroCodec, KafkaCompression};
use corral_collector::outputs::Sink;
use corral_collector::sinks::avro::{self, Encoder, Routing};
use corral_collector::sinks::{KafkaOptions, KafkaSink};
use corral_collector::telemetry::Telemetry;
use corral_model::{Datapoint, Dimensions, MetricBatch, SeriesKey, Source, Stat, Unit};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// A flush of `series` app series: timer statistics and counters, a quarter of them tagged.
fn batch(series: usize) -> MetricBatch {
    let stats = [Stat::Value, Stat::Count, Stat::Mean, Stat::percentile(99.0)];
    let mut points = Vec::with_capacity(series);
    for i in 0..series {
        let tags: &[(&str, &str)] = match i % 8 {
            0 => &[("env", "prod"), ("az", "us-east-1b")],
            1 => &[("env", "dev")],
            _ => &[],
        };
        points.push(Datapoint::new(
            SeriesKey::new(&format!("app.svc{}.requests", i / 4), tags.iter().copied()),
            stats[i % 4],
            Unit::None,
            i as f64 * 1.5,
        ));
    }
    let mut b = MetricBatch {
        source: Source::App,
        container_id: None,
        dimensions: Arc::new(Dimensions {
            mesos_id: "bench-agent".into(),
            cluster_id: "bench-cluster".into(),
            hostname: "bench-node".into(),
            ..Dimensions::default()
        }),
        timestamp: SystemTime::now(),
        points,
    };
    b.sort();
    b
}

fn routing() -> Routing {
    Routing {
        topic_prefix: "metrics-".into(),
        single_topic: None,
    }
}

fn bench_encode(c: &mut Criterion) {
    let b = batch(10_000);
    let mut group = c.benchmark_group("avro_encode");
    group.throughput(Throughput::Elements(b.points.len() as u64));
    for codec in AvroCodec::ALL.iter().copied() {
        group.bench_with_input(
            BenchmarkId::new("codec", codec.as_str()),
            &codec,
            |bench, &codec| {
                let mut enc = Encoder::new(routing(), avro::DEFAULT_MAX_MESSAGE_BYTES);
                let mut chunks = Vec::new();
                let marker = avro::random_marker();
                bench.iter(|| {
                    chunks.clear();
                    enc.encode_batch(&b, &mut chunks);
                    let mut bytes = 0;
                    for ch in &chunks {
                        bytes += avro::ocf_file(codec, &marker, ch).map_or(0, |f| f.len());
                    }
                    black_box(bytes)
                });
            },
        );
    }
    group.finish();
}

fn bench_flush_to_ack(c: &mut Criterion) {
    if tansu::binary().is_none() {
        eprintln!(
            "kafka_flush_to_ack: skipped, tansu not found (set CORRAL_TEST_TANSU or run \
             .ci/setup.d/20-tansu.sh)"
        );
        return;
    }
    let broker = tansu::Tansu::start(&["metrics-unknown_container"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let telemetry = Arc::new(Telemetry::new());
    let mut opts = KafkaOptions::from_config(&Default::default(), dir.path());
    opts.brokers = vec![broker.bootstrap()];
    opts.routing = routing();
    opts.avro_codec = AvroCodec::Null;
    opts.compression = KafkaCompression::Lz4;
    let sink = KafkaSink::start(opts, &telemetry).expect("kafka sink");

    let mut group = c.benchmark_group("kafka_flush_to_ack");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for series in [10_000usize, 100_000] {
        let b = vec![Arc::new(batch(series))];
        group.throughput(Throughput::Elements(series as u64));
        group.bench_with_input(BenchmarkId::new("series", series), &b, |bench, b| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    sink.submit(b);
                    assert!(sink.wait_idle(Duration::from_secs(60)), "not acknowledged");
                    total += t0.elapsed();
                }
                total
            });
        });
    }
    group.finish();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(sink.shutdown(Duration::from_secs(5)));
}

criterion_group!(benches, bench_encode, bench_flush_to_ack);
criterion_main!(benches);
