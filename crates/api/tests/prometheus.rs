use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use corral_api::{router, ApiState};
use corral_model::{
    Datapoint, Dimensions, Identity, Kind, MetricBatch, NodeIds, SeriesKey, Source, Stat, Store,
    Unit,
};
use http_body_util::BodyExt;
use tower::ServiceExt;

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn dp(name: &str, tags: &[(&str, &str)], stat: Stat, unit: Unit, value: f64) -> Datapoint {
    Datapoint::new(
        SeriesKey::new(name, tags.iter().copied()),
        stat,
        unit,
        value,
    )
}

fn gauge(name: &str, tags: &[(&str, &str)], value: f64) -> Datapoint {
    dp(name, tags, Stat::Value, Unit::None, value)
}

fn counter(name: &str, tags: &[(&str, &str)], value: f64, total: f64) -> Datapoint {
    let mut p = gauge(name, tags, value).with_kind(Kind::Counter);
    p.total = total;
    p
}

fn node_dims() -> Dimensions {
    Dimensions {
        mesos_id: "agent-S0".into(),
        cluster_id: "cluster-1".into(),
        hostname: "node-1".into(),
        ..Dimensions::default()
    }
}

fn container_dims(id: &str) -> Dimensions {
    Dimensions {
        container_id: id.into(),
        executor_id: "exec-1".into(),
        framework_id: "fw-1".into(),
        framework_name: "marathon".into(),
        task_id: "web.1234".into(),
        task_name: "web".into(),
        labels: BTreeMap::from([("DCOS_SPACE".into(), "/web".into())]),
        ..node_dims()
    }
}

fn batch(
    source: Source,
    container: Option<&str>,
    dims: Dimensions,
    points: Vec<Datapoint>,
) -> Arc<MetricBatch> {
    let mut b = MetricBatch {
        source,
        container_id: container.map(Arc::from),
        dimensions: Arc::new(dims),
        timestamp: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600),
        points,
    };
    b.sort();
    Arc::new(b)
}

fn app(store: Store) -> Router {
    let identity = Arc::new(Identity::new(NodeIds {
        mesos_id: "agent-S0".into(),
        cluster_id: "cluster-1".into(),
        hostname: "node-1".into(),
    }));
    router(ApiState::new(Arc::new(store), identity))
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

async fn call(app: &Router, method: Method, uri: &str) -> Resp {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes().to_vec(),
    }
}

/// GETs `/metrics`, checks the response and the exposition's invariants, returns the text.
async fn scrape(store: Store) -> String {
    let r = call(&app(store), Method::GET, "/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], CONTENT_TYPE);
    let text = String::from_utf8(r.body).expect("UTF-8");
    check(&text);
    text
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: String,
}

fn valid_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

/// Parses one sample line (a name, optional labels with escaped values, a value).
fn parse_sample(line: &str) -> Sample {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => panic!("no value: {line:?}"),
    };
    let mut labels = Vec::new();
    let mut rest = rest;
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let end;
        loop {
            let (start, c) = chars.next().expect("unterminated labels");
            if c == '}' {
                end = start + 1;
                break;
            }
            let mut lname = String::from(c);
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                lname.push(c);
            }
            assert_eq!(chars.next().map(|c| c.1), Some('"'), "{line:?}");
            let mut value = String::new();
            loop {
                match chars.next().expect("unterminated value").1 {
                    '"' => break,
                    '\\' => match chars.next().unwrap().1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => panic!("bad escape \\{other} in {line:?}"),
                    },
                    c => value.push(c),
                }
            }
            labels.push((lname, value));
            if chars.peek().map(|c| c.1) == Some(',') {
                chars.next();
            }
        }
        rest = &r[end..];
    }
    let value = rest.strip_prefix(' ').expect("space before the value");
    assert!(!value.contains(' '), "no timestamps: {line:?}");
    assert!(
        matches!(value, "NaN" | "+Inf" | "-Inf") || value.parse::<f64>().is_ok(),
        "value {value:?}"
    );
    Sample {
        name: name.to_string(),
        labels,
        value: value.to_string(),
    }
}

