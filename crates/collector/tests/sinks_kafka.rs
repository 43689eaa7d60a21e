//! The Kafka sink against librdkafka's mock cluster: delivery, retriable errors, a fatal error
//! (producer rebuilt), brokers down then up (spooled, then drained in order), a restart in the
//! middle, the spool bound, and new settings while running (new brokers take the backlog, new
//! topics, refused settings, a lower spool bound).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use corral_collector::config::{AvroCodec, KafkaCompression};
use corral_collector::outputs::Sink;
use corral_collector::sinks::avro::{self, Routing};
use corral_collector::sinks::{KafkaOptions, KafkaSink};
use corral_collector::telemetry::Telemetry;
use corral_model::{Datapoint, Dimensions, MetricBatch, SeriesKey, Source, Stat, Unit};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TOPIC: &str = "metrics-unknown_container";
const MOVED_TOPIC: &str = "moved-unknown_container";

fn batch(seq: u64) -> MetricBatch {
    MetricBatch {
        source: Source::App,
        container_id: None,
        dimensions: Arc::new(Dimensions {
            mesos_id: "agent-1".into(),
            hostname: "node-1".into(),
            ..Dimensions::default()
        }),
        timestamp: SystemTime::now(),
        points: vec![Datapoint::new(
            SeriesKey::plain("seq"),
            Stat::Value,
            Unit::None,
            seq as f64,
        )],
    }
}

fn options(brokers: String, dir: &std::path::Path) -> KafkaOptions {
    KafkaOptions {
        brokers: vec![brokers],
        routing: Routing {
            topic_prefix: "metrics-".into(),
            single_topic: None,
        },
        avro_codec: AvroCodec::Snappy,
        compression: KafkaCompression::Lz4,
        spool_dir: dir.join("spool"),
        spool_max_bytes: 1 << 30,
        segment_bytes: 64 << 10,
        max_message_bytes: avro::DEFAULT_MAX_MESSAGE_BYTES,
        message_timeout: Duration::from_millis(1500),
        max_in_flight: 100,
        max_in_flight_bytes: 16 << 20,
        backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        extra: Vec::new(),
    }
}

fn metric(t: &Telemetry, name: &str, tags: &[(&str, &str)]) -> f64 {
    let key = SeriesKey::new(name, tags.iter().copied());
    let mut points = Vec::new();
    t.datapoints(&mut points);
    points
        .iter()
        .find(|p| p.key == key)
        .map_or(0.0, |p| p.value)
}

fn submit(sink: &KafkaSink, seqs: std::ops::Range<u64>) {
    for s in seqs {
        sink.submit(&[Arc::new(batch(s))]);
    }
}

/// Every `seq` value in the topic, in offset order.
fn consume(bootstrap: &str, expect_at_least: usize) -> Vec<u64> {
    consume_topic(bootstrap, TOPIC, expect_at_least)
}

/// Every `seq` value in `topic`, in offset order.
fn consume_topic(bootstrap: &str, topic: &str, expect_at_least: usize) -> Vec<u64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let mut seqs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last = Instant::now();
                assert_eq!(m.key(), Some(&b"agent-1"[..]));
                let lists = avro::read_ocf(m.payload().expect("payload")).expect("avro");
                for l in lists {
                    assert_eq!(l.topic, "unknown_container");
                    for d in l.datapoints {
                        assert_eq!(d.name, "seq");
                        seqs.push(d.value as u64);
                    }
                }
            }
            Some(Err(e)) => panic!("consume: {e}"),
            // Anything else (duplicates) would have arrived by now.
            None if seqs.len() >= expect_at_least
                && last.elapsed() > Duration::from_millis(700) =>
            {
                break
            }
            None => {}
        }
    }
    seqs
}

/// First occurrences in order (duplicates from re-sends removed).
fn first_seen(seqs: &[u64]) -> Vec<u64> {
    let mut seen = std::collections::HashSet::new();
    seqs.iter().copied().filter(|s| seen.insert(*s)).collect()
}

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic(TOPIC, 1, 1).expect("topic");
    mock
}

fn reconfigure(sink: &KafkaSink, opts: KafkaOptions) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(sink.reconfigure(opts))
}

/// Waits until everything submitted is delivered (at most 30 s, or the test fails), then
/// stops the sink.
fn drain(sink: &KafkaSink) {
    assert!(
        sink.wait_idle(Duration::from_secs(30)),
        "pending {}",
        sink.pending()
    );
    stop(sink, Duration::from_secs(5));
}

fn stop(sink: &KafkaSink, within: Duration) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(sink.shutdown(within));
}

fn spool_segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("spool"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "seg"))
            })
            .count()
        })
        .unwrap_or(0)
}

