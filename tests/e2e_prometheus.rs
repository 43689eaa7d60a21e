//! End to end: `/metrics` of the real binary checked by promtool and scraped by a real
//! Prometheus server.
//!
//! The tools are found through `CORRAL_TEST_PROMTOOL` and `CORRAL_TEST_PROMETHEUS`, else at
//! `/usr/bin/promtool` and `/usr/bin/prometheus` (Debian's `prometheus` package, which
//! `.ci/setup.d/10-prometheus.sh` installs).

mod common;

use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Corral;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn tool(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.is_file(),
        "{} not found (set {var}, or run .ci/run, whose .ci/setup.d/10-prometheus.sh installs \
         Debian's prometheus package)",
        path.display()
    );
    path
}

/// Polls `/metrics` until `pred` holds for its body.
fn wait_metrics(c: &Corral, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = c.get("/metrics");
        assert_eq!(status, 200, "{body}");
        if pred(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met; last body:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lint findings that follow from keeping dcos-metrics' names (`memory_total` is a gauge,
/// `process_count` and timer statistics like `x_count` are gauges) or from names chosen by
/// StatsD clients. Anything else promtool reports fails the test.
const ACCEPTED_LINTS: &[&str] = &[
    "non-counter metrics should not have \"_total\" suffix",
    "non-histogram and non-summary metrics should not have \"_count\" suffix",
    "non-histogram and non-summary metrics should not have \"_sum\" suffix",
    "metric names should not contain abbreviated units",
    "metric names should be written in 'snake_case' not 'camelCase'",
];

#[test]
fn metrics_pass_promtool() {
    let promtool = tool("CORRAL_TEST_PROMTOOL", "/usr/bin/promtool");
    // A flush interval long enough to read one flush's counters and timers before the next
    // flush (without new samples) drops them.
    let c = Corral::start(&["--flush-interval", "1s"]);
    c.send(
        "e2e.hits:1|c|#env:prod,route:/a\n\
         e2e.hits:2|c|@0.5|#env:prod,route:/a\n\
         e2e.hits:4|c\n\
         e2e.g:10|g\n\
         e2e.g:-3|g|#env:prod\n\
         e2e.t:1:2:3:4|ms|#route:/a\n\
         e2e.h:5|h\n\
         e2e.d:0.25|d\n\
         e2e.s:a|s\n\
         e2e.s:b|s\n\
         my-app.Req/sec:1|c\n\
         9lives:7|g\n\
         caf\u{e9}.hits:1|c\n\
         e2e.tags:1|g|#1st:x,a.b:y,__name__:z,bare,q:\"quoted\\\\\"\n\
         ctr.hits:3|c|#env:prod|c:container-1\n\
         ctr.lat:12|ms|c:container-1",
    );
    let body = wait_metrics(&c, |b| {
        b.contains("\nctr_hits_total{") && b.contains("\ne2e_hits_total{")
    });

    for line in [
        "# TYPE e2e_hits_total counter",
        "# TYPE e2e_g gauge",
        "# TYPE e2e_t_p99 gauge",
        "# TYPE e2e_s gauge",
        "# TYPE _9lives gauge",
        "# TYPE my_app_Req_sec_total counter",
        "# TYPE caf__hits_total counter",
        "# TYPE ctr_hits_total counter",
        "# TYPE corral_statsd_lines_received_total counter",
    ] {
        assert!(
            body.contains(&format!("{line}\n")),
            "{line:?} missing:\n{body}"
        );
    }
    let ctr = body
        .lines()
        .find(|l| l.starts_with("ctr_hits_total{"))
        .unwrap();
    assert!(ctr.contains("container_id=\"container-1\""), "{ctr}");
    assert!(ctr.contains("env=\"prod\""), "{ctr}");
    assert!(ctr.ends_with(" 3"), "{ctr}");
    let hits: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("e2e_hits_total{"))
        .collect();
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(
        hits.iter()
            .any(|l| l.contains("route=\"/a\"") && l.ends_with(" 5")),
        "{hits:?}"
    );
    let tags = body.lines().find(|l| l.starts_with("e2e_tags{")).unwrap();
    for label in ["_1st=\"x\"", "a_b=\"y\"", "label__name__=\"z\""] {
        assert!(tags.contains(label), "{label} in {tags}");
    }

    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("promtool check metrics: {:?}\n{report}", out.status);
    // promtool exits 1 on errors (a malformed exposition) and 3 when it only has lint findings.
    let code = out.status.code();
    assert!(
        matches!(code, Some(0 | 3)),
        "promtool failed ({:?}):\n{report}\n--- /metrics:\n{body}",
        out.status
    );
    let unexpected: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !ACCEPTED_LINTS.iter().any(|a| l.ends_with(a)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "promtool findings:\n{}\n--- /metrics:\n{body}",
        unexpected.join("\n")
    );
    assert_eq!(code == Some(3), !report.trim().is_empty(), "{report}");
}

/// A Prometheus server in a temporary directory; killed when dropped (also on panic).
struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
}

