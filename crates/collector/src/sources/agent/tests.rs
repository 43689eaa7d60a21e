use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

use corral_model::{Dimensions, Kind, MetricBatch, Unit};

use super::convert::{Converter, Snapshot, Usage};
use super::json::sanitize;

const STATE: &[u8] = include_bytes!("../../../../../tests/fixtures/mesos/state.json");
const CONTAINERS: &[u8] = include_bytes!("../../../../../tests/fixtures/mesos/containers.json");
const NONFINITE: &[u8] =
    include_bytes!("../../../../../tests/fixtures/mesos/containers-nonfinite.json");
const LEGACY_STATE: &[u8] = include_bytes!("../../../../../tests/fixtures/mesos/legacy/state.json");
const LEGACY_STATS: &[u8] =
    include_bytes!("../../../../../tests/fixtures/mesos/legacy/monitor-statistics.json");

const AGENT: &str = "9d4b2f2e-8f4a-4c43-9c2b-5e4d3a1b0c9f-S3";
const MARATHON: &str = "5349f49b-68b3-4638-aab2-fc4ec845f993-0000";
const C1: &str = "e4faacb2-f69f-4ea1-9d96-eb06fea75eef";
const POD: &str = "7c1d3e5f-2a4b-4c6d-8e0f-1a2b3c4d5e6f";
const WEB: &str = "8a9b0c1d-2e3f-4a5b-8c7d-9e0f1a2b3c4d";
const SIDECAR: &str = "9b0c1d2e-3f4a-4b6c-9d8e-0f1a2b3c4d5e";
const KAFKA: &str = "3f2e1d0c-9b8a-4f6e-8d4c-3b2a1f0e9d8c";
const KAFKA_NO_STATS: &str = "4a3b2c1d-0e9f-4a8b-9c6d-5e4f3a2b1c0d";
const FOO: &str = "foo.124b1048-a17a-11e6-9182-080027fb5b88";

fn node() -> Dimensions {
    Dimensions {
        cluster_id: "cluster".into(),
        hostname: "10.0.0.5".into(),
        ..Dimensions::default()
    }
}

fn convert(state: &[u8], usage: Usage<'_>) -> Snapshot {
    Converter::new()
        .convert(state, usage, node(), true, SystemTime::UNIX_EPOCH)
        .unwrap()
}

fn batch<'a>(s: &'a Snapshot, container: &str) -> &'a MetricBatch {
    s.batches
        .iter()
        .find(|b| b.container_id.as_deref() == Some(container))
        .unwrap_or_else(|| panic!("no batch for {container}"))
}

