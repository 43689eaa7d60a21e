//! End to end: the real binary's host metrics on `/v0/node`, checked against this machine's
//! `/proc` and `statvfs` read independently here.

mod common;

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{value_of, Corral};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// Every host metric name, its unit, and the tag it carries.
const METRICS: &[(&str, &str, Option<&str>)] = &[
    ("system.uptime", "count", None),
    ("cpu.cores", "count", None),
    ("cpu.total", "percent", None),
    ("cpu.user", "percent", None),
    ("cpu.system", "percent", None),
    ("cpu.idle", "percent", None),
    ("cpu.wait", "percent", None),
    ("load.1min", "count", None),
    ("load.5min", "count", None),
    ("load.15min", "count", None),
    ("memory.total", "bytes", None),
    ("memory.free", "bytes", None),
    ("memory.buffers", "bytes", None),
    ("memory.cached", "bytes", None),
    ("swap.total", "bytes", None),
    ("swap.free", "bytes", None),
    ("swap.used", "bytes", None),
    ("filesystem.capacity.total", "bytes", Some("path")),
    ("filesystem.capacity.used", "bytes", Some("path")),
    ("filesystem.capacity.free", "bytes", Some("path")),
    ("filesystem.inode.total", "count", Some("path")),
    ("filesystem.inode.used", "count", Some("path")),
    ("filesystem.inode.free", "count", Some("path")),
    ("network.in", "bytes", Some("interface")),
    ("network.out", "bytes", Some("interface")),
    ("network.in.packets", "count", Some("interface")),
    ("network.out.packets", "count", Some("interface")),
    ("network.in.dropped", "count", Some("interface")),
    ("network.out.dropped", "count", Some("interface")),
    ("network.in.errors", "count", Some("interface")),
    ("network.out.errors", "count", Some("interface")),
    ("process.count", "count", None),
];