impl Prometheus {
    fn start(binary: &Path, target: std::net::SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: corral\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--storage.tsdb.retention.time=1h")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        };
        p.wait("ready", || match p.get("/-/ready") {
            Some((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        });
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET → (status, body), or None while the server does not accept connections.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let mut r = agent.get(format!("{}{path}", self.url)).call().ok()?;
        let status = r.status().as_u16();
        Some((status, r.body_mut().read_to_string().unwrap_or_default()))
    }

    /// An instant query → the result vector.
    fn query(&self, promql: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/api/v1/query?query={}", urlencode(promql)))
            .expect("prometheus is up");
        assert_eq!(status, 200, "query {promql}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `f` returns Ok, panicking with its last Err and the server's log after
    /// `WAIT`.
    fn wait<T>(&self, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let last = match f() {
                Ok(v) => return v,
                Err(last) => last,
            };
            assert!(
                Instant::now() < deadline,
                "prometheus: {what} not seen within {WAIT:?}; last: {last}\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The single sample's value of a query result.
fn single_value(result: &[Value]) -> Option<f64> {
    match result {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

/// Waits until `promql` has exactly one sample, whose value and labels `want` accepts.
fn wait_value(prom: &Prometheus, promql: &str, want: impl Fn(f64, &Value) -> bool) -> f64 {
    prom.wait(promql, || {
        let r = prom.query(promql);
        match single_value(&r) {
            Some(v) if want(v, &r[0]["metric"]) => Ok(v),
            _ => Err(format!("{r:?}")),
        }
    })
}

#[test]
fn prometheus_scrapes_corral() {
    let binary = tool("CORRAL_TEST_PROMETHEUS", "/usr/bin/prometheus");
    // Counters are in `/metrics` only after a flush that had samples for them, until the next
    // flush: a 2s flush keeps each total there for at least one 1s scrape.
    let c = Corral::start(&["--flush-interval", "2s"]);
    let prom = Prometheus::start(&binary, c.api);
    wait_value(&prom, "up{job=\"corral\"}", |v, _| v == 1.0);

    // One client socket, as a StatsD client keeps, sending over several flushes.
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent = 0.0;
    for round in 1..=3 {
        let lines = format!(
            "prom.hits:{round}|c|#env:e2e\nprom.hits:{round}|c|#env:e2e\n\
             prom.ctr:{round}|c|c:container-1"
        );
        client.send_to(lines.as_bytes(), c.statsd).unwrap();
        sent += 2.0 * round as f64;
        std::thread::sleep(Duration::from_millis(2500));
    }
    assert_eq!(sent, 12.0);

    // `max_over_time`: a counter leaves `/metrics` after a flush without new samples.
    wait_value(
        &prom,
        "max_over_time(prom_hits_total{env=\"e2e\"}[5m])",
        |v, _| v == sent,
    );
    wait_value(&prom, "max_over_time(prom_ctr_total[5m])", |v, m| {
        v == 6.0 && m["container_id"] == "container-1"
    });
    wait_value(&prom, "corral_statsd_lines_received_total", |v, _| v == 9.0);

    // Host metrics, when the host source publishes them.
    if c.get("/v0/node").0 == 200 {
        wait_value(&prom, "memory_total", |v, _| v > 0.0);
    }

    // Every scrape was accepted whole.
    let (_, targets) = prom.get("/api/v1/targets").unwrap();
    let targets: Value = serde_json::from_str(&targets).unwrap();
    let active = &targets["data"]["activeTargets"][0];
    assert_eq!(active["health"], "up", "{active}");
    assert_eq!(active["lastError"], "", "{active}");
    let log = prom.log();
    for bad in ["Error on ingesting", "duplicate sample", "out of order"] {
        assert!(!log.contains(bad), "prometheus log has {bad:?}:\n{log}");
    }
}
