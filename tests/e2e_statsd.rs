//! End to end: the real binary, real UDP datagrams, aggregates read back over HTTP.

mod common;

use std::time::Duration;

use common::{request, value_of, Corral};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn aggregates_every_type_and_serves_them() {
    let c = Corral::start(&[]);
    c.send("e2e.hits:1|c\ne2e.hits:2|c|@0.5\r\ne2e.t:1:2:3:4|ms|#route:/a\n\ne2e.g:10|g\ne2e.g:-3|g\ne2e.s:a|s\ne2e.s:b|s\ne2e.s:a|s");
    let body = c.wait_node_app(WAIT, |b| value_of(b, "e2e.hits", &[]).is_some());
    assert_eq!(value_of(&body, "e2e.hits", &[]), Some(5.0));
    let route = [("route", "/a")];
    assert_eq!(value_of(&body, "e2e.t.count", &route), Some(4.0));
    assert_eq!(value_of(&body, "e2e.t.sum", &route), Some(10.0));
    assert_eq!(value_of(&body, "e2e.t.median", &route), Some(2.5));
    assert_eq!(value_of(&body, "e2e.t.p75", &route), Some(3.0));
    assert_eq!(value_of(&body, "e2e.g", &[]), Some(7.0));
    assert_eq!(value_of(&body, "e2e.s", &[]), Some(2.0));
    assert_eq!(
        value_of(&body, "corral.statsd.lines_received", &[]),
        Some(8.0)
    );

    // dcos-metrics shape: unit "", RFC3339 timestamps, dimensions with mesos_id and hostname.
    let dp = body["datapoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "e2e.hits")
        .unwrap();
    assert_eq!(dp["unit"], "");
    assert!(dp.get("tags").is_none(), "empty tags are omitted: {dp}");
    assert!(dp["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(body["dimensions"]["mesos_id"].is_string());
    assert!(body["dimensions"]["hostname"].is_string());

    // Datapoints are sorted by name, then tags.
    let names: Vec<&str> = body["datapoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);

    // The gauge is kept and re-emitted; the counter is not emitted without new samples.
    let later = c.wait_node_app(WAIT, |b| value_of(b, "e2e.hits", &[]).is_none());
    assert_eq!(value_of(&later, "e2e.g", &[]), Some(7.0));
}

#[test]
fn bad_lines_are_counted_by_reason_and_the_rest_is_kept() {
    let c = Corral::start(&[]);
    let mut datagram =
        b"ok.count:1|c\nbad.value:abc|c\nbad.nan:NaN|g\nbad.type:1|x\nnovalue|c\n".to_vec();
    datagram.extend_from_slice(b"bad.\xff:1|c\n");
    datagram.extend_from_slice(format!("{}:1|c\n", "n".repeat(1025)).as_bytes());
    datagram.extend_from_slice(b"_e{5,4}:title|text\n_sc|svc.up|0\nok.count:1|c|@abc\n");
    // Another type for a series that has counter samples in this interval.
    datagram.extend_from_slice(b"ok.count:7|g");
    c.send_bytes(&datagram);
    let body = c.wait_node_app(WAIT, |b| value_of(b, "ok.count", &[]).is_some());
    assert_eq!(value_of(&body, "ok.count", &[]), Some(2.0));
    let named = |name: &str| {
        body["datapoints"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["name"] == name)
            .count()
    };
    assert_eq!(named("ok.count"), 1, "one series per name and tags");
    assert_eq!(value_of(&body, "svc.up", &[]), Some(0.0));
    let dropped = |reason| value_of(&body, "corral.statsd.lines_dropped", &[("reason", reason)]);
    assert_eq!(dropped("bad_value"), Some(2.0));
    assert_eq!(dropped("unknown_type"), Some(1.0));
    assert_eq!(dropped("no_value"), Some(1.0));
    assert_eq!(dropped("not_utf8"), Some(1.0));
    assert_eq!(dropped("name_too_long"), Some(1.0));
    assert_eq!(dropped("type_mismatch"), Some(1.0));
    assert_eq!(
        value_of(&body, "corral.statsd.type_conflicts", &[]),
        Some(0.0)
    );
    assert_eq!(
        value_of(&body, "corral.statsd.events_received", &[]),
        Some(1.0)
    );
    assert_eq!(
        value_of(&body, "corral.statsd.service_checks_received", &[]),
        Some(1.0)
    );
    assert_eq!(
        value_of(&body, "corral.statsd.sample_rate_invalid", &[]),
        Some(1.0)
    );
    assert_eq!(
        value_of(&body, "corral.statsd.lines_received", &[]),
        Some(11.0)
    );
}

#[test]
fn large_datagrams_are_read_whole() {
    let c = Corral::start(&[]);
    // ~60 KiB in one datagram.
    let line = "big.datagram:1|c|#padding:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n";
    let datagram = line.repeat(60_000 / line.len());
    let n = 60_000 / line.len();
    c.send(&datagram);
    let body = c.wait_node_app(WAIT, |b| {
        value_of(b, "big.datagram", &[("padding", &"x".repeat(54))]).is_some()
    });
    assert_eq!(
        value_of(&body, "big.datagram", &[("padding", &"x".repeat(54))]),
        Some(n as f64)
    );
    assert_eq!(
        value_of(&body, "corral.statsd.datagrams_truncated", &[]),
        Some(0.0)
    );
}

#[test]
fn routes_prefixes_and_methods() {
    let c = Corral::start(&["--config", "/dev/null"]);
    let ping = c.get_json("/v0/ping");
    assert_eq!(ping["ok"], true);
    assert!(ping["timestamp"].as_str().unwrap().ends_with('Z'));
    c.send("route.test:1|c");
    c.wait_node_app(WAIT, |b| value_of(b, "route.test", &[]).is_some());
    let (status, body) = c.get("/system/v1/metrics/v0/node/app");
    assert_eq!(status, 200, "{body}");
    assert_eq!(c.get("/system/v1/metrics/v0/ping").0, 200);
    // The mesos_id is unknown with the agent disabled: every agent id is another agent's.
    assert_eq!(
        c.get("/system/v1/agent/some-other-agent/metrics/v0/ping").0,
        404
    );
    // No container has data.
    assert_eq!(c.get("/v0/containers/nope/app"), (204, String::new()));
    assert_eq!(c.get_json("/v0/containers"), serde_json::json!([]));
    assert_eq!(request("POST", &c.url("/v0/node/app")).0, 405);
    assert_eq!(request("DELETE", &c.url("/v0/ping")).0, 405);
    assert_eq!(c.get("/v0/nothing-here").0, 404);
}

#[test]
fn container_field_attributes_samples() {
    let c = Corral::start(&[]);
    // A gauge, which every flush publishes again: the reads below may span several flushes.
    c.send("ctr.depth:3|g|c:ctr-1\nnode.hits:1|c");
    let node = c.wait_node_app(WAIT, |b| value_of(b, "node.hits", &[]).is_some());
    assert_eq!(value_of(&node, "ctr.depth", &[]), None);
    let app = c.get_json("/v0/containers/ctr-1/app");
    assert_eq!(value_of(&app, "ctr.depth", &[]), Some(3.0));
    assert_eq!(app["dimensions"]["container_id"], "ctr-1");
    assert_eq!(c.get_json("/v0/containers"), serde_json::json!(["ctr-1"]));
    let one = c.get_json("/v0/containers/ctr-1/app/ctr.depth");
    assert_eq!(one["datapoints"].as_array().unwrap().len(), 1);
    assert_eq!(c.get("/v0/containers/ctr-1/app/ctr").0, 204);
}

#[test]
fn sigterm_flushes_the_current_interval() {
    let mut c = Corral::start(&["--flush-interval", "1h"]);
    c.send("final.a:1|c\nfinal.b:2|ms\nfinal.c:3|g");
    // Give the datagram time to be read before the signal.
    std::thread::sleep(Duration::from_millis(300));
    let status = c.stop();
    assert!(status.success(), "exit status {status}");
    let done = c.wait_log("final flush done", Duration::from_secs(1));
    // 1 counter + 12 timer statistics + 1 gauge.
    assert_eq!(done["fields"]["datapoints"], 14, "{done}");
}

#[test]
fn sigint_stops_cleanly() {
    let mut c = Corral::start(&[]);
    c.signal(libc::SIGINT);
    let status = c.stop();
    assert!(status.success(), "exit status {status}");
}

/// Receive threads keep the default priority; flushing, the API and the sinks run below them.
#[test]
fn receive_threads_outrank_the_rest() {
    let c = Corral::start_with(&[], &[("CORRAL_STATSD_RECEIVE_THREADS", "2")]);
    let pid = c.child.id();
    let read_threads = || -> Vec<(String, i64)> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("tasks")
            .filter_map(|t| {
                let stat = std::fs::read_to_string(t.ok()?.path().join("stat")).ok()?;
                // `pid (comm) state ...`: the fields after the command, nice is the 19th overall.
                let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
                let nice = rest.split(' ').nth(16)?.parse().ok()?;
                Some((comm.to_string(), nice))
            })
            .collect()
    };
    let nice_of = |threads: &[(String, i64)], prefix: &str| -> Vec<i64> {
        threads
            .iter()
            .filter(|(c, _)| c.starts_with(prefix))
            .map(|(_, n)| *n)
            .collect()
    };
    // A thread names itself once it runs, which may be after the daemon reports listening,
    // and a runtime worker lowers its priority only after it has its name.
    let settled = |threads: &[(String, i64)]| {
        let workers = nice_of(threads, "corral-worker");
        nice_of(threads, "statsd-rx").len() == 2
            && !workers.is_empty()
            && workers.iter().all(|&n| n == 10)
    };
    let deadline = std::time::Instant::now() + WAIT;
    let mut threads = read_threads();
    while !settled(&threads) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        threads = read_threads();
    }
    let rx = nice_of(&threads, "statsd-rx");
    assert_eq!(rx, vec![0, 0], "{threads:?}");
    let workers = nice_of(&threads, "corral-worker");
    assert!(!workers.is_empty(), "{threads:?}");
    assert!(workers.iter().all(|&n| n == 10), "{threads:?}");
}

/// With several receive threads on one address, its socket metrics are one series each (the
/// threads' kernel drops summed), in the v0 API and in the Prometheus exposition.
#[test]
fn socket_metrics_are_one_series_per_address() {
    let c = Corral::start_with(&[], &[("CORRAL_STATSD_RECEIVE_THREADS", "3")]);
    let socket = format!("udp://{}", c.statsd);
    let count = |body: &serde_json::Value, name: &str| {
        body["datapoints"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|d| d["name"] == name && d["tags"]["socket"] == socket.as_str())
                    .count()
            })
            .unwrap_or(0)
    };
    let body = c.wait_node_app(Duration::from_secs(10), |b| {
        count(b, "corral.statsd.kernel_drops") > 0
    });
    assert_eq!(count(&body, "corral.statsd.kernel_drops"), 1, "{body}");
    assert_eq!(
        count(&body, "corral.statsd.receive_buffer_bytes"),
        1,
        "{body}"
    );
    let buffer = value_of(
        &body,
        "corral.statsd.receive_buffer_bytes",
        &[("socket", &socket)],
    );
    assert!(buffer.is_some_and(|b| b > 0.0), "{socket}: {body}");
    let (status, text) = c.get("/metrics");
    assert_eq!(status, 200);
    let drops: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("corral_statsd_kernel_drops") && l.contains(&socket))
        .collect();
    assert_eq!(drops.len(), 1, "{drops:?}");
}

