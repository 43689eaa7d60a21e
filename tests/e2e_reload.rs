//! End to end: SIGHUP re-reads the configuration file while StatsD traffic flows; reloadable
//! keys take effect, the others are reported as needing a restart, an invalid file keeps the
//! running configuration, and no sample is lost on the way.

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{value_of, Corral};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
const COUNTER_LINES: u64 = 2000;

fn write(path: &Path, text: &str) {
    // Written aside and renamed, as editors and configuration management do: a reload never
    // reads a half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn message(v: &Value) -> &str {
    v["fields"]["message"].as_str().unwrap_or_default()
}

/// `None` also before the first flush (204 No Content).
fn node_value(c: &Corral, name: &str, tags: &[(&str, &str)]) -> Option<f64> {
    let (status, body) = c.get("/v0/node/app");
    if status != 200 {
        return None;
    }
    let body: Value = serde_json::from_str(&body).expect("/v0/node/app JSON");
    value_of(&body, name, tags)
}

/// Waits until `/v0/node/app` has `name` with `tags`, and returns it.
fn wait_value(c: &Corral, name: &str, tags: &[(&str, &str)], pred: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = node_value(c, name, tags).filter(|v| pred(*v)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{name} {tags:?}: condition not met; last {:?}",
            node_value(c, name, tags)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Flushes counted over `window`.
fn flushes_during(c: &Corral, window: Duration) -> f64 {
    let count = || node_value(c, "corral.flush.count", &[]).expect("corral.flush.count");
    let before = count();
    std::thread::sleep(window);
    count() - before
}

fn timer_stats(c: &Corral) -> Vec<String> {
    let body = c.get_json("/v0/node/app");
    body["datapoints"]
        .as_array()
        .map(|points| {
            points
                .iter()
                .filter_map(|d| d["name"].as_str())
                .filter_map(|n| n.strip_prefix("reload.t."))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn sighup_applies_reloadable_keys_while_samples_flow() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corral.toml");
    write(
        &file,
        "log_level = \"info\"\n\
         [statsd]\n\
         flush_interval = \"200ms\"\n\
         percentiles = [50, 90]\n\
         receive_buffer = \"4MiB\"\n",
    );
    let mut c = Corral::start_plain(&["--config", file.to_str().unwrap()], &[]);

    // Counter lines at a steady rate over about 3 s, one per datagram, and a timer line every
    // 20th so that every flush has percentiles to show.
    let statsd = c.statsd;
    let sending = Arc::new(AtomicBool::new(true));
    let flag = sending.clone();
    let sender = std::thread::spawn(move || {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let start = Instant::now();
        let mut timers = 0u64;
        for i in 0..COUNTER_LINES {
            s.send_to(b"reload.c:1|c", statsd).unwrap();
            if i % 20 == 0 {
                s.send_to(b"reload.t:5|ms", statsd).unwrap();
                timers += 1;
            }
            // 1.5 ms apart on average, without drifting when a sleep runs long.
            let due = start + Duration::from_micros(1500 * (i + 1));
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        flag.store(false, Ordering::SeqCst);
        timers
    });

    wait_value(&c, "reload.t.p90", &[], |_| true);
    let before = flushes_during(&c, Duration::from_millis(600));
    assert!(before >= 2.0, "{before} flushes in 600ms at 200ms");
    c.drain_logs();
    assert!(
        !c.seen_logs.iter().any(|v| message(v) == "flushed"),
        "debug logs before the reload"
    );

    write(
        &file,
        "log_level = \"debug\"\n\
         [statsd]\n\
         flush_interval = \"1s\"\n\
         percentiles = [42, 99.5]\n\
         receive_buffer = \"2MiB\"\n",
    );
    c.signal(libc::SIGHUP);
    assert!(
        sending.load(Ordering::SeqCst),
        "the reload must happen while samples flow"
    );

    let restart = c.wait_log_where("needs a restart", WAIT, |v| {
        message(v).starts_with("needs a restart: ")
    });
    assert_eq!(message(&restart), "needs a restart: statsd.receive_buffer");
    assert_eq!(restart["level"], "WARN");
    let reloaded = c.wait_log("configuration reloaded", WAIT);
    assert_eq!(
        reloaded["fields"]["applied"],
        "log_level, statsd.flush_interval, statsd.percentiles"
    );
    assert_eq!(reloaded["fields"]["needs_restart"], "statsd.receive_buffer");
    assert_eq!(reloaded["fields"]["sink"], "unchanged");
    c.wait_log("flush interval changed", WAIT);
    // The new log level: the flush loop's debug lines appear.
    c.wait_log("flushed", WAIT);

    // The new percentiles, and only those.
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = timer_stats(&c);
        if stats.contains(&"p42".to_string()) {
            assert!(stats.contains(&"p99_5".to_string()), "{stats:?}");
            assert!(!stats.iter().any(|s| s == "p90" || s == "p50"), "{stats:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no reload.t.p42: {stats:?}");
        std::thread::sleep(Duration::from_millis(20));
    }

    // The new cadence: about 3 flushes in 3 s where there were 15.
    let after = flushes_during(&c, Duration::from_secs(3));
    assert!(
        (2.0..=4.0).contains(&after),
        "{after} flushes in 3s at a 1s interval"
    );

    let timers = sender.join().unwrap();
    // Nothing lost across the reload: the running total counts every line sent.
    let deadline = Instant::now() + WAIT;
    loop {
        let total = c.prometheus_value("reload_c_total");
        let lines = node_value(&c, "corral.statsd.lines_received", &[]);
        if total == Some(COUNTER_LINES as f64) && lines == Some((COUNTER_LINES + timers) as f64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reload_c_total {total:?} (sent {COUNTER_LINES}), lines_received {lines:?} \
             (sent {})",
            COUNTER_LINES + timers
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        node_value(&c, "corral.config.reloads", &[("result", "ok")]),
        Some(1.0)
    );
    assert_eq!(
        node_value(&c, "corral.config.reloads", &[("result", "error")]),
        Some(0.0)
    );
    assert!(c.stop().success());
}

#[test]
fn an_invalid_file_keeps_the_running_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("corral.toml");
    write(
        &file,
        "[statsd]\nflush_interval = \"200ms\"\ngauge_sign = \"delta\"\n",
    );
    let mut c = Corral::start_plain(
        &["--config", file.to_str().unwrap()],
        &[("CORRAL_LOG_LEVEL", "info")],
    );
    c.send("reload.g:5|g\nreload.g:+2|g");
    wait_value(&c, "reload.g", &[], |v| v == 7.0);

    write(&file, "[statsd]\nflush_interval = \"soon\"\n");
    c.signal(libc::SIGHUP);
    let failed = c.wait_log(
        "configuration reload failed; the running configuration stays in effect",
        WAIT,
    );
    assert_eq!(failed["level"], "ERROR");
    let error = failed["fields"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("statsd.flush_interval"), "{error}");
    wait_value(&c, "corral.config.reloads", &[("result", "error")], |v| {
        v == 1.0
    });
    // Still running, and still flushing at 200ms.
    assert!(c.child.try_wait().unwrap().is_none());
    let flushes = flushes_during(&c, Duration::from_secs(1));
    assert!(flushes >= 3.0, "{flushes} flushes in 1s at 200ms");

    // A good file again: the gauge sign switches for the next line. The environment still
    // overrides the file, as at startup.
    write(
        &file,
        "log_level = \"debug\"\n\
         [statsd]\nflush_interval = \"200ms\"\ngauge_sign = \"absolute\"\n",
    );
    c.signal(libc::SIGHUP);
    let reloaded = c.wait_log("configuration reloaded", WAIT);
    assert_eq!(reloaded["fields"]["applied"], "statsd.gauge_sign");
    assert_eq!(reloaded["fields"]["needs_restart"], "");
    wait_value(&c, "corral.config.reloads", &[("result", "ok")], |v| {
        v == 1.0
    });
    c.send("reload.g:+3|g");
    wait_value(&c, "reload.g", &[], |v| v == 3.0);
    assert!(c.stop().success());
    assert!(
        !c.seen_logs.iter().any(|v| message(v) == "flushed"),
        "CORRAL_LOG_LEVEL=info overrides the file's log_level"
    );
}
