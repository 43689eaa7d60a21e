//! Avro encoding of batches: round trips through apache-avro for every codec, routing and
//! splitting, the golden file (decoded by fastavro too), the file sink and `avro-dump`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use corral_collector::config::AvroCodec;
use corral_collector::outputs::Sink;
use corral_collector::sinks::avro::{
    self, AvroDatapoint, Chunk, Encoder, MetricList, Routing, Tag,
};
use corral_collector::sinks::{avro_dump, AvroFileSink, FileOptions};
use corral_collector::telemetry::Telemetry;
use corral_model::{Datapoint, Dimensions, MetricBatch, SeriesKey, Source, Stat, Unit};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/avro");

/// The schema JSON the dcos-metrics module put in its headers (reference §6.2), 549 bytes.
const DCOS_HEADER_SCHEMA: &str = r#"{"fields":[{"name":"topic","type":"string"},{"name":"tags","type":{"items":{"fields":[{"name":"key","type":"string"},{"name":"value","type":"string"}],"name":"Tag","namespace":"dcos.metrics","type":"record"},"type":"array"}},{"name":"datapoints","type":{"items":{"fields":[{"name":"name","type":"string"},{"logicalType":"timestamp-millis","name":"time_ms","type":"long"},{"name":"value","type":"double"}],"name":"Datapoint","namespace":"dcos.metrics","type":"record"},"type":"array"}}],"name":"MetricList","namespace":"dcos.metrics","type":"record"}"#;