/// Each flush takes the previous StatsD batches out of the store before it makes the next
/// ones, and readers arriving meanwhile wait for those. Read back to back while flushes go
/// by, the node's app metrics are never missing (204) nor partial.
#[test]
fn reads_during_flushes_get_whole_flushes() {
    const GAUGES: usize = 20_000;
    let c = Corral::start(&[]);
    let lines: Vec<String> = (0..GAUGES).map(|i| format!("e2e.gauge.{i}:1|g")).collect();
    for datagram in lines.chunks(20) {
        c.send(&datagram.join("\n"));
    }
    let gauges = |body: &serde_json::Value| {
        body["datapoints"].as_array().map_or(0, |d| {
            d.iter()
                .filter(|p| {
                    p["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("e2e.gauge."))
                })
                .count()
        })
    };
    let first = c.wait_node_app(WAIT, |b| gauges(b) == GAUGES);
    let flushes = |body: &serde_json::Value| value_of(body, "corral.flush.count", &[]).unwrap();
    let until = flushes(&first) + 10.0;
    let mut reads = 0;
    loop {
        let (status, body) = c.get("/v0/node/app");
        assert_eq!(status, 200, "read {reads}: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(gauges(&body), GAUGES, "read {reads}");
        reads += 1;
        if flushes(&body) >= until {
            break;
        }
    }
}