#[test]
fn delivers_in_order_and_empties_the_spool() {
    let mock = cluster();
    let dir = tempfile::tempdir().unwrap();
    let t = Arc::new(Telemetry::new());
    let sink = KafkaSink::start(options(mock.bootstrap_servers(), dir.path()), &t).unwrap();
    submit(&sink, 0..50);
    assert!(
        sink.wait_idle(Duration::from_secs(20)),
        "pending {}",
        sink.pending()
    );
    stop(&sink, Duration::from_secs(5));
    assert_eq!(
        consume(&mock.bootstrap_servers(), 50),
        (0..50).collect::<Vec<_>>()
    );
    assert_eq!(metric(&t, "corral.kafka.messages_sent", &[]), 50.0);
    assert!(metric(&t, "corral.kafka.bytes_sent", &[]) > 50.0 * 600.0);
    assert_eq!(metric(&t, "corral.kafka.spooled_bytes", &[]), 0.0);
    assert_eq!(spool_segments(dir.path()), 0);
}

#[test]
fn retriable_errors_are_retried_without_loss() {
    let mock = cluster();
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 4],
    );
    let dir = tempfile::tempdir().unwrap();
    let t = Arc::new(Telemetry::new());
    let sink = KafkaSink::start(options(mock.bootstrap_servers(), dir.path()), &t).unwrap();
    submit(&sink, 0..20);
    drain(&sink);
    assert_eq!(
        first_seen(&consume(&mock.bootstrap_servers(), 20)),
        (0..20).collect::<Vec<_>>()
    );
}

#[test]
fn a_fatal_error_rebuilds_the_producer_and_resends() {
    let mock = cluster();
    let dir = tempfile::tempdir().unwrap();
    let t = Arc::new(Telemetry::new());
    let sink = KafkaSink::start(options(mock.bootstrap_servers(), dir.path()), &t).unwrap();
    submit(&sink, 0..10);
    assert!(sink.wait_idle(Duration::from_secs(20)));
    // Fail the next produce requests so messages are in flight when the producer dies.
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 3],
    );
    submit(&sink, 10..20);
    sink.inject_fatal_error();
    submit(&sink, 20..30);
    assert!(
        sink.wait_idle(Duration::from_secs(30)),
        "pending {}",
        sink.pending()
    );
    assert_eq!(metric(&t, "corral.kafka.producer_rebuilds", &[]), 1.0);
    submit(&sink, 30..40);
    assert!(sink.wait_idle(Duration::from_secs(20)));
    stop(&sink, Duration::from_secs(5));
    let got = consume(&mock.bootstrap_servers(), 40);
    let mut unique = first_seen(&got);
    unique.sort_unstable();
    assert_eq!(unique, (0..40).collect::<Vec<_>>(), "{got:?}");
}