fn ts(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn point(name: &str, tags: &[(&str, &str)], stat: Stat, v: f64) -> Datapoint {
    Datapoint::new(
        SeriesKey::new(name, tags.iter().copied()),
        stat,
        Unit::None,
        v,
    )
}

fn dims(container: &str) -> Arc<Dimensions> {
    let mut labels = BTreeMap::new();
    if !container.is_empty() {
        labels.insert("DCOS_SPACE".to_string(), "/web".to_string());
    }
    Arc::new(Dimensions {
        mesos_id: "agent-1".into(),
        cluster_id: "cluster-9".into(),
        hostname: "node-1.example".into(),
        container_id: container.into(),
        executor_id: if container.is_empty() { "" } else { "exec-1" }.into(),
        framework_id: if container.is_empty() { "" } else { "fw-1" }.into(),
        framework_name: if container.is_empty() { "" } else { "marathon" }.into(),
        task_name: if container.is_empty() { "" } else { "web" }.into(),
        labels,
        ..Dimensions::default()
    })
}

fn app_batch(container: Option<&str>) -> MetricBatch {
    let mut b = MetricBatch {
        source: Source::App,
        container_id: container.map(Arc::from),
        dimensions: dims(container.unwrap_or("")),
        timestamp: ts(1_700_000_000_123),
        points: vec![
            point("requests", &[], Stat::Value, 42.0),
            point("latency", &[("route", "/a")], Stat::Count, 3.0),
            point("latency", &[("route", "/a")], Stat::percentile(99.9), 12.5),
            point("latency", &[("route", "/b")], Stat::Mean, -0.25),
            point("queue", &[], Stat::Value, 1e300),
        ],
    };
    b.sort();
    b
}

fn encode(batch: &MetricBatch, routing: Routing, max: usize) -> Vec<Chunk> {
    let mut out = Vec::new();
    Encoder::new(routing, max).encode_batch(batch, &mut out);
    out
}

fn prefix() -> Routing {
    Routing {
        topic_prefix: "metrics-".into(),
        single_topic: None,
    }
}

fn tag(k: &str, v: &str) -> Tag {
    Tag {
        key: k.into(),
        value: v.into(),
    }
}

fn dp(name: &str, value: f64) -> AvroDatapoint {
    AvroDatapoint {
        name: name.into(),
        time_ms: 1_700_000_000_123,
        value,
    }
}

fn expected_container_lists() -> Vec<MetricList> {
    let base = vec![
        tag("mesos_id", "agent-1"),
        tag("cluster_id", "cluster-9"),
        tag("hostname", "node-1.example"),
        tag("container_id", "c-1"),
        tag("executor_id", "exec-1"),
        tag("framework_id", "fw-1"),
        tag("framework_name", "marathon"),
        tag("task_name", "web"),
        tag("DCOS_SPACE", "/web"),
    ];
    let with = |extra: &[Tag]| {
        let mut t = base.clone();
        t.extend_from_slice(extra);
        t
    };
    vec![
        MetricList {
            topic: "fw-1".into(),
            tags: with(&[tag("route", "/a")]),
            datapoints: vec![dp("latency.count", 3.0), dp("latency.p99_9", 12.5)],
        },
        MetricList {
            topic: "fw-1".into(),
            tags: with(&[tag("route", "/b")]),
            datapoints: vec![dp("latency.mean", -0.25)],
        },
        MetricList {
            topic: "fw-1".into(),
            tags: with(&[]),
            datapoints: vec![dp("queue", 1e300), dp("requests", 42.0)],
        },
    ]
}

#[test]
fn schema_file_is_the_dcos_metrics_schema() {
    let schema = avro::schema();
    let canonical = schema.canonical_form();
    assert!(
        canonical.contains(r#""name":"dcos.metrics.MetricList""#),
        "{canonical}"
    );
    assert_eq!(avro::header_schema_json(), DCOS_HEADER_SCHEMA);
    assert_eq!(avro::header_schema_json().len(), 549);
    // Header: magic, codec and schema metadata, 16-byte marker; 601 bytes as in dcos-metrics.
    assert_eq!(avro::ocf_header(AvroCodec::Null, &[b'F'; 16]).len(), 601);
}

#[test]
fn one_metric_list_per_tag_set_with_dimensions_and_routing() {
    let chunks = encode(&app_batch(Some("c-1")), prefix(), 256 << 10);
    assert_eq!(chunks.len(), 1);
    let c = &chunks[0];
    assert_eq!(c.kafka_topic, "metrics-fw-1");
    assert_eq!(c.key.as_deref(), Some("c-1"));
    assert_eq!(c.records, 3);
    assert_eq!(c.datapoints, 5);
    let file = avro::ocf_file(AvroCodec::Null, &avro::random_marker(), c).unwrap();
    assert_eq!(
        avro::read_ocf(&file[..]).unwrap(),
        expected_container_lists()
    );
}

#[test]
fn node_level_topics_and_keys() {
    let node_app = encode(&app_batch(None), prefix(), 256 << 10);
    assert_eq!(node_app[0].kafka_topic, "metrics-unknown_container");
    assert_eq!(node_app[0].key.as_deref(), Some("agent-1"));
    let file = avro::ocf_file(AvroCodec::Null, &[7; 16], &node_app[0]).unwrap();
    let lists = avro::read_ocf(&file[..]).unwrap();
    assert!(lists.iter().all(|l| l.topic == "unknown_container"));
    assert_eq!(
        lists[0].tags[..3],
        [
            tag("mesos_id", "agent-1"),
            tag("cluster_id", "cluster-9"),
            tag("hostname", "node-1.example")
        ]
    );

    let mut host = app_batch(None);
    host.source = Source::Node;
    let chunks = encode(&host, prefix(), 256 << 10);
    assert_eq!(chunks[0].kafka_topic, "metrics-agent");
    assert_eq!(chunks[0].key.as_deref(), Some("agent-1"));

    let single = Routing {
        topic_prefix: "metrics-".into(),
        single_topic: Some("all-metrics".into()),
    };
    assert_eq!(
        encode(&app_batch(Some("c-1")), single, 256 << 10)[0].kafka_topic,
        "all-metrics"
    );
    let mut odd = app_batch(Some("c/2"));
    Arc::make_mut(&mut odd.dimensions).framework_id = "fw/with space".into();
    let chunks = encode(&odd, prefix(), 256 << 10);
    assert_eq!(chunks[0].kafka_topic, "metrics-fw_with_space");
    let file = avro::ocf_file(AvroCodec::Null, &[7; 16], &chunks[0]).unwrap();
    // The MetricList keeps the framework id as it is.
    assert_eq!(avro::read_ocf(&file[..]).unwrap()[0].topic, "fw/with space");
}

#[test]
fn every_codec_round_trips_through_apache_avro() {
    let batch = app_batch(Some("c-1"));
    let chunks = encode(&batch, prefix(), 256 << 10);
    for codec in AvroCodec::ALL.iter().copied() {
        let file = avro::ocf_file(codec, &avro::random_marker(), &chunks[0]).unwrap();
        let reader = apache_avro::Reader::new(&file[..]).unwrap();
        assert_eq!(
            reader.writer_schema().canonical_form(),
            avro::schema().canonical_form()
        );
        assert_eq!(
            avro::read_ocf(&file[..]).unwrap(),
            expected_container_lists(),
            "{codec:?}"
        );
    }
}

#[test]
fn records_match_apache_avros_own_encoding() {
    let chunks = encode(&app_batch(Some("c-1")), prefix(), 256 << 10);
    let mut theirs = Vec::new();
    for l in expected_container_lists() {
        let v = apache_avro::to_value(&l).unwrap();
        let v = v.resolve(avro::schema()).unwrap();
        theirs.extend(apache_avro::to_avro_datum(avro::schema(), v).unwrap());
    }
    assert_eq!(chunks[0].data, theirs);
}

#[test]
fn big_batches_are_split_under_the_message_limit() {
    let mut b = app_batch(Some("c-1"));
    b.points = (0..50_000)
        .map(|i| {
            let tags: &[(&str, &str)] = if i % 2 == 0 { &[("shard", "x")] } else { &[] };
            point(
                &format!("series.{i:06}.with.a.longish.name"),
                tags,
                Stat::Value,
                i as f64,
            )
        })
        .collect();
    b.sort();
    let limit = 256 << 10;
    let chunks = encode(&b, prefix(), limit);
    assert!(chunks.len() > 5, "{} chunks", chunks.len());
    let mut names = Vec::new();
    for c in &chunks {
        let file = avro::ocf_file(AvroCodec::Null, &avro::random_marker(), c).unwrap();
        assert!(file.len() <= limit, "message of {} bytes", file.len());
        let lists = avro::read_ocf(&file[..]).unwrap();
        assert_eq!(lists.len(), c.records);
        for l in lists {
            let sharded = l.tags.iter().any(|t| t.key == "shard");
            for d in l.datapoints {
                let i: usize = d.name[7..13].parse().unwrap();
                assert_eq!(i % 2 == 0, sharded, "{}", d.name);
                assert_eq!(d.value, i as f64);
                names.push(i);
            }
        }
    }
    names.sort_unstable();
    assert_eq!(names, (0..50_000).collect::<Vec<_>>());
}

fn golden_batches() -> Vec<MetricBatch> {
    let mut host = MetricBatch {
        source: Source::Node,
        container_id: None,
        dimensions: dims(""),
        timestamp: ts(1_700_000_010_000),
        points: vec![
            Datapoint::new(SeriesKey::plain("load.1min"), Stat::Value, Unit::Count, 0.5),
            Datapoint::new(
                SeriesKey::new("filesystem.capacity.used", [("path", "/")]),
                Stat::Value,
                Unit::Bytes,
                1_234_567.0,
            ),
        ],
    };
    host.sort();
    vec![app_batch(Some("c-1")), app_batch(None), host]
}

/// The golden file: a fixed marker, each batch one block. Regenerate with CORRAL_BLESS=1.
fn golden_bytes(codec: AvroCodec) -> Vec<u8> {
    let marker = *b"CorralGoldenSync";
    let mut out = avro::ocf_header(codec, &marker);
    for b in golden_batches() {
        for c in encode(&b, prefix(), 256 << 10) {
            avro::append_block(&mut out, codec, &marker, c.records, &c.data).unwrap();
        }
    }
    out
}

pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CORRAL_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let default = Path::new(&std::env::var("HOME").unwrap_or_default())
        .join(".cache/corral-ci/venv/bin/python");
    if default.exists() {
        return default;
    }
    panic!(
        "no Python with fastavro: set CORRAL_TEST_PYTHON or run .ci/run \
         (.ci/setup.d/30-python-venv.sh makes the venv)"
    );
}

/// Decodes an Avro container file with fastavro (an independent reader) into JSON lines.
fn fastavro_read(path: &Path) -> Vec<MetricList> {
    let script = r#"
import json, sys, fastavro
with open(sys.argv[1], "rb") as f:
    r = fastavro.reader(f)
    assert r.writer_schema["name"] == "dcos.metrics.MetricList", r.writer_schema
    for rec in r:
        print(json.dumps(rec))
"#;
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "fastavro failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("MetricList JSON"))
        .collect()
}

#[test]
fn golden_file_matches_and_fastavro_reads_every_codec() {
    let golden = Path::new(FIXTURES).join("golden-null.avro");
    let bytes = golden_bytes(AvroCodec::Null);
    if std::env::var_os("CORRAL_BLESS").is_some() {
        std::fs::create_dir_all(FIXTURES).unwrap();
        std::fs::write(&golden, &bytes).unwrap();
    }
    let committed = std::fs::read(&golden).expect("committed golden file");
    assert_eq!(
        bytes, committed,
        "encoding changed; CORRAL_BLESS=1 regenerates"
    );
    let ours = avro::read_ocf(&committed[..]).unwrap();
    assert_eq!(ours.len(), 3 + 3 + 2);
    assert_eq!(fastavro_read(&golden), ours);

    let dir = tempfile::tempdir().unwrap();
    for codec in AvroCodec::ALL.iter().copied() {
        let p = dir.path().join(format!("{}.avro", codec.as_str()));
        std::fs::write(&p, golden_bytes(codec)).unwrap();
        assert_eq!(fastavro_read(&p), ours, "{codec:?}");
    }
}

fn dump(path: &Path) -> (Vec<MetricList>, Option<String>) {
    let mut out = Vec::new();
    let err = avro_dump(path, &mut out).err().map(|e| format!("{e:#}"));
    let lists = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lists, err)
}

