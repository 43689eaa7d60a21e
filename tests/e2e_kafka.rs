//! The real binary publishing to a real Kafka-protocol broker (tansu, validating every value
//! against the MetricList schema), read back by an independent client (Python confluent-kafka
//! and fastavro): names, values, tags, topics and keys; then no datapoint lost while the broker
//! is frozen past the message timeout, with and without a Corral restart in the middle; and
//! SIGHUP with new Kafka settings: new brokers and topics, Kafka to Avro files and back.

mod common;
#[path = "kafka/tansu.rs"]
mod tansu;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Corral;
use serde_json::Value;
use tansu::Tansu;

const APP_TOPIC: &str = "metrics-unknown_container";
const TOPICS: &[&str] = &[APP_TOPIC, "metrics-agent"];

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CORRAL_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let default = Path::new(&std::env::var("HOME").unwrap_or_default())
        .join(".cache/corral-ci/venv/bin/python");
    if default.exists() {
        return default;
    }
    panic!(
        "no Python with confluent-kafka and fastavro: set CORRAL_TEST_PYTHON or run .ci/run \
         (.ci/setup.d/30-python-venv.sh makes the venv)"
    );
}

fn script(name: &str) -> String {
    format!("{}/tests/kafka/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Every message of `topics`, decoded by the Python consumer.
fn consume(t: &Tansu, topics: &[&str]) -> Vec<Value> {
    let out = Command::new(python())
        .arg(script("consume.py"))
        .args(["--bootstrap", &t.bootstrap(), "--topics", &topics.join(",")])
        .args(["--min", "1", "--idle", "3", "--timeout", "90"])
        .output()
        .expect("run consume.py");
    assert!(
        out.status.success(),
        "consume.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msgs: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("consumer JSON"))
        .collect();
    for m in &msgs {
        assert!(m.get("error").is_none(), "undecodable message: {m}");
    }
    msgs
}

fn corral(t: &Tansu, data_dir: &Path) -> Corral {
    Corral::start_with(
        &[
            "--kafka-brokers",
            &t.bootstrap(),
            "--data-dir",
            data_dir.to_str().expect("utf-8 path"),
        ],
        &[
            ("CORRAL_NODE_MESOS_ID", "agent-e2e"),
            ("CORRAL_NODE_CLUSTER_ID", "cluster-e2e"),
            ("CORRAL_NODE_HOSTNAME", "node-e2e"),
        ],
    )
}

fn tag<'a>(list: &'a Value, key: &str) -> Option<&'a str> {
    list["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .and_then(|t| t["value"].as_str())
}

/// The distinct MetricLists (a re-sent message carries the same lists again), with the
/// message's topic and key.
fn lists(msgs: &[Value]) -> Vec<(String, Option<String>, Value)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for m in msgs {
        let topic = m["topic"].as_str().unwrap_or_default().to_string();
        let key = m["key"].as_str().map(str::to_string);
        for l in m["lists"].as_array().into_iter().flatten() {
            if seen.insert((topic.clone(), key.clone(), l.to_string())) {
                out.push((topic.clone(), key.clone(), l.clone()));
            }
        }
    }
    out
}

/// Sum of the values of datapoint `name` over lists whose StatsD tag `tag_key` is `tag_value`
/// (`None`: lists without that tag).
fn sum(
    lists: &[(String, Option<String>, Value)],
    name: &str,
    tag_key: &str,
    tag_value: Option<&str>,
) -> f64 {
    lists
        .iter()
        .filter(|(_, _, l)| tag(l, tag_key) == tag_value)
        .flat_map(|(_, _, l)| l["datapoints"].as_array().cloned().unwrap_or_default())
        .filter(|d| d["name"] == name)
        .map(|d| d["value"].as_f64().unwrap_or(f64::NAN))
        .sum()
}

#[test]
fn statsd_to_kafka_through_a_validating_broker() {
    let t = Tansu::start(TOPICS);
    // The broker enforces the schema: a value that is not a MetricList container is refused.
    let junk = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(junk.path(), b"not avro").unwrap();
    let out = Command::new(python())
        .arg(script("produce.py"))
        .args([
            "--bootstrap",
            &t.bootstrap(),
            "--topic",
            APP_TOPIC,
            "--value-file",
        ])
        .arg(junk.path())
        .output()
        .expect("run produce.py");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "INVALID_RECORD",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let data = tempfile::tempdir().unwrap();
    let mut c = corral(&t, data.path());
    let start_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    for _ in 0..50 {
        c.send("e2e.hits:1|c|#env:test\ne2e.hits:2|c\ne2e.temp:21.5|g|#room:a");
    }
    for v in [10, 20, 30] {
        c.send(&format!("e2e.lat:{v}|ms|#env:test"));
    }
    std::thread::sleep(Duration::from_millis(800));
    let status = c.stop();
    assert!(status.success(), "{status:?}");
    assert!(
        c.seen_logs
            .iter()
            .any(|l| l["fields"]["message"] == "Kafka sink stopped; everything delivered"),
        "{:#?}",
        c.seen_logs
    );

    let msgs = consume(&t, TOPICS);
    assert!(!msgs.is_empty());
    for m in &msgs {
        assert!(TOPICS.contains(&m["topic"].as_str().unwrap()), "{m}");
        assert_eq!(m["key"], "agent-e2e", "{m}");
    }
    let all = lists(&msgs);
    let app: Vec<_> = all
        .iter()
        .filter(|(t, _, _)| t == APP_TOPIC)
        .cloned()
        .collect();
    for (_, _, l) in &app {
        assert_eq!(l["topic"], "unknown_container");
        assert_eq!(tag(l, "mesos_id"), Some("agent-e2e"));
        assert_eq!(tag(l, "cluster_id"), Some("cluster-e2e"));
        assert_eq!(tag(l, "hostname"), Some("node-e2e"));
        for d in l["datapoints"].as_array().unwrap() {
            let ms = d["time_ms"].as_f64().unwrap();
            assert!(ms >= start_ms - 1000.0 && ms < start_ms + 60_000.0, "{d}");
        }
    }
    assert_eq!(sum(&app, "e2e.hits", "env", Some("test")), 50.0);
    assert_eq!(sum(&app, "e2e.hits", "env", None), 100.0);
    // One MetricList per tag set: tagged and untagged series never share one.
    for (_, _, l) in &app {
        let names: Vec<&str> = l["datapoints"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["name"].as_str())
            .collect();
        if names.contains(&"e2e.hits") && tag(l, "env").is_some() {
            assert!(!names.iter().any(|n| n.starts_with("e2e.temp")), "{l}");
        }
    }
    let temps: Vec<f64> = app
        .iter()
        .filter(|(_, _, l)| tag(l, "room") == Some("a"))
        .flat_map(|(_, _, l)| l["datapoints"].as_array().cloned().unwrap_or_default())
        .filter(|d| d["name"] == "e2e.temp")
        .filter_map(|d| d["value"].as_f64())
        .collect();
    assert!(
        !temps.is_empty() && temps.iter().all(|v| *v == 21.5),
        "{temps:?}"
    );
    assert_eq!(sum(&app, "e2e.lat.count", "env", Some("test")), 3.0);
    assert_eq!(sum(&app, "e2e.lat.sum", "env", Some("test")), 60.0);
    let maxes: Vec<f64> = app
        .iter()
        .flat_map(|(_, _, l)| l["datapoints"].as_array().cloned().unwrap_or_default())
        .filter(|d| d["name"] == "e2e.lat.max")
        .filter_map(|d| d["value"].as_f64())
        .collect();
    assert_eq!(maxes, [30.0]);
    // Corral's own metrics travel the same way.
    assert!(
        app.iter().any(|(_, _, l)| l["datapoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "corral.kafka.messages_sent")),
        "no self-metrics"
    );
}

/// Sends `name:1|c` at a steady pace from a thread until stopped; counts what it sent.
struct Pacer {
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pacer {
    fn start(addr: std::net::SocketAddr, name: &str) -> Pacer {
        let sent = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st, line) = (sent.clone(), stop.clone(), format!("{name}:1|c"));
        let thread = std::thread::spawn(move || {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
            while !st.load(Ordering::Relaxed) {
                if sock.send_to(line.as_bytes(), addr).is_ok() {
                    s.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Pacer {
            sent,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.sent.load(Ordering::Relaxed)
    }
}

/// Past librdkafka's message timeout (10s in Corral).
const PAUSE: Duration = Duration::from_secs(13);

fn log_has(c: &Corral, message: &str) -> bool {
    c.seen_logs
        .iter()
        .any(|l| l["fields"]["message"] == message)
}

#[test]
fn a_broker_frozen_past_the_message_timeout_loses_nothing() {
    let mut t = Tansu::start(TOPICS);
    let data = tempfile::tempdir().unwrap();
    let mut c = corral(&t, data.path());
    let pacer = Pacer::start(c.statsd, "fault.n");
    std::thread::sleep(Duration::from_millis(1500));
    t.pause();
    std::thread::sleep(PAUSE);
    t.resume();
    std::thread::sleep(Duration::from_secs(3));
    let sent = pacer.finish();
    std::thread::sleep(Duration::from_millis(500));
    let status = c.stop();
    assert!(status.success(), "{status:?}");
    assert!(
        log_has(&c, "Kafka sink stopped; everything delivered"),
        "{:#?}",
        c.seen_logs
    );
    let rebuilt = log_has(&c, "Kafka producer failed fatally; building a new one");
    let got = sum(&lists(&consume(&t, &[APP_TOPIC])), "fault.n", "env", None);
    eprintln!("sent {sent}, received {got}, producer rebuilt: {rebuilt}");
    assert_eq!(got, sent as f64, "datapoints lost");
    // tansu fences the idempotent producer once its messages have timed out.
    assert!(
        rebuilt,
        "the producer was never rebuilt: {:#?}",
        c.seen_logs
    );
}

#[test]
fn a_restart_while_the_broker_is_frozen_resumes_the_spool() {
    let mut t = Tansu::start(TOPICS);
    let data = tempfile::tempdir().unwrap();
    let mut a = corral(&t, data.path());
    let pacer = Pacer::start(a.statsd, "restart.n");
    std::thread::sleep(Duration::from_millis(1500));
    t.pause();
    std::thread::sleep(Duration::from_secs(2));
    let mut sent = pacer.finish();
    // The stop waits for delivery (bounded), then leaves the rest spooled.
    let status = a.stop();
    assert!(status.success(), "{status:?}");
    assert!(
        log_has(
            &a,
            "Kafka sink stopped with undelivered messages; they stay spooled for the next start"
        ),
        "{:#?}",
        a.seen_logs
    );
    drop(a);

    let mut b = corral(&t, data.path());
    b.wait_log("resuming the Kafka spool", Duration::from_secs(5));
    let pacer = Pacer::start(b.statsd, "restart.n");
    std::thread::sleep(Duration::from_secs(2));
    t.resume();
    std::thread::sleep(Duration::from_secs(3));
    sent += pacer.finish();
    std::thread::sleep(Duration::from_millis(500));
    let status = b.stop();
    assert!(status.success(), "{status:?}");
    assert!(
        log_has(&b, "Kafka sink stopped; everything delivered"),
        "{:#?}",
        b.seen_logs
    );
    let got = sum(&lists(&consume(&t, &[APP_TOPIC])), "restart.n", "env", None);
    assert_eq!(got, sent as f64, "datapoints lost");
}

fn avro_dump(file: &Path) -> (i32, String, String) {
    let out = Command::new(common::corral_bin())
        .arg("avro-dump")
        .arg(file)
        .env_clear()
        .output()
        .expect("run corral avro-dump");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unreachable_brokers_spool_and_avro_dump_reads_segments_and_files() {
    // Nothing listens on this port: every batch stays in the spool.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut c = Corral::start_with(
        &[
            "--kafka-brokers",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            data.path().to_str().unwrap(),
        ],
        &[("CORRAL_NODE_MESOS_ID", "agent-e2e")],
    );
    c.send("spooled.hits:5|c|#env:test");
    std::thread::sleep(Duration::from_millis(600));
    let status = c.stop();
    assert!(status.success(), "{status:?}");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data.path().join("spool"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    assert!(!segments.is_empty());
    let mut hits = 0.0;
    for seg in &segments {
        let (code, stdout, stderr) = avro_dump(seg);
        assert_eq!(code, 0, "{stderr}");
        for line in stdout.lines() {
            let l: Value = serde_json::from_str(line).expect("one MetricList per line");
            // Host metrics (topic "agent") are spooled alongside.
            assert!(
                l["topic"] == "unknown_container" || l["topic"] == "agent",
                "{l}"
            );
            if l["topic"] == "unknown_container" && tag(&l, "env") == Some("test") {
                hits += l["datapoints"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|d| d["name"] == "spooled.hits")
                    .map(|d| d["value"].as_f64().unwrap())
                    .sum::<f64>();
            }
        }
    }
    assert_eq!(hits, 5.0);

    // A damaged file: what is readable is printed, the exit code is 1, the file is named.
    let bytes = std::fs::read(&segments[0]).unwrap();
    let torn = data.path().join("torn.seg");
    std::fs::write(&torn, &bytes[..bytes.len() - 3]).unwrap();
    let (code, _, stderr) = avro_dump(&torn);
    assert_eq!(code, 1);
    assert!(stderr.contains("torn.seg"), "{stderr}");
    let (code, stdout, stderr) = avro_dump(&data.path().join("missing.avro"));
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert!(stderr.contains("missing.avro"), "{stderr}");
}

#[test]
fn without_brokers_batches_go_to_avro_files() {
    let data = tempfile::tempdir().unwrap();
    let mut c = Corral::start(&["--data-dir", data.path().to_str().unwrap()]);
    c.send("filed.hits:7|c");
    std::thread::sleep(Duration::from_millis(600));
    assert!(c.stop().success());
    let files: Vec<PathBuf> = std::fs::read_dir(data.path().join("avro"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].to_string_lossy().ends_with(".avro"), "{files:?}");
    let (code, stdout, stderr) = avro_dump(&files[0]);
    assert_eq!(code, 0, "{stderr}");
    let hits: f64 = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .flat_map(|l| l["datapoints"].as_array().cloned().unwrap_or_default())
        .filter(|d| d["name"] == "filed.hits")
        .map(|d| d["value"].as_f64().unwrap())
        .sum();
    assert_eq!(hits, 7.0);
}

// ---- SIGHUP with new Kafka settings ----

/// Writes a configuration file aside and renames it into place, as configuration management
/// does: a reload never reads half a file.
fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn kafka_config(brokers: &[String], topic_prefix: &str) -> String {
    let brokers: Vec<String> = brokers.iter().map(|b| format!("{b:?}")).collect();
    format!(
        "[statsd]\nflush_interval = \"200ms\"\n\
         [kafka]\nbrokers = [{}]\ntopic_prefix = {topic_prefix:?}\n",
        brokers.join(", ")
    )
}

fn corral_with_config(file: &Path) -> Corral {
    Corral::start_plain(
        &["--config", file.to_str().expect("utf-8 path")],
        &[
            ("CORRAL_LOG_LEVEL", "info"),
            ("CORRAL_NODE_MESOS_ID", "agent-e2e"),
            ("CORRAL_NODE_CLUSTER_ID", "cluster-e2e"),
            ("CORRAL_NODE_HOSTNAME", "node-e2e"),
        ],
    )
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64
}

fn message(v: &Value) -> &str {
    v["fields"]["message"].as_str().unwrap_or_default()
}

/// SIGHUP, then the `configuration reloaded` line it gives (skipping earlier ones).
fn reload(c: &mut Corral) -> Value {
    c.drain_logs();
    let before = c.seen_logs.len();
    c.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = c.seen_logs[before..].iter().find(|v| {
            message(v) == "configuration reloaded"
                || message(v).starts_with("configuration reload failed")
        }) {
            return v.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reload outcome: {:#?}",
            &c.seen_logs[before..]
        );
        std::thread::sleep(Duration::from_millis(50));
        c.drain_logs();
    }
}

/// `corral.config.reloads{result}` once a flush has published it.
fn reloads(c: &Corral, result: &str) -> Option<f64> {
    let (status, body) = c.get("/v0/node/app");
    if status != 200 {
        return None;
    }
    let body: Value = serde_json::from_str(&body).expect("/v0/node/app JSON");
    common::value_of(&body, "corral.config.reloads", &[("result", result)])
}

fn wait_reloads(c: &Corral, result: &str, want: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while reloads(c, result) != Some(want) {
        assert!(
            std::time::Instant::now() < deadline,
            "corral.config.reloads{{result={result}}}: {:?}, want {want}",
            reloads(c, result)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The time of every datapoint `name` in `lists`.
fn times(lists: &[(String, Option<String>, Value)], name: &str) -> Vec<f64> {
    lists
        .iter()
        .flat_map(|(_, _, l)| l["datapoints"].as_array().cloned().unwrap_or_default())
        .filter(|d| d["name"] == name)
        .filter_map(|d| d["time_ms"].as_f64())
        .collect()
}

#[test]
fn sighup_sends_the_spool_to_new_brokers_and_new_flushes_to_the_new_topic() {
    const MOVED_APP_TOPIC: &str = "moved-unknown_container";
    let t = Tansu::start(&[APP_TOPIC, "metrics-agent", MOVED_APP_TOPIC, "moved-agent"]);
    // Nothing listens on this port: everything flushed before the reload stays spooled.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corral.toml");
    write_config(&file, &kafka_config(&[dead], "metrics-"));
    let mut c = corral_with_config(&file);
    let pacer = Pacer::start(c.statsd, "moved.n");
    std::thread::sleep(Duration::from_secs(2));
    let spooled = c.get_json("/v0/node/app");
    let spooled = common::value_of(&spooled, "corral.kafka.spooled_bytes", &[]);
    assert!(
        spooled.is_some_and(|b| b > 0.0),
        "spooled bytes {spooled:?}"
    );

    write_config(&file, &kafka_config(&[t.bootstrap()], "moved-"));
    let before = now_ms();
    let reloaded = reload(&mut c);
    let after = now_ms();
    assert_eq!(message(&reloaded), "configuration reloaded", "{reloaded}");
    assert_eq!(
        reloaded["fields"]["applied"],
        "kafka.brokers, kafka.topic_prefix"
    );
    assert_eq!(reloaded["fields"]["needs_restart"], "");
    assert_eq!(reloaded["fields"]["sink"], "reconfigured");
    c.wait_log(
        "switched to the new Kafka producer; it sends everything unacknowledged",
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_secs(2));
    let sent = pacer.finish();
    std::thread::sleep(Duration::from_millis(500));
    wait_reloads(&c, "ok", 1.0);
    let status = c.stop();
    assert!(status.success(), "{status:?}");
    assert!(
        log_has(&c, "Kafka sink stopped; everything delivered"),
        "{:#?}",
        c.seen_logs
    );

    let all = lists(&consume(&t, &[APP_TOPIC, MOVED_APP_TOPIC]));
    let (old, new): (Vec<_>, Vec<_>) = all.into_iter().partition(|(t, _, _)| t == APP_TOPIC);
    let (spooled, moved) = (
        sum(&old, "moved.n", "env", None),
        sum(&new, "moved.n", "env", None),
    );
    eprintln!("sent {sent}: {spooled} from the spool, {moved} under the new prefix");
    assert_eq!(spooled + moved, sent as f64, "datapoints lost or doubled");
    assert!(spooled > 0.0 && moved > 0.0, "{spooled} {moved}");
    // The backlog keeps the topic of the flushes it holds; flushes after the reload use the new
    // prefix. One flush interval of slack each way (a flush running while the signal came).
    let last_old = times(&old, "moved.n").into_iter().fold(0.0, f64::max);
    let first_new = times(&new, "moved.n").into_iter().fold(f64::MAX, f64::min);
    assert!(
        last_old <= after + 200.0,
        "{last_old} after the reload ({after})"
    );
    assert!(
        first_new >= before - 200.0,
        "{first_new} before the reload ({before})"
    );
}

#[test]
fn sighup_switches_between_kafka_and_avro_files_without_losing_samples() {
    let t = Tansu::start(TOPICS);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corral.toml");
    write_config(&file, &kafka_config(&[t.bootstrap()], "metrics-"));
    let mut c = corral_with_config(&file);
    let data_dir = c.data_dir.path().to_path_buf();
    let avro_dir = data_dir.join("avro");
    let pacer = Pacer::start(c.statsd, "switch.n");
    std::thread::sleep(Duration::from_millis(1500));

    // The file sink cannot start (its directory is taken by a file): the reload fails and
    // Kafka keeps going.
    std::fs::write(&avro_dir, b"in the way").unwrap();
    write_config(&file, &kafka_config(&[], "metrics-"));
    let failed = reload(&mut c);
    assert_eq!(
        message(&failed),
        "configuration reload failed; the running configuration stays in effect"
    );
    assert_eq!(failed["level"], "ERROR");
    let error = failed["fields"]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("kafka: cannot start the sink that kafka.brokers now asks for")
            && error.contains(avro_dir.to_str().unwrap()),
        "{error}"
    );
    wait_reloads(&c, "error", 1.0);
    assert!(c.child.try_wait().unwrap().is_none());
    std::thread::sleep(Duration::from_secs(1));

    // The same file once the way is clear: Avro files from now on.
    std::fs::remove_file(&avro_dir).unwrap();
    let reloaded = reload(&mut c);
    assert_eq!(message(&reloaded), "configuration reloaded", "{reloaded}");
    assert_eq!(reloaded["fields"]["applied"], "kafka.brokers");
    assert_eq!(reloaded["fields"]["sink"], "switched to Avro files");
    std::thread::sleep(Duration::from_millis(1500));

    // And back to Kafka.
    write_config(&file, &kafka_config(&[t.bootstrap()], "metrics-"));
    let reloaded = reload(&mut c);
    assert_eq!(message(&reloaded), "configuration reloaded", "{reloaded}");
    assert_eq!(reloaded["fields"]["applied"], "kafka.brokers");
    assert_eq!(reloaded["fields"]["sink"], "switched to Kafka");
    std::thread::sleep(Duration::from_millis(1500));
    let sent = pacer.finish();
    std::thread::sleep(Duration::from_millis(500));
    wait_reloads(&c, "ok", 2.0);
    let status = c.stop();
    assert!(status.success(), "{status:?}");
    assert!(
        log_has(&c, "Kafka sink stopped; everything delivered"),
        "{:#?}",
        c.seen_logs
    );

    let kafka = sum(&lists(&consume(&t, &[APP_TOPIC])), "switch.n", "env", None);
    let mut files = 0.0;
    let names: Vec<PathBuf> = std::fs::read_dir(&avro_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        names.iter().all(|p| p.to_string_lossy().ends_with(".avro")),
        "{names:?}"
    );
    for f in &names {
        let (code, stdout, stderr) = avro_dump(f);
        assert_eq!(code, 0, "{stderr}");
        files += stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .flat_map(|l| l["datapoints"].as_array().cloned().unwrap_or_default())
            .filter(|d| d["name"] == "switch.n")
            .map(|d| d["value"].as_f64().unwrap())
            .sum::<f64>();
    }
    eprintln!("sent {sent}: {kafka} through Kafka, {files} in Avro files");
    assert_eq!(kafka + files, sent as f64, "datapoints lost or doubled");
    assert!(kafka > 0.0 && files > 0.0, "{kafka} {files}");
}