/// (value, unit, kind, tags) of the datapoint `name` with `extra` tags.
fn point(b: &MetricBatch, name: &str, device: Option<&str>) -> Option<(f64, Unit, Kind)> {
    b.points
        .iter()
        .find(|p| {
            p.name() == name
                && p.key
                    .tags()
                    .find(|(k, _)| *k == "blkio_device")
                    .map(|(_, v)| v)
                    == device
        })
        .map(|p| (p.value, p.unit, p.kind))
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn container_datapoints_are_named_tagged_and_typed_as_dcos_metrics() {
    let s = convert(STATE, Usage::Containers(CONTAINERS));
    assert_eq!(s.agent_id.as_deref(), Some(AGENT));
    let mut ids: Vec<&str> = s
        .batches
        .iter()
        .filter_map(|b| b.container_id.as_deref())
        .collect();
    ids.sort();
    let mut want = vec![C1, POD, KAFKA];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(s.counts.no_statistics, 1);

    let b = batch(&s, C1);
    let secs = |v| Some((v, Unit::Seconds, Kind::Cumulative));
    assert_eq!(point(b, "cpus.user.time", None), secs(0.22));
    assert_eq!(point(b, "cpus.system.time", None), secs(0.31));
    assert_eq!(point(b, "cpus.throttled.time", None), secs(98.355904778));
    assert_eq!(
        point(b, "cpus.limit", None),
        Some((1.1, Unit::Count, Kind::Gauge))
    );
    assert_eq!(
        point(b, "cpus.nr.periods", None),
        Some((3701894.0, Unit::Count, Kind::Cumulative))
    );
    assert_eq!(
        point(b, "processes", None),
        Some((3.0, Unit::Count, Kind::Gauge))
    );
    assert_eq!(
        point(b, "mem.total", None),
        Some((4476928.0, Unit::Bytes, Kind::Gauge))
    );
    assert_eq!(
        point(b, "mem.soft.limit", None),
        Some((134217728.0, Unit::Bytes, Kind::Gauge))
    );
    assert_eq!(
        point(b, "mem.low.pressure", None),
        Some((0.0, Unit::Count, Kind::Cumulative))
    );
    assert_eq!(
        point(b, "disk.used", None),
        Some((4096.0, Unit::Bytes, Kind::Gauge))
    );
    // net.tx.* come from the tx fields, not rx (dcos-metrics' mistake).
    assert_eq!(
        point(b, "net.tx.bytes", None),
        Some((163200529816.0, Unit::Bytes, Kind::Cumulative))
    );
    assert_eq!(
        point(b, "net.rx.bytes", None),
        Some((10847.0, Unit::Bytes, Kind::Cumulative))
    );
    assert_eq!(point(b, "net.tx.dropped", None).map(|p| p.0), Some(2.0));
    // Fields Mesos did not send are not made up.
    assert_eq!(point(b, "mem.total.memsw", None), None);

    // blkio: one series per policy, stat, op and device.
    let blk = |name, dev| point(b, name, Some(dev)).map(|p| p.0);
    assert_eq!(blk("blkio.cfq.io_merged.total", "total"), Some(123451.0));
    assert_eq!(blk("blkio.cfq.io_wait_time.total", "total"), Some(123456.0));
    assert_eq!(
        blk("blkio.cfq_recursive.io_serviced.total", "total"),
        Some(543215.0)
    );
    assert_eq!(
        blk("blkio.throttling.io_serviced.read", "8:0"),
        Some(987651.0)
    );
    assert_eq!(
        blk("blkio.throttling.io_service_bytes.async", "8:0"),
        Some(567894.0)
    );
    assert_eq!(
        blk("blkio.throttling.io_serviced.total", "total"),
        Some(9876543210.0)
    );
    assert_eq!(
        point(b, "blkio.throttling.io_serviced.read", Some("8:0")).map(|p| p.1),
        Some(Unit::Bytes)
    );

    // Every datapoint carries the five tags (blkio ones a sixth).
    for p in &b.points {
        let keys: Vec<&str> = p.key.tags().map(|(k, _)| k).collect();
        let five = [
            "container_id",
            "executor_id",
            "executor_name",
            "framework_id",
            "source",
        ];
        if p.key.name().starts_with("blkio.") {
            assert_eq!(keys[0], "blkio_device");
            assert_eq!(&keys[1..], five);
        } else {
            assert_eq!(keys, five, "{}", p.key.name());
        }
    }
    let tags: BTreeMap<&str, &str> = b.points[0].key.tags().collect();
    assert_eq!(tags["container_id"], C1);
    assert_eq!(tags["executor_id"], FOO);
    assert_eq!(tags["framework_id"], MARATHON);
    assert_eq!(tags["source"], FOO);
    assert!(tags["executor_name"].starts_with("Command Executor (Task: foo."));

    // Sorted as the API serves them.
    for b in &s.batches {
        let mut sorted = b.points.clone();
        sorted.sort_by(|x, y| x.api_cmp(y));
        assert_eq!(b.points, sorted);
    }

    // Only what Mesos sent: the pod's executor has five statistics.
    assert_eq!(batch(&s, POD).points.len(), 5);
}

#[test]
fn dimensions_come_from_state() {
    let s = convert(STATE, Usage::Containers(CONTAINERS));
    let d = &batch(&s, C1).dimensions;
    assert_eq!(d.mesos_id, AGENT);
    assert_eq!(d.cluster_id, "cluster");
    assert_eq!(d.hostname, "10.0.0.5");
    assert_eq!(d.container_id, C1);
    assert_eq!(d.executor_id, FOO);
    assert_eq!(d.framework_id, MARATHON);
    assert_eq!(d.framework_name, "marathon");
    assert_eq!(d.framework_role, "slave_public");
    assert_eq!(d.framework_principal, "dcos_marathon");
    assert_eq!(d.task_id, FOO);
    assert_eq!(d.task_name, "foo");
    // Task labels win over the executor's; Cosmos keys and long values are dropped.
    assert_eq!(
        d.labels,
        labels(&[
            ("HAPROXY_GROUP", "external"),
            ("bare", ""),
            ("somekey", "someval")
        ])
    );

    // A pod's executor: no single task, the executor's labels.
    let d = &batch(&s, POD).dimensions;
    assert_eq!(
        d.executor_id,
        "instance-pod.1a2b3c4d-0000-4000-8000-000000000000"
    );
    assert_eq!(d.task_id, "");
    assert_eq!(d.labels, labels(&[("pod_label", "pod-value")]));

    // Multi-role framework; Cosmos labels gone.
    let d = &batch(&s, KAFKA).dimensions;
    assert_eq!(d.framework_name, "kafka");
    assert_eq!(d.framework_role, "kafka-role");
    assert_eq!(d.framework_principal, "kafka-principal");
    assert_eq!(d.labels, labels(&[("broker", "0")]));
    assert_eq!(d.task_id, "");
}

#[test]
fn the_directory_knows_nested_containers_and_containers_without_statistics() {
    let s = convert(STATE, Usage::Containers(CONTAINERS));
    let web = &s.directory[WEB];
    assert_eq!(web.container_id, WEB);
    assert_eq!(
        web.executor_id,
        "instance-pod.1a2b3c4d-0000-4000-8000-000000000000"
    );
    assert_eq!(web.framework_name, "marathon");
    assert_eq!(web.task_name, "web");
    assert_eq!(web.labels, labels(&[("tier", "frontend")]));
    let sidecar = &s.directory[SIDECAR];
    assert_eq!(sidecar.task_name, "sidecar");
    assert_eq!(sidecar.labels, labels(&[("pod_label", "pod-value")]));
    let k2 = &s.directory[KAFKA_NO_STATS];
    assert_eq!(
        k2.executor_id,
        "broker-1__6c7d8e9f-2a3b-4c5d-9e6f-7a8b9c0d1e2f"
    );
    assert_eq!(k2.framework_name, "kafka");
    // The resource batch and the directory share the dimensions.
    assert_eq!(*s.directory[C1], *batch(&s, C1).dimensions);
    assert_eq!(s.directory.len(), 6);
}

#[test]
fn ips_of_exactly_one_container_are_mapped() {
    let s = convert(STATE, Usage::Containers(CONTAINERS));
    let ip = |a: &str| a.parse::<IpAddr>().unwrap();
    assert_eq!(s.ips.get(&ip("127.0.0.2")).map(|c| &**c), Some(C1));
    assert_eq!(s.ips.get(&ip("127.0.0.3")).map(|c| &**c), Some(POD));
    // Reported by two containers: belongs to neither.
    assert_eq!(s.ips.get(&ip("127.0.0.4")), None);
    assert_eq!(s.ips.len(), 2);
}

#[test]
fn non_finite_values_are_skipped_and_counted() {
    let s = convert(STATE, Usage::Containers(NONFINITE));
    assert_eq!(s.counts.invalid_values, 3);
    let b = batch(&s, C1);
    assert_eq!(point(b, "cpus.throttled.time", None), None);
    assert_eq!(point(b, "mem.soft.limit", None), None);
    assert_eq!(point(b, "cpus.user.time", None).map(|p| p.0), Some(0.22));
    let k = batch(&s, KAFKA);
    assert_eq!(point(k, "cpus.limit", None), None);
    let name = k.points[0]
        .key
        .tags()
        .find(|(t, _)| *t == "executor_name")
        .map(|(_, v)| v);
    assert_eq!(name, Some("broker-0 NaN Infinity"));
}

#[test]
fn old_agents_statistics_and_number_formats() {
    let s = convert(LEGACY_STATE, Usage::Statistics(LEGACY_STATS));
    assert_eq!(
        s.agent_id.as_deref(),
        Some("20150707-195256-1740121354-5150-29801-S0")
    );
    // The executor /state does not know has no container to file it under.
    assert_eq!(s.counts.unknown_container, 1);
    assert_eq!(s.batches.len(), 2);
    let job = batch(&s, "2d8f7a1c-5b3e-4c9d-a0f1-6e7b8c9d0a1b");
    assert_eq!(
        point(job, "cpus.system.time", None).map(|p| p.0),
        Some(2667.0)
    );
    assert_eq!(point(job, "mem.rss", None).map(|p| p.0), Some(8388608.0));
    assert_eq!(
        point(job, "mem.limit", None).map(|p| p.0),
        Some(167772160.0)
    );
    assert_eq!(
        point(job, "net.tx.bytes", None).map(|p| p.0),
        Some(163200529816.0)
    );
    let tags: BTreeMap<&str, &str> = job.points[0].key.tags().collect();
    assert_eq!(
        tags["executor_name"],
        "Command Executor (Task: job.1436298853) (Command: sh -c 'iperf -c 10.0.0.1 -o /tmp/iperf.log')"
    );
    assert_eq!(tags["container_id"], "2d8f7a1c-5b3e-4c9d-a0f1-6e7b8c9d0a1b");
    let d = &job.dimensions;
    assert_eq!(d.task_name, "job");
    assert_eq!(d.framework_name, "iperf-framework");
    assert_eq!(d.framework_role, "*");
    assert_eq!(
        d.labels,
        labels(&[("homepage", "http://example.com/iperf")])
    );
    let web = batch(&s, "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9");
    assert_eq!(point(web, "cpus.user.time", None).map(|p| p.0), Some(0.0));
    assert_eq!(point(web, "mem.rss", None).map(|p| p.0), Some(14376960.0));
    assert_eq!(
        web.dimensions.labels,
        labels(&[("MARATHON_APP_ID", "/web")])
    );
    assert!(s.ips.is_empty());
}

#[test]
fn counters_that_go_down_are_counted_as_resets() {
    let mut c = Converter::new();
    let first = c
        .convert(
            STATE,
            Usage::Containers(CONTAINERS),
            node(),
            true,
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
    assert_eq!(first.counts.counter_resets, 0);
    let text = std::str::from_utf8(CONTAINERS).unwrap();
    let lower = text
        .replace(
            "\"cpus_user_time_secs\": 0.22",
            "\"cpus_user_time_secs\": 0.01",
        )
        .replace("\"net_tx_bytes\": 163200529816", "\"net_tx_bytes\": 5")
        // A gauge going down is not a reset.
        .replace("\"mem_total_bytes\": 4476928", "\"mem_total_bytes\": 1");
    let second = c
        .convert(
            STATE,
            Usage::Containers(lower.as_bytes()),
            node(),
            true,
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
    assert_eq!(second.counts.counter_resets, 2);
    // The raw value is published; nothing negative is derived.
    let b = batch(&second, C1);
    assert_eq!(point(b, "cpus.user.time", None).map(|p| p.0), Some(0.01));
    assert!(b.points.iter().all(|p| p.value >= 0.0));
    // Going up again from the new base is not another reset.
    let third = c
        .convert(
            STATE,
            Usage::Containers(CONTAINERS),
            node(),
            true,
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
    assert_eq!(third.counts.counter_resets, 0);
}

#[test]
fn a_configured_mesos_id_is_kept() {
    let mut n = node();
    n.mesos_id = "configured".into();
    let s = Converter::new()
        .convert(
            STATE,
            Usage::Containers(CONTAINERS),
            n,
            false,
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
    assert_eq!(batch(&s, C1).dimensions.mesos_id, "configured");
    assert_eq!(s.agent_id.as_deref(), Some(AGENT));
}

#[test]
fn bad_answers_are_errors_or_counted_drops_never_panics() {
    let err = Converter::new()
        .convert(
            b"<html>",
            Usage::Containers(b"[]"),
            node(),
            true,
            SystemTime::UNIX_EPOCH,
        )
        .unwrap_err();
    assert!(err.to_string().starts_with("/state: invalid JSON"), "{err}");
    let err = Converter::new()
        .convert(
            STATE,
            Usage::Containers(b"{\"a\": 1}"),
            node(),
            true,
            SystemTime::UNIX_EPOCH,
        )
        .unwrap_err();
    assert!(err.to_string().starts_with("/containers"), "{err}");
    // One odd entry costs only itself; odd field types read as missing.
    let body = br#"["nonsense", 7,
        {"container_id": "c", "framework_id": ["x"], "executor_id": {"value": "e"},
         "statistics": {"cpus_user_time_secs": "1", "mem_total_bytes": 5, "blkio_statistics": null}},
        {"container_id": "d", "statistics": {"blkio_statistics": {"cfq": [{"device": {"major": 8, "minor": 16},
            "io_serviced": [{"op": "Read", "value": 1}, {"value": 2}]}]}}}]"#;
    let s = Converter::new()
        .convert(
            b"{}",
            Usage::Containers(body),
            node(),
            true,
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
    assert_eq!(s.counts.bad_entries, 3);
    assert_eq!(s.counts.invalid_values, 1);
    let c = batch(&s, "c");
    assert_eq!(c.points.len(), 1);
    let tags: BTreeMap<&str, &str> = c.points[0].key.tags().collect();
    assert_eq!(tags["executor_id"], "e");
    let d = batch(&s, "d");
    // dcos-metrics' fixtures spell the device keys major/minor.
    assert_eq!(
        point(d, "blkio.cfq.io_serviced.read", Some("8:16")).map(|p| p.0),
        Some(1.0)
    );
    for junk in [&b""[..], b"[", b"\"\\", b"[NaN", b"{\"a\":\"\\"] {
        assert!(Converter::new()
            .convert(
                junk,
                Usage::Containers(junk),
                node(),
                true,
                SystemTime::UNIX_EPOCH
            )
            .is_err());
        let _ = sanitize(junk);
    }
    // Empty lists are fine: an agent with no executors.
    let s = Converter::new()
        .convert(
            b"{}",
            Usage::Containers(b"[]"),
            node(),
            true,
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
    assert!(s.batches.is_empty() && s.agent_id.is_none());
}

#[test]
fn tag_values_with_newlines_cannot_break_series_keys() {
    let body =
        br#"[{"container_id": "c", "executor_name": "a\nb", "statistics": {"processes": 1}}]"#;
    let s = Converter::new()
        .convert(
            b"{}",
            Usage::Containers(body),
            node(),
            true,
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
    let tags: BTreeMap<&str, &str> = s.batches[0].points[0].key.tags().collect();
    assert_eq!(tags["executor_name"], "a b");
    assert_eq!(tags.len(), 5);
}