/// Once a delivery has failed, messages go one at a time until the brokers take one: a whole
/// window queued while they are away could partly time out and partly get through when they
/// return, newer messages landing before older ones.
#[test]
fn after_a_failed_delivery_one_message_at_a_time_until_one_gets_through() {
    let mock = cluster();
    let dir = tempfile::tempdir().unwrap();
    let t = Arc::new(Telemetry::new());
    let sink = KafkaSink::start(options(mock.bootstrap_servers(), dir.path()), &t).unwrap();
    mock.broker_down(1).unwrap();
    submit(&sink, 0..20);
    let failed = || {
        metric(
            &t,
            "corral.kafka.messages_failed",
            &[("reason", "timed_out")],
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while failed() < 20.0 {
        assert!(Instant::now() < deadline, "failed {}", failed());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The first window has failed whole; what is sent again while the brokers are away, and
    // what arrives meanwhile, goes one message at a time (resent at least once in 2 s, with the
    // pause between attempts at most 500 ms and the message timeout 1.5 s).
    submit(&sink, 20..30);
    let mut most = 0.0f64;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        most = most.max(metric(&t, "corral.kafka.queue_depth", &[]));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(most <= 1.0, "{most} in flight while probing");
    mock.broker_up(1).unwrap();
    drain(&sink);
    let got = consume(&mock.bootstrap_servers(), 30);
    assert_eq!(first_seen(&got), (0..30).collect::<Vec<_>>(), "{got:?}");
}

#[test]
fn brokers_down_then_up_spools_then_drains_in_order() {
    let mock = cluster();
    let dir = tempfile::tempdir().unwrap();
    let t = Arc::new(Telemetry::new());
    let sink = KafkaSink::start(options(mock.bootstrap_servers(), dir.path()), &t).unwrap();
    submit(&sink, 0..5);
    assert!(sink.wait_idle(Duration::from_secs(20)));
    mock.broker_down(1).unwrap();
    for s in 5..25 {
        submit(&sink, s..s + 1);
        std::thread::sleep(Duration::from_millis(100));
    }
    // Past the message timeout: deliveries have failed, everything is still spooled.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        metric(
            &t,
            "corral.kafka.messages_failed",
            &[("reason", "timed_out")]
        ) > 0.0
    );
    assert_eq!(sink.pending(), 20);
    assert!(metric(&t, "corral.kafka.spooled_bytes", &[]) > 0.0);
    mock.broker_up(1).unwrap();
    submit(&sink, 25..30);
    drain(&sink);
    let got = consume(&mock.bootstrap_servers(), 30);
    assert_eq!(first_seen(&got), (0..30).collect::<Vec<_>>(), "{got:?}");
    assert_eq!(spool_segments(dir.path()), 0);
}

#[test]
fn a_restart_resumes_the_spool() {
    let mock = cluster();
    let dir = tempfile::tempdir().unwrap();
    mock.broker_down(1).unwrap();
    let t = Arc::new(Telemetry::new());
    let sink = KafkaSink::start(options(mock.bootstrap_servers(), dir.path()), &t).unwrap();
    submit(&sink, 0..10);
    stop(&sink, Duration::from_millis(500));
    assert!(spool_segments(dir.path()) > 0);
    drop(sink);

    mock.broker_up(1).unwrap();
    let t2 = Arc::new(Telemetry::new());
    let sink = KafkaSink::start(options(mock.bootstrap_servers(), dir.path()), &t2).unwrap();
    assert_eq!(sink.pending(), 10);
    submit(&sink, 10..15);
    drain(&sink);
    let got = consume(&mock.bootstrap_servers(), 15);
    assert_eq!(first_seen(&got), (0..15).collect::<Vec<_>>(), "{got:?}");
    assert_eq!(spool_segments(dir.path()), 0);
}

#[test]
fn the_spool_bound_evicts_the_oldest_while_brokers_are_away() {
    let mock = cluster();
    mock.broker_down(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t = Arc::new(Telemetry::new());
    let mut opts = options(mock.bootstrap_servers(), dir.path());
    opts.spool_max_bytes = 40 << 10;
    opts.segment_bytes = 8 << 10;
    let sink = KafkaSink::start(opts, &t).unwrap();
    submit(&sink, 0..100);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&t, "corral.kafka.spool_evicted_messages", &[]) == 0.0 {
        assert!(Instant::now() < deadline, "nothing evicted");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(metric(&t, "corral.kafka.spooled_bytes", &[]) <= (40 << 10) as f64);
    assert!(metric(&t, "corral.kafka.spool_evicted_bytes", &[]) > 0.0);
    mock.broker_up(1).unwrap();
    drain(&sink);
    let evicted = metric(&t, "corral.kafka.spool_evicted_messages", &[]) as u64;
    let got = first_seen(&consume(&mock.bootstrap_servers(), 1));
    // The oldest were evicted (a few of those may still have been delivered, from librdkafka's
    // own queue); everything after them arrives, in order.
    let kept: Vec<u64> = (evicted..100).collect();
    assert!(got.ends_with(&kept), "evicted {evicted}, got {got:?}");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
}

#[test]
fn new_brokers_take_the_spooled_backlog_and_new_batches_the_new_topic() {
    let old = cluster();
    old.broker_down(1).unwrap();
    let new = cluster();
    new.create_topic(MOVED_TOPIC, 1, 1).expect("topic");
    let dir = tempfile::tempdir().unwrap();
    let t = Arc::new(Telemetry::new());
    let sink = KafkaSink::start(options(old.bootstrap_servers(), dir.path()), &t).unwrap();
    submit(&sink, 0..20);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.pending(), 20, "the old brokers are down: all spooled");

    let mut opts = options(new.bootstrap_servers(), dir.path());
    opts.routing.topic_prefix = "moved-".into();
    reconfigure(&sink, opts).unwrap();
    submit(&sink, 20..30);
    drain(&sink);
    // The backlog keeps the topic it was flushed for; what came after the change has the new
    // one. Nothing went to the old brokers, nothing was lost.
    let backlog = consume_topic(&new.bootstrap_servers(), TOPIC, 20);
    assert_eq!(
        first_seen(&backlog),
        (0..20).collect::<Vec<_>>(),
        "{backlog:?}"
    );
    let moved = consume_topic(&new.bootstrap_servers(), MOVED_TOPIC, 10);
    assert_eq!(
        first_seen(&moved),
        (20..30).collect::<Vec<_>>(),
        "{moved:?}"
    );
    assert_eq!(metric(&t, "corral.kafka.producer_rebuilds", &[]), 0.0);
    assert_eq!(spool_segments(dir.path()), 0);
    old.broker_up(1).unwrap();
    assert!(consume(&old.bootstrap_servers(), 0).is_empty());
}

#[test]
fn a_new_topic_prefix_on_the_same_brokers_keeps_the_producer_and_loses_nothing() {
    let mock = cluster();
    mock.create_topic(MOVED_TOPIC, 1, 1).expect("topic");
    let dir = tempfile::tempdir().unwrap();
    let t = Arc::new(Telemetry::new());
    let sink = KafkaSink::start(options(mock.bootstrap_servers(), dir.path()), &t).unwrap();
    submit(&sink, 0..30);
    let mut opts = options(mock.bootstrap_servers(), dir.path());
    opts.routing.topic_prefix = "moved-".into();
    reconfigure(&sink, opts.clone()).unwrap();
    submit(&sink, 30..60);
    // The same settings again change nothing.
    reconfigure(&sink, opts).unwrap();
    drain(&sink);
    // With the producer kept, nothing needed sending twice.
    assert_eq!(
        consume(&mock.bootstrap_servers(), 30),
        (0..30).collect::<Vec<_>>()
    );
    assert_eq!(
        consume_topic(&mock.bootstrap_servers(), MOVED_TOPIC, 30),
        (30..60).collect::<Vec<_>>()
    );
    assert_eq!(metric(&t, "corral.kafka.messages_sent", &[]), 60.0);
}

#[test]
fn refused_settings_leave_the_sink_as_it_was() {
    let mock = cluster();
    mock.create_topic(MOVED_TOPIC, 1, 1).expect("topic");
    let dir = tempfile::tempdir().unwrap();
    let t = Arc::new(Telemetry::new());
    let sink = KafkaSink::start(options(mock.bootstrap_servers(), dir.path()), &t).unwrap();
    submit(&sink, 0..10);

    // librdkafka refuses a property: neither the producer nor the routing changes.
    let mut bad = options(mock.bootstrap_servers(), dir.path());
    bad.routing.topic_prefix = "moved-".into();
    bad.extra = vec![("no.such.property".into(), "1".into())];
    let err = format!("{:#}", reconfigure(&sink, bad).unwrap_err());
    assert!(err.contains("cannot create the Kafka producer"), "{err}");
    assert!(err.contains("no.such.property"), "{err}");

    // The spool cannot move while the sink runs.
    let mut elsewhere = options(mock.bootstrap_servers(), &dir.path().join("other"));
    elsewhere.routing.topic_prefix = "moved-".into();
    let err = format!("{:#}", reconfigure(&sink, elsewhere).unwrap_err());
    assert!(err.contains("spool directory"), "{err}");

    submit(&sink, 10..20);
    assert!(
        sink.wait_idle(Duration::from_secs(20)),
        "pending {}",
        sink.pending()
    );
    stop(&sink, Duration::from_secs(5));
    assert_eq!(
        consume(&mock.bootstrap_servers(), 20),
        (0..20).collect::<Vec<_>>()
    );
    assert!(consume_topic(&mock.bootstrap_servers(), MOVED_TOPIC, 0).is_empty());
    assert!(!dir.path().join("other").exists());
}

#[test]
fn a_lower_spool_bound_applies_at_once() {
    let mock = cluster();
    mock.broker_down(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t = Arc::new(Telemetry::new());
    let mut opts = options(mock.bootstrap_servers(), dir.path());
    opts.segment_bytes = 8 << 10;
    let sink = KafkaSink::start(opts.clone(), &t).unwrap();
    submit(&sink, 0..200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&t, "corral.kafka.spooled_bytes", &[]) < (48 << 10) as f64 {
        assert!(Instant::now() < deadline, "not spooled");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metric(&t, "corral.kafka.spool_evicted_messages", &[]), 0.0);
    opts.spool_max_bytes = 40 << 10;
    reconfigure(&sink, opts).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&t, "corral.kafka.spooled_bytes", &[]) > (40 << 10) as f64 {
        assert!(Instant::now() < deadline, "the new bound was not applied");
        std::thread::sleep(Duration::from_millis(20));
    }
    let evicted = metric(&t, "corral.kafka.spool_evicted_messages", &[]) as u64;
    assert!(evicted > 0);
    mock.broker_up(1).unwrap();
    drain(&sink);
    let got = first_seen(&consume(&mock.bootstrap_servers(), 1));
    let kept: Vec<u64> = (evicted..200).collect();
    assert!(got.ends_with(&kept), "evicted {evicted}, got {got:?}");
}