#[test]
fn avro_dump_reads_files_and_reports_damage() {
    let golden = Path::new(FIXTURES).join("golden-null.avro");
    let (lists, err) = dump(&golden);
    assert_eq!(err, None);
    assert_eq!(lists.len(), 8);

    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&golden).unwrap();
    let torn = dir.path().join("torn.avro");
    std::fs::write(&torn, &bytes[..bytes.len() - 5]).unwrap();
    let (lists, err) = dump(&torn);
    assert_eq!(lists.len(), 6, "the complete blocks are still printed");
    assert!(err.unwrap().contains("truncated"));

    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"hello").unwrap();
    assert!(dump(&junk).1.unwrap().contains("neither"));
    assert!(dump(&dir.path().join("missing")).1.is_some());
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn file_sink_writes_readable_files_rotates_and_bounds_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let avro_dir = dir.path().join("avro");
    let telemetry = Arc::new(Telemetry::new());
    let mut opts = FileOptions::new(avro_dir.clone(), AvroCodec::Deflate, 1 << 20);
    opts.max_file_bytes = 8 << 10;
    opts.max_files = 4;
    let sink = AvroFileSink::start(opts, &telemetry).unwrap();
    let batch = Arc::new(app_batch(Some("c-1")));
    sink.submit(std::slice::from_ref(&batch));

    // The open file is readable (by us and fastavro) while it is being written.
    wait_for("first file", || {
        files_in(&avro_dir).iter().any(|f| f.ends_with(".avro.tmp"))
    });
    let tmp = avro_dir.join(&files_in(&avro_dir)[0]);
    wait_for("first block", || dump(&tmp).0 == expected_container_lists());
    assert_eq!(fastavro_read(&tmp), expected_container_lists());

    for _ in 0..200 {
        sink.submit(std::slice::from_ref(&batch));
    }
    runtime().block_on(sink.shutdown(Duration::from_secs(5)));
    let names = files_in(&avro_dir);
    assert!(names.iter().all(|n| n.ends_with(".avro")), "{names:?}");
    assert_eq!(names.len(), 4, "at most max_files kept: {names:?}");
    for n in &names {
        let (lists, err) = dump(&avro_dir.join(n));
        assert_eq!(err, None, "{n}");
        assert!(!lists.is_empty());
        assert!(lists.iter().all(|l| expected_container_lists().contains(l)));
    }
    let mut points = Vec::new();
    telemetry.datapoints(&mut points);
    let get = |name: &str| {
        points
            .iter()
            .find(|p| p.key.name() == name)
            .map(|p| p.value)
            .unwrap()
    };
    assert!(get("corral.avro_files.bytes_written") > 8.0 * 1024.0);
    assert_eq!(get("corral.avro_files.files"), 4.0);
}