/// The rules Prometheus and promtool enforce, plus this exposition's own: one HELP and TYPE
/// per family right before its samples, all samples named as the family, the same label
/// names (valid, unique, not reserved) on every series, no repeated series.
fn check(text: &str) {
    assert!(text.is_empty() || text.ends_with('\n'));
    let mut seen_families = HashSet::new();
    let mut seen_series = HashSet::new();
    let mut family: Option<(String, Option<Vec<String>>)> = None;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(help) = line.strip_prefix("# HELP ") {
            let name = help.split(' ').next().unwrap().to_string();
            assert!(valid_name(&name, true), "name {name:?}");
            assert!(seen_families.insert(name.clone()), "family {name} twice");
            let ty = lines.next().expect("TYPE after HELP");
            let kind = ty
                .strip_prefix(&format!("# TYPE {name} "))
                .unwrap_or_else(|| panic!("TYPE of {name}: {ty:?}"));
            assert!(matches!(kind, "gauge" | "counter"), "{ty}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
            family = Some((name, None));
            continue;
        }
        assert!(!line.starts_with('#'), "stray comment {line:?}");
        let s = parse_sample(line);
        let (fname, fnames) = family.as_mut().expect("sample before any TYPE");
        assert_eq!(&s.name, fname, "samples of a family are contiguous");
        let names: Vec<String> = s.labels.iter().map(|l| l.0.clone()).collect();
        for n in &names {
            assert!(valid_name(n, false), "label name {n:?}");
            assert!(!n.starts_with("__"), "reserved label name {n:?}");
        }
        let unique: HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "duplicate label in {line:?}");
        match fnames {
            Some(prev) => assert_eq!(prev, &names, "label names differ in {fname}"),
            None => *fnames = Some(names),
        }
        let mut key: Vec<_> = s.labels.into_iter().filter(|l| !l.1.is_empty()).collect();
        key.sort();
        assert!(
            seen_series.insert((s.name.clone(), key)),
            "repeated series {line:?}"
        );
    }
}

/// The sample lines of family `name`.
fn samples(text: &str, name: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(parse_sample)
        .filter(|s| s.name == name)
        .collect()
}

fn label<'a>(s: &'a Sample, name: &str) -> Option<&'a str> {
    s.labels.iter().find(|l| l.0 == name).map(|l| l.1.as_str())
}

#[tokio::test]
async fn small_store_exact_text() {
    let store = Store::new();
    store.publish(batch(
        Source::Node,
        None,
        node_dims(),
        vec![
            dp("cpu.total", &[], Stat::Value, Unit::Percent, 3.25),
            dp(
                "filesystem.capacity.used",
                &[("path", "/")],
                Stat::Value,
                Unit::Bytes,
                5368709120.0,
            ),
            dp(
                "network.in",
                &[("interface", "eth0")],
                Stat::Value,
                Unit::Bytes,
                1e3,
            )
            .with_kind(Kind::Cumulative),
        ],
    ));
    store.publish(batch(
        Source::App,
        None,
        node_dims(),
        vec![
            counter("e2e.hits", &[("env", "prod")], 3.0, 12.0),
            gauge("corral.statsd.lines_received", &[], 40.0).with_kind(Kind::Cumulative),
        ],
    ));
    // Families sorted by name; label names sorted; no timestamps.
    let expected = r#"# HELP corral_statsd_lines_received_total corral.statsd.lines_received
# TYPE corral_statsd_lines_received_total counter
corral_statsd_lines_received_total{cluster_id="cluster-1",hostname="node-1",mesos_id="agent-S0"} 40
# HELP cpu_total cpu.total (percent)
# TYPE cpu_total gauge
cpu_total{cluster_id="cluster-1",hostname="node-1",mesos_id="agent-S0"} 3.25
# HELP e2e_hits_total e2e.hits
# TYPE e2e_hits_total counter
e2e_hits_total{cluster_id="cluster-1",env="prod",hostname="node-1",mesos_id="agent-S0"} 12
# HELP filesystem_capacity_used filesystem.capacity.used (bytes)
# TYPE filesystem_capacity_used gauge
filesystem_capacity_used{cluster_id="cluster-1",hostname="node-1",mesos_id="agent-S0",path="/"} 5368709120
# HELP network_in_total network.in (bytes)
# TYPE network_in_total counter
network_in_total{cluster_id="cluster-1",hostname="node-1",interface="eth0",mesos_id="agent-S0"} 1000
"#;
    assert_eq!(scrape(store).await, expected);
}