fn datapoints(body: &Value) -> &[Value] {
    body["datapoints"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn names(body: &Value) -> BTreeSet<String> {
    datapoints(body)
        .iter()
        .filter_map(|d| d["name"].as_str().map(str::to_string))
        .collect()
}

/// Polls `/v0/node` (204 until the first poll) until every host metric is in it.
fn wait_for_host_metrics(c: &Corral) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = c.get("/v0/node");
        if status == 200 {
            let v: Value = serde_json::from_str(&body).expect("json");
            let have = names(&v);
            if METRICS.iter().all(|(n, _, _)| have.contains(*n)) {
                return v;
            }
        } else {
            assert_eq!(status, 204, "before the first poll: {body}");
        }
        if Instant::now() > deadline {
            panic!("not every host metric within {WAIT:?}; last: {status} {body}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn proc_text(rel: &str) -> String {
    std::fs::read_to_string(Path::new("/proc").join(rel)).expect("read /proc")
}

fn statvfs_total(path: &str) -> Option<f64> {
    let c = CString::new(Path::new(path).as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path and `s` a zeroed statvfs that the call fills.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    if rc != 0 {
        return None;
    }
    Some(s.f_blocks as f64 * s.f_frsize as f64)
}

fn numeric_proc_entries() -> usize {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let b = n.as_bytes();
            !b.is_empty() && b.iter().all(u8::is_ascii_digit)
        })
        .count()
}

#[test]
fn node_serves_host_metrics_that_match_proc() {
    let c = Corral::start_with(&[], &[("CORRAL_NODE_POLL_INTERVAL", "300ms")]);
    let body = wait_for_host_metrics(&c);

    // Units and tags: only filesystem and network datapoints are tagged.
    for d in datapoints(&body) {
        let name = d["name"].as_str().unwrap();
        let (_, unit, tag) = METRICS
            .iter()
            .find(|(n, _, _)| *n == name)
            .unwrap_or_else(|| panic!("unexpected host metric {d}"));
        assert_eq!(d["unit"], *unit, "{d}");
        match tag {
            Some(t) => {
                let tags = d["tags"].as_object().expect("tags");
                assert_eq!(tags.len(), 1, "{d}");
                assert!(tags[*t].as_str().is_some_and(|v| !v.is_empty()), "{d}");
            }
            None => assert!(d.get("tags").is_none(), "{d}"),
        }
        assert!(d["value"].as_f64().is_some_and(|v| v >= 0.0), "{d}");
        assert!(d["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
    let sorted: Vec<&str> = datapoints(&body)
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(sorted.windows(2).all(|w| w[0] <= w[1]), "sorted by name");

    let dims = &body["dimensions"];
    assert!(dims["mesos_id"].is_string(), "{dims}");
    assert!(dims["hostname"].is_string(), "{dims}");
    assert!(dims.get("container_id").is_none(), "{dims}");

    // memory.total is MemTotal (kB) in bytes.
    let mem_total_kb: f64 = proc_text("meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("MemTotal");
    assert_eq!(
        value_of(&body, "memory.total", &[]),
        Some(mem_total_kb * 1024.0)
    );

    // cpu.cores is the number of processor entries.
    let processors = proc_text("cpuinfo")
        .lines()
        .filter(|l| l.split(':').next().map(str::trim) == Some("processor"))
        .count();
    assert_eq!(value_of(&body, "cpu.cores", &[]), Some(processors as f64));

    let pct = |n: &str| value_of(&body, n, &[]).unwrap();
    for n in [
        "cpu.user",
        "cpu.system",
        "cpu.idle",
        "cpu.wait",
        "cpu.total",
    ] {
        assert!((0.0..=100.0).contains(&pct(n)), "{n} = {}", pct(n));
    }
    assert!((pct("cpu.total") - (pct("cpu.user") + pct("cpu.system"))).abs() < 0.011);

    // Uptime in whole seconds, close to /proc/uptime now.
    let uptime: f64 = proc_text("uptime")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("uptime");
    let reported = value_of(&body, "system.uptime", &[]).unwrap();
    assert_eq!(reported, reported.trunc());
    assert!(
        reported <= uptime && uptime - reported < 60.0,
        "{reported} vs {uptime}"
    );

    // Filesystem capacity equals statvfs f_blocks * f_frsize, for every reported mount.
    let paths: BTreeSet<String> = datapoints(&body)
        .iter()
        .filter(|d| d["name"] == "filesystem.capacity.total")
        .map(|d| d["tags"]["path"].as_str().unwrap().to_string())
        .collect();
    assert!(!paths.is_empty());
    for p in &paths {
        assert_eq!(
            value_of(&body, "filesystem.capacity.total", &[("path", p)]),
            statvfs_total(p),
            "filesystem.capacity.total of {p}"
        );
    }
    // No pseudo filesystems.
    for p in ["/proc", "/sys", "/dev", "/dev/shm", "/dev/pts"] {
        assert!(!paths.contains(p), "{p} reported: {paths:?}");
    }

    // Loopback counts too.
    assert!(value_of(&body, "network.in", &[("interface", "lo")]).is_some());

    // Processes, not /proc entries; the count moves a little between the two readings.
    let procs = numeric_proc_entries() as f64;
    let reported = value_of(&body, "process.count", &[]).unwrap();
    assert!(
        reported >= 1.0 && reported >= procs / 2.0 && reported <= procs * 2.0 + 50.0,
        "process.count {reported}, /proc has {procs} pids"
    );

    // Readers' failures are counted as self-metrics (none here).
    let app = c.wait_node_app(WAIT, |b| {
        value_of(b, "corral.host.read_errors", &[("reader", "memory")]).is_some()
    });
    assert_eq!(
        value_of(&app, "corral.host.read_errors", &[("reader", "memory")]),
        Some(0.0)
    );
}

#[test]
fn node_values_follow_polls() {
    let c = Corral::start_with(&[], &[("CORRAL_NODE_POLL_INTERVAL", "200ms")]);
    let first = wait_for_host_metrics(&c);
    let ts = |b: &Value| {
        datapoints(b)
            .iter()
            .find(|d| d["name"] == "memory.total")
            .and_then(|d| d["timestamp"].as_str())
            .map(str::to_string)
    };
    let t0 = ts(&first);
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = c.get("/v0/node");
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        if ts(&v) != t0 {
            break;
        }
        assert!(Instant::now() < deadline, "no second poll");
        std::thread::sleep(Duration::from_millis(50));
    }
}