#[test]
fn file_sink_takes_a_new_codec_in_a_new_file_and_a_new_bound_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let avro_dir = dir.path().join("avro");
    let telemetry = Arc::new(Telemetry::new());
    let sink = AvroFileSink::start(
        FileOptions::new(avro_dir.clone(), AvroCodec::Null, 1 << 20),
        &telemetry,
    )
    .unwrap();
    let batch = Arc::new(app_batch(Some("c-1")));
    sink.submit(std::slice::from_ref(&batch));
    wait_for("first file", || !files_in(&avro_dir).is_empty());

    // Another directory is ignored: the sink stays where it started.
    let mut opts = FileOptions::new(dir.path().join("elsewhere"), AvroCodec::Deflate, 1 << 20);
    opts.max_files = 2;
    sink.reconfigure(opts);
    sink.submit(std::slice::from_ref(&batch));
    runtime().block_on(sink.shutdown(Duration::from_secs(5)));
    assert!(!dir.path().join("elsewhere").exists());
    let names = files_in(&avro_dir);
    assert_eq!(names.len(), 2, "{names:?}");
    let codec_of = |n: &str| {
        let data = std::fs::read(avro_dir.join(n)).unwrap();
        let has = |c: &[u8]| data.windows(c.len()).any(|w| w == c);
        (has(b"deflate"), has(b"null"))
    };
    assert_eq!(codec_of(&names[0]), (false, true), "{}", names[0]);
    assert_eq!(codec_of(&names[1]), (true, false), "{}", names[1]);
    for n in &names {
        let (lists, err) = dump(&avro_dir.join(n));
        assert_eq!(err, None, "{n}");
        assert_eq!(lists, expected_container_lists(), "{n}");
    }

    // A lower file count applies without waiting for the next batch.
    let sink = AvroFileSink::start(
        FileOptions::new(avro_dir.clone(), AvroCodec::Deflate, 1 << 20),
        &telemetry,
    )
    .unwrap();
    let mut opts = FileOptions::new(avro_dir.clone(), AvroCodec::Deflate, 1 << 20);
    opts.max_files = 1;
    sink.reconfigure(opts);
    wait_for("oldest file deleted", || files_in(&avro_dir).len() == 1);
    assert_eq!(files_in(&avro_dir), [names[1].clone()]);
    runtime().block_on(sink.shutdown(Duration::from_secs(5)));
}