#[tokio::test]
async fn empty_store_is_an_empty_exposition() {
    let r = call(&app(Store::new()), Method::GET, "/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], CONTENT_TYPE);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn methods() {
    let app = app(Store::new());
    for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let r = call(&app, m.clone(), "/metrics").await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{m}");
        assert_eq!(r.headers[header::ALLOW], "GET", "{m}");
    }
    let r = call(&app, Method::HEAD, "/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    // Only at the root, not under the v0 prefixes.
    assert_eq!(
        call(&app, Method::GET, "/v0/metrics").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn every_series_of_a_family_has_the_union_of_label_names() {
    let store = Store::new();
    store.publish(batch(
        Source::App,
        None,
        node_dims(),
        vec![
            gauge("requests", &[], 1.0),
            gauge("requests", &[("route", "/a")], 2.0),
        ],
    ));
    store.publish(batch(
        Source::App,
        Some("c1"),
        container_dims("c1"),
        vec![gauge("requests", &[("zone", "z1")], 3.0)],
    ));
    let text = scrape(store).await;
    let got = samples(&text, "requests");
    assert_eq!(got.len(), 3);
    let names: Vec<&str> = got[0].labels.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "DCOS_SPACE",
            "cluster_id",
            "container_id",
            "executor_id",
            "framework_id",
            "framework_name",
            "hostname",
            "mesos_id",
            "route",
            "task_id",
            "task_name",
            "zone"
        ]
    );
    // Node series first (batch order), empty strings for what they lack.
    assert_eq!(label(&got[0], "container_id"), Some(""));
    assert_eq!(label(&got[0], "route"), Some(""));
    assert_eq!(label(&got[1], "route"), Some("/a"));
    assert_eq!(label(&got[2], "container_id"), Some("c1"));
    assert_eq!(label(&got[2], "DCOS_SPACE"), Some("/web"));
    assert_eq!(label(&got[2], "zone"), Some("z1"));
    assert_eq!(label(&got[2], "route"), Some(""));
    assert_eq!(
        got.iter().map(|s| s.value.as_str()).collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
}

#[tokio::test]
async fn names_and_labels_are_sanitised_and_values_escaped() {
    let store = Store::new();
    store.publish(batch(
        Source::App,
        None,
        Dimensions {
            labels: BTreeMap::from([
                ("com.example/owner".into(), "team \"a\"".into()),
                ("9th".into(), "line\nbreak".into()),
            ]),
            ..node_dims()
        },
        vec![
            gauge(
                "my-app.Latency/ms",
                &[("a.b", "back\\slash"), ("__name__", "n"), ("1x", "x")],
                1.5,
            ),
            gauge("5xx.errors", &[], 2.0),
            gauge("caf\u{e9}", &[("k", "\u{263a}")], 3.0),
        ],
    ));
    let text = scrape(store).await;
    assert!(text.contains("# TYPE my_app_Latency_ms gauge\n"), "{text}");
    assert!(
        text.contains("# HELP my_app_Latency_ms my-app.Latency/ms\n"),
        "{text}"
    );
    let s = &samples(&text, "my_app_Latency_ms")[0];
    assert_eq!(label(s, "a_b"), Some("back\\slash"));
    assert_eq!(label(s, "label__name__"), Some("n"));
    assert_eq!(label(s, "_1x"), Some("x"));
    assert_eq!(label(s, "com_example_owner"), Some("team \"a\""));
    // Tag values cannot hold a newline (the series key separator); dimension labels can.
    assert_eq!(label(s, "_9th"), Some("line\nbreak"));
    assert!(text.contains(r#"_9th="line\nbreak""#), "{text}");
    assert!(text.contains(r#"a_b="back\\slash""#), "{text}");
    assert!(text.contains(r#"com_example_owner="team \"a\"""#), "{text}");
    assert_eq!(samples(&text, "_5xx_errors")[0].value, "2");
    let s = &samples(&text, "caf_")[0];
    assert_eq!(label(s, "k"), Some("\u{263a}"));
}

#[tokio::test]
async fn counters_expose_running_totals() {
    let store = Store::new();
    store.publish(batch(
        Source::App,
        None,
        node_dims(),
        vec![
            counter("hits", &[], 2.0, 1234.0),
            counter("done.total", &[], 1.0, 7.0),
            counter("big", &[], 1.0, 1e20),
            gauge("corral.flush.count_total", &[], 9.0).with_kind(Kind::Cumulative),
        ],
    ));
    let text = scrape(store).await;
    assert!(text.contains("# TYPE hits_total counter\nhits_total{"));
    assert_eq!(samples(&text, "hits_total")[0].value, "1234");
    assert_eq!(samples(&text, "done_total")[0].value, "7");
    assert!(!text.contains("done_total_total"));
    assert_eq!(samples(&text, "big_total")[0].value, "1e20");
    assert_eq!(samples(&text, "corral_flush_count_total")[0].value, "9");
}

#[tokio::test]
async fn timer_statistics_are_gauges_under_their_v0_names() {
    let store = Store::new();
    let stats = [
        (Stat::Count, 4.0),
        (Stat::Sum, 10.0),
        (Stat::Min, 1.0),
        (Stat::Max, 4.0),
        (Stat::Mean, 2.5),
        (Stat::Median, 2.5),
        (Stat::Stddev, 1.118),
        (Stat::percentile(99.0), 4.0),
        (Stat::percentile(99.9), 4.0),
    ];
    store.publish(batch(
        Source::App,
        None,
        node_dims(),
        stats
            .iter()
            .map(|&(s, v)| dp("api.t", &[("route", "/a")], s, Unit::None, v))
            .collect(),
    ));
    let text = scrape(store).await;
    for (name, value) in [
        ("api_t_count", "4"),
        ("api_t_sum", "10"),
        ("api_t_min", "1"),
        ("api_t_max", "4"),
        ("api_t_mean", "2.5"),
        ("api_t_median", "2.5"),
        ("api_t_stddev", "1.118"),
        ("api_t_p99", "4"),
        ("api_t_p99_9", "4"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} gauge\n")),
            "{name}: {text}"
        );
        let s = samples(&text, name);
        assert_eq!(s.len(), 1, "{name}");
        assert_eq!(s[0].value, value, "{name}");
        assert_eq!(label(&s[0], "route"), Some("/a"));
    }
}

#[tokio::test]
async fn tags_win_over_dimensions_without_duplicate_labels() {
    let store = Store::new();
    store.publish(batch(
        Source::Container,
        Some("c1"),
        Dimensions {
            labels: BTreeMap::from([("task_name".into(), "from-labels".into())]),
            ..container_dims("c1")
        },
        vec![dp(
            "mem.total",
            &[
                ("container_id", "c1-tag"),
                ("executor_id", "exec-tag"),
                ("a.b", "first"),
                ("a_b", "second"),
                ("multi", "1"),
                ("multi", "2"),
            ],
            Stat::Value,
            Unit::Bytes,
            1.0,
        )],
    ));
    let text = scrape(store).await;
    let s = &samples(&text, "mem_total")[0];
    assert_eq!(label(s, "container_id"), Some("c1-tag"));
    assert_eq!(label(s, "executor_id"), Some("exec-tag"));
    assert_eq!(label(s, "task_name"), Some("from-labels"));
    assert_eq!(label(s, "a_b"), Some("first"));
    assert_eq!(label(s, "multi"), Some("1,2"));
}

#[tokio::test]
async fn colliding_names_keep_one_series_and_one_type() {
    let store = Store::new();
    store.publish(batch(
        Source::Node,
        None,
        node_dims(),
        vec![dp("load", &[], Stat::Value, Unit::None, 1.0)],
    ));
    store.publish(batch(
        Source::App,
        None,
        node_dims(),
        vec![
            // Same name and labels as the host's `load`: the host series is kept.
            gauge("load", &[], 99.0),
            // `a.b` and `a_b` are both `a_b`: the first in API order is kept.
            gauge("a.b", &[], 1.0),
            gauge("a_b", &[], 2.0),
            gauge("a_b", &[("k", "v")], 3.0),
            // A bare tag has an empty value, which Prometheus cannot tell from no label.
            gauge("a_b", &[("k", "")], 4.0),
            // Counter `y` and gauge `y.total` are both `y_total`: the first (the counter) wins.
            counter("y", &[], 1.0, 5.0),
            gauge("y.total", &[("other", "1")], 6.0),
            // A gauge `x_count` and a timer `x`'s count share one gauge family.
            gauge("x_count", &[], 7.0),
            dp("x", &[], Stat::Count, Unit::None, 8.0),
            dp("x", &[("t", "1")], Stat::Count, Unit::None, 9.0),
        ],
    ));
    let text = scrape(store).await;
    let vals = |name| {
        samples(&text, name)
            .into_iter()
            .map(|s| s.value)
            .collect::<Vec<_>>()
    };
    assert_eq!(vals("load"), ["1"]);
    assert_eq!(vals("a_b"), ["1", "3"]);
    assert!(text.contains("# TYPE y_total counter\n"));
    assert_eq!(vals("y_total"), ["5"]);
    assert!(!text.contains("other="));
    assert_eq!(vals("x_count"), ["8", "9"], "{text}");
}

#[tokio::test]
async fn special_values() {
    let store = Store::new();
    store.publish(batch(
        Source::App,
        None,
        node_dims(),
        vec![
            gauge("nan", &[], f64::NAN),
            gauge("inf", &[], f64::INFINITY),
            gauge("neginf", &[], f64::NEG_INFINITY),
            gauge("small", &[], 1.5e-9),
            gauge("neg", &[], -0.25),
        ],
    ));
    let text = scrape(store).await;
    for (name, value) in [
        ("nan", "NaN"),
        ("inf", "+Inf"),
        ("neginf", "-Inf"),
        ("small", "1.5e-9"),
        ("neg", "-0.25"),
    ] {
        assert_eq!(samples(&text, name)[0].value, value);
    }
}

/// Above the blocking-pool threshold; also checks that the families are grouped no matter how
/// their series are spread over batches.
#[tokio::test]
async fn large_store() {
    let store = Store::new();
    let mut batches = Vec::new();
    for c in 0..50 {
        let id = format!("c{c}");
        let points = (0..600)
            .map(|i| {
                counter(
                    &format!("m{}", i % 60),
                    &[("i", &i.to_string())],
                    1.0,
                    (c * i) as f64,
                )
            })
            .collect();
        batches.push(batch(Source::App, Some(&id), container_dims(&id), points));
    }
    store.replace(Source::App, &batches);
    let text = scrape(store).await;
    assert_eq!(text.matches("# TYPE ").count(), 60);
    assert_eq!(samples(&text, "m7_total").len(), 500);
    assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 30_000);
}

#[tokio::test]
async fn untagged_series_of_many_batches_keep_their_own_labels() {
    let store = Store::new();
    let mut batches = Vec::new();
    for c in 0..3 {
        let id = format!("c{c}");
        let mut points = vec![
            gauge("a", &[], c as f64),
            gauge("b", &[], 10.0 + c as f64),
            gauge("c", &[], 20.0 + c as f64),
            gauge("d", &[], 30.0 + c as f64),
        ];
        if c == 1 {
            points.push(gauge("b", &[("k", "v")], 11.5));
        }
        batches.push(batch(
            Source::Container,
            Some(&id),
            container_dims(&id),
            points,
        ));
    }
    store.replace(Source::Container, &batches);
    let text = scrape(store).await;
    // `a` writes each container's block, `b` (other label names) cannot use it, `d` copies
    // the one `c` wrote.
    for family in ["a", "b", "c", "d"] {
        let got = samples(&text, family);
        assert_eq!(got.len(), if family == "b" { 4 } else { 3 }, "{text}");
        for s in &got {
            let v: f64 = s.value.parse().unwrap();
            let want = format!("c{}", (v as usize) % 10);
            assert_eq!(label(s, "container_id"), Some(want.as_str()), "{text}");
            assert_eq!(label(s, "task_name"), Some("web"));
            // Only `b` has a series with `k`, so only `b` has the label.
            assert_eq!(label(s, "k").is_some(), family == "b", "{text}");
        }
    }
}