#[test]
fn file_sink_closes_a_file_left_open_by_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let golden = std::fs::read(Path::new(FIXTURES).join("golden-null.avro")).unwrap();
    // A crash mid-block: the last block is torn.
    std::fs::write(
        dir.path().join("corral-0000000000001-0001.avro.tmp"),
        &golden[..golden.len() - 3],
    )
    .unwrap();
    // A crash right after opening: a header only.
    std::fs::write(
        dir.path().join("corral-0000000000002-0002.avro.tmp"),
        avro::ocf_header(AvroCodec::Null, &[1; 16]),
    )
    .unwrap();
    let telemetry = Arc::new(Telemetry::new());
    let sink = AvroFileSink::start(
        FileOptions::new(dir.path().to_path_buf(), AvroCodec::Null, 1 << 20),
        &telemetry,
    )
    .unwrap();
    runtime().block_on(sink.shutdown(Duration::from_secs(5)));
    assert_eq!(files_in(dir.path()), ["corral-0000000000001-0001.avro"]);
    let (lists, err) = dump(&dir.path().join("corral-0000000000001-0001.avro"));
    assert_eq!(err, None);
    assert_eq!(lists.len(), 6);
}

#[test]
fn counters_without_samples_in_the_interval_are_not_sent() {
    let mut b = app_batch(None);
    b.points
        .push(Datapoint::counter(SeriesKey::plain("idle"), 0.0, 7.0));
    b.points
        .push(Datapoint::counter(SeriesKey::plain("busy"), 2.0, 9.0));
    b.sort();
    let chunks = encode(&b, prefix(), 256 * 1024);
    let names: Vec<String> = chunks
        .iter()
        .flat_map(|c| {
            avro::read_ocf(&avro::ocf_file(AvroCodec::Null, &[7; 16], c).unwrap()[..]).unwrap()
        })
        .flat_map(|l| l.datapoints.into_iter().map(|d| (d.name, d.value)))
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    assert!(names.contains(&"busy=2".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("idle")), "{names:?}");
}
