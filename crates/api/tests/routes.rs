use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use corral_api::{router, ApiState};
use corral_model::{
    Datapoint, Dimensions, Identity, MetricBatch, NodeIds, SeriesKey, Source, Stat, Store, Unit,
};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const AGENT: &str = "agent-S0";
/// 2026-01-01T00:00:00.123Z
fn ts() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_225_600_123)
}
const TS: &str = "2026-01-01T00:00:00.123Z";

fn key(name: &str, tags: &[(&str, &str)]) -> SeriesKey {
    SeriesKey::new(name, tags.iter().copied())
}

fn dp(name: &str, tags: &[(&str, &str)], stat: Stat, unit: Unit, value: f64) -> Datapoint {
    Datapoint::new(key(name, tags), stat, unit, value)
}

fn node_dims() -> Dimensions {
    Dimensions {
        mesos_id: AGENT.into(),
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
        framework_role: "slave_public".into(),
        framework_principal: "dcos_marathon".into(),
        task_id: "web.1234".into(),
        task_name: "web".into(),
        labels: BTreeMap::from([
            ("DCOS_SPACE".into(), "/web".into()),
            ("team".into(), "a".into()),
        ]),
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
        timestamp: ts(),
        points,
    };
    b.sort();
    Arc::new(b)
}

fn identity(mesos_id: &str) -> Arc<Identity> {
    Arc::new(Identity::new(NodeIds {
        mesos_id: mesos_id.into(),
        cluster_id: "cluster-1".into(),
        hostname: "node-1".into(),
    }))
}

fn filled_store() -> Arc<Store> {
    let store = Store::new();
    store.publish(batch(
        Source::Node,
        None,
        node_dims(),
        vec![
            dp("mem.total", &[], Stat::Value, Unit::Bytes, 4476928.0),
            dp("load.1min", &[], Stat::Value, Unit::Count, 0.5),
            dp("cpu.idle", &[], Stat::Value, Unit::Percent, 0.0),
        ],
    ));
    store.publish(batch(
        Source::App,
        None,
        node_dims(),
        vec![
            dp("foo", &[], Stat::Value, Unit::None, 1.0),
            dp("foo", &[("env", "prod")], Stat::Value, Unit::None, 2.0),
            dp("foo.bar", &[], Stat::Value, Unit::None, 3.0),
            dp("foobar", &[], Stat::Value, Unit::None, 4.0),
            dp("fo", &[], Stat::Value, Unit::None, 5.0),
            dp("lat", &[], Stat::percentile(99.9), Unit::None, 12.5),
            dp("lat", &[], Stat::Count, Unit::None, 10.0),
        ],
    ));
    store.publish(batch(
        Source::Container,
        Some("c1"),
        container_dims("c1"),
        vec![
            dp("mem.total", &[], Stat::Value, Unit::Bytes, 1024.0),
            dp("cpus.user.time", &[], Stat::Value, Unit::Seconds, 1.25),
        ],
    ));
    store.publish(batch(
        Source::App,
        Some("c1"),
        container_dims("c1"),
        vec![
            dp(
                "req",
                &[("a", "1"), ("a", "2"), ("b", "x")],
                Stat::Value,
                Unit::None,
                -3.0,
            ),
            dp("gauge.nan", &[], Stat::Value, Unit::None, f64::NAN),
            dp("gauge.inf", &[], Stat::Value, Unit::None, f64::INFINITY),
            dp(
                "gauge.neginf",
                &[],
                Stat::Value,
                Unit::None,
                f64::NEG_INFINITY,
            ),
            dp("foo", &[], Stat::Value, Unit::None, 7.0),
            dp("foo.bar", &[], Stat::Value, Unit::None, 8.0),
            dp("foobar", &[], Stat::Value, Unit::None, 9.0),
        ],
    ));
    store.publish(batch(
        Source::App,
        Some("parent.child"),
        container_dims("parent.child"),
        vec![dp("hits", &[], Stat::Count, Unit::None, 1.0)],
    ));
    store.publish(batch(
        Source::Container,
        Some("web app/1"),
        container_dims("web app/1"),
        vec![dp("mem.total", &[], Stat::Value, Unit::Bytes, 1.0)],
    ));
    // A container whose latest batches hold nothing.
    store.publish(batch(
        Source::Container,
        Some("idle"),
        container_dims("idle"),
        vec![],
    ));
    store.publish(batch(
        Source::App,
        Some("idle"),
        container_dims("idle"),
        vec![],
    ));
    Arc::new(store)
}

fn app() -> Router {
    router(ApiState::new(filled_store(), identity(AGENT)))
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.headers[header::CONTENT_TYPE], "application/json");
        serde_json::from_slice(&self.body).expect("valid JSON")
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

async fn call(app: &Router, method: Method, uri: &str) -> Resp {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

async fn get(app: &Router, uri: &str) -> Resp {
    call(app, Method::GET, uri).await
}

fn assert_no_content(r: &Resp, uri: &str) {
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{uri}");
    assert!(r.body.is_empty(), "{uri}: {:?}", r.text());
}

const PREFIXES: [&str; 3] = [
    "/v0",
    "/system/v1/metrics/v0",
    "/system/v1/agent/agent-S0/metrics/v0",
];

const ROUTES: [&str; 13] = [
    "/ping",
    "/node",
    "/node/app",
    "/containers",
    "/containers/c1",
    "/containers/c1/app",
    "/containers/c1/app/foo",
    "/containers/c1/app/nope",
    "/containers/idle",
    "/containers/idle/app",
    "/containers/missing",
    "/containers/missing/app",
    "/containers/missing/app/foo",
];

fn node_dims_json() -> Value {
    json!({"mesos_id": AGENT, "cluster_id": "cluster-1", "hostname": "node-1"})
}

fn container_dims_json(id: &str) -> Value {
    json!({
        "mesos_id": AGENT, "cluster_id": "cluster-1", "container_id": id,
        "executor_id": "exec-1", "framework_id": "fw-1", "framework_name": "marathon",
        "framework_role": "slave_public", "framework_principal": "dcos_marathon",
        "task_id": "web.1234", "task_name": "web", "hostname": "node-1",
        "labels": {"DCOS_SPACE": "/web", "team": "a"}
    })
}

#[tokio::test]
async fn ping() {
    let app = app();
    let r = get(&app, "/v0/ping").await;
    let v = r.json();
    assert_eq!(v["ok"], json!(true));
    let t = v["timestamp"].as_str().unwrap();
    assert!(t.ends_with('Z'), "{t}");
    let parsed = humantime::parse_rfc3339(t).unwrap();
    let age = SystemTime::now().duration_since(parsed).unwrap_or_default();
    assert!(age < Duration::from_secs(60));
    assert_eq!(v.as_object().unwrap().len(), 2);
}

#[tokio::test]
async fn node_metrics() {
    let app = app();
    let r = get(&app, "/v0/node").await;
    assert_eq!(
        r.json(),
        json!({
            "datapoints": [
                {"name": "cpu.idle", "value": 0, "unit": "percent", "timestamp": TS},
                {"name": "load.1min", "value": 0.5, "unit": "count", "timestamp": TS},
                {"name": "mem.total", "value": 4476928, "unit": "bytes", "timestamp": TS},
            ],
            "dimensions": node_dims_json(),
        })
    );
    // Integral values are written as Go's encoder did, without a fraction.
    let text = r.text();
    assert!(text.contains(r#""value":4476928,"#), "{text}");
    assert!(text.contains(r#""value":0,"#), "{text}");
    assert!(!text.contains(".0,"), "{text}");
    // Field order as dcos-metrics.
    assert!(text.starts_with(
        r#"{"datapoints":[{"name":"cpu.idle","value":0,"unit":"percent","timestamp":"2026-01-01T00:00:00.123Z"}"#
    ));
    assert!(text.ends_with(
        r#""dimensions":{"mesos_id":"agent-S0","cluster_id":"cluster-1","hostname":"node-1"}}"#
    ));
}

#[tokio::test]
async fn node_app_metrics() {
    let app = app();
    let r = get(&app, "/v0/node/app").await;
    assert_eq!(
        r.json(),
        json!({
            "datapoints": [
                {"name": "fo", "value": 5, "unit": "", "timestamp": TS},
                {"name": "foo", "value": 1, "unit": "", "timestamp": TS},
                {"name": "foo", "value": 2, "unit": "", "timestamp": TS, "tags": {"env": "prod"}},
                {"name": "foo.bar", "value": 3, "unit": "", "timestamp": TS},
                {"name": "foobar", "value": 4, "unit": "", "timestamp": TS},
                {"name": "lat.count", "value": 10, "unit": "", "timestamp": TS},
                {"name": "lat.p99_9", "value": 12.5, "unit": "", "timestamp": TS},
            ],
            "dimensions": node_dims_json(),
        })
    );
}

#[tokio::test]
async fn container_list() {
    let app = app();
    assert_eq!(
        get(&app, "/v0/containers").await.json(),
        json!(["c1", "idle", "parent.child", "web app/1"])
    );

    let empty = router(ApiState::new(Arc::new(Store::new()), identity(AGENT)));
    let r = get(&empty, "/v0/containers").await;
    assert_eq!(r.json(), json!([]));
    assert_eq!(r.text(), "[]");
}

#[tokio::test]
async fn container_metrics() {
    let app = app();
    assert_eq!(
        get(&app, "/v0/containers/c1").await.json(),
        json!({
            "datapoints": [
                {"name": "cpus.user.time", "value": 1.25, "unit": "seconds", "timestamp": TS},
                {"name": "mem.total", "value": 1024, "unit": "bytes", "timestamp": TS},
            ],
            "dimensions": container_dims_json("c1"),
        })
    );
}

#[tokio::test]
async fn container_app_metrics_special_values_and_duplicate_tags() {
    let app = app();
    let r = get(&app, "/v0/containers/c1/app").await;
    assert_eq!(
        r.json(),
        json!({
            "datapoints": [
                {"name": "foo", "value": 7, "unit": "", "timestamp": TS},
                {"name": "foo.bar", "value": 8, "unit": "", "timestamp": TS},
                {"name": "foobar", "value": 9, "unit": "", "timestamp": TS},
                {"name": "gauge.inf", "value": "Infinity", "unit": "", "timestamp": TS},
                {"name": "gauge.nan", "value": "NaN", "unit": "", "timestamp": TS},
                {"name": "gauge.neginf", "value": "-Infinity", "unit": "", "timestamp": TS},
                {"name": "req", "value": -3, "unit": "", "timestamp": TS, "tags": {"a": "1,2", "b": "x"}},
            ],
            "dimensions": container_dims_json("c1"),
        })
    );
    assert!(
        r.text().contains(r#""tags":{"a":"1,2","b":"x"}"#),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn exact_metric_lookup() {
    let app = app();
    assert_eq!(
        get(&app, "/v0/containers/c1/app/foo").await.json(),
        json!({
            "datapoints": [{"name": "foo", "value": 7, "unit": "", "timestamp": TS}],
            "dimensions": container_dims_json("c1"),
        })
    );
    let names = |v: Value| -> Vec<String> {
        v["datapoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(get(&app, "/v0/containers/c1/app/foo.bar").await.json()),
        ["foo.bar"]
    );
    assert_eq!(
        names(get(&app, "/v0/containers/c1/app/foobar").await.json()),
        ["foobar"]
    );
    for uri in [
        "/v0/containers/c1/app/fo",
        "/v0/containers/c1/app/fooba",
        "/v0/containers/c1/app/nope",
        "/v0/containers/missing/app/foo",
        "/v0/containers/idle/app/foo",
    ] {
        assert_no_content(&get(&app, uri).await, uri);
    }
}

#[tokio::test]
async fn metric_with_stat_suffix_and_tags() {
    let store = Store::new();
    store.publish(batch(
        Source::App,
        Some("c"),
        node_dims(),
        vec![
            dp(
                "lat",
                &[("x", "2")],
                Stat::percentile(99.9),
                Unit::None,
                2.0,
            ),
            dp(
                "lat",
                &[("x", "1")],
                Stat::percentile(99.9),
                Unit::None,
                1.0,
            ),
            dp("lat", &[], Stat::Count, Unit::None, 3.0),
            dp("a/b", &[], Stat::Value, Unit::None, 4.0),
        ],
    ));
    let app = router(ApiState::new(Arc::new(store), identity(AGENT)));
    assert_eq!(
        get(&app, "/v0/containers/c/app/lat.p99_9").await.json()["datapoints"],
        json!([
            {"name": "lat.p99_9", "value": 1, "unit": "", "timestamp": TS, "tags": {"x": "1"}},
            {"name": "lat.p99_9", "value": 2, "unit": "", "timestamp": TS, "tags": {"x": "2"}},
        ])
    );
    // A percent-encoded `/` stays inside the metric segment.
    assert_eq!(
        get(&app, "/v0/containers/c/app/a%2Fb").await.json()["datapoints"][0]["value"],
        json!(4)
    );
    assert_no_content(&get(&app, "/v0/containers/c/app/lat").await, "lat");
}

#[tokio::test]
async fn no_data_is_204_with_empty_body() {
    let empty = router(ApiState::new(Arc::new(Store::new()), identity(AGENT)));
    for uri in [
        "/v0/node",
        "/v0/node/app",
        "/v0/containers/c1",
        "/v0/containers/c1/app",
        "/v0/containers/c1/app/foo",
    ] {
        assert_no_content(&get(&empty, uri).await, uri);
    }

    let app = app();
    for uri in [
        "/v0/containers/idle",
        "/v0/containers/idle/app",
        "/v0/containers/missing",
        "/v0/containers/missing/app",
        // Only app metrics for this one: no resource batch.
        "/v0/containers/parent.child",
    ] {
        assert_no_content(&get(&app, uri).await, uri);
    }

    // A batch with zero datapoints is no data too.
    let store = Store::new();
    store.publish(batch(Source::Node, None, node_dims(), vec![]));
    let app = router(ApiState::new(Arc::new(store), identity(AGENT)));
    assert_no_content(&get(&app, "/v0/node").await, "/v0/node");
}

#[tokio::test]
async fn container_ids_are_percent_decoded() {
    let app = app();
    let r = get(&app, "/v0/containers/parent.child/app").await.json();
    assert_eq!(r["dimensions"]["container_id"], json!("parent.child"));
    assert_eq!(
        r["datapoints"],
        json!([{"name": "hits.count", "value": 1, "unit": "", "timestamp": TS}])
    );
    let r = get(
        &app,
        "/system/v1/agent/agent-S0/metrics/v0/containers/parent.child/app/hits.count",
    )
    .await
    .json();
    assert_eq!(r["datapoints"][0]["name"], json!("hits.count"));

    let r = get(&app, "/v0/containers/web%20app%2F1").await.json();
    assert_eq!(r["dimensions"]["container_id"], json!("web app/1"));
    // Unencoded, the `/` splits the path: no such route.
    assert_eq!(
        get(&app, "/v0/containers/web%20app/1").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn every_prefix_serves_every_route() {
    let app = app();
    for route in ROUTES {
        let base = get(&app, &format!("/v0{route}")).await;
        for prefix in PREFIXES {
            let uri = format!("{prefix}{route}");
            let r = get(&app, &uri).await;
            assert_eq!(r.status, base.status, "{uri}");
            if route == "/ping" {
                assert_eq!(r.json()["ok"], json!(true));
            } else {
                assert_eq!(r.body, base.body, "{uri}");
            }
            if r.status == StatusCode::OK {
                assert_eq!(r.headers[header::CONTENT_TYPE], "application/json", "{uri}");
            }
        }
    }
}

#[tokio::test]
async fn another_agents_id_is_404() {
    let app = app();
    for route in ROUTES {
        for agent in ["other-S1", "agent-S", "agent-S00", "AGENT-S0"] {
            let uri = format!("/system/v1/agent/{agent}/metrics/v0{route}");
            let r = get(&app, &uri).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
        }
    }
}

#[tokio::test]
async fn agent_prefix_is_404_until_the_mesos_id_is_known() {
    let ident = identity("");
    let app = router(ApiState::new(filled_store(), ident.clone()));
    assert_eq!(
        get(&app, "/system/v1/agent/agent-S0/metrics/v0/ping")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Nothing matches an empty id either.
    assert_eq!(
        get(&app, "/system/v1/agent//metrics/v0/ping").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&app, "/v0/ping").await.status, StatusCode::OK);

    // The id is learned (or changes) at runtime.
    ident.set_mesos_id("agent-S0");
    assert_eq!(
        get(&app, "/system/v1/agent/agent-S0/metrics/v0/ping")
            .await
            .status,
        StatusCode::OK
    );
    ident.set_mesos_id("agent-S1");
    assert_eq!(
        get(&app, "/system/v1/agent/agent-S0/metrics/v0/ping")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/system/v1/agent/agent-S1/metrics/v0/ping")
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn other_methods_are_405_with_allow_get() {
    let app = app();
    for route in ROUTES {
        for prefix in PREFIXES {
            let uri = format!("{prefix}{route}");
            for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
                let r = call(&app, method.clone(), &uri).await;
                assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
                assert_eq!(r.headers[header::ALLOW], "GET", "{method} {uri}");
            }
        }
    }
}

#[tokio::test]
async fn head_is_get_without_a_body() {
    let app = app();
    let r = call(&app, Method::HEAD, "/v0/node").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let app = app();
    for uri in [
        "/",
        "/v0",
        "/v0/",
        "/v1/node",
        "/v0/nope",
        "/v0/ping/",
        "/v0/node/app/foo",
        "/v0/containers/c1/app/foo/bar",
        "/v0/containers/c1/resources",
        "/system/v1/metrics/v0/nope",
        "/system/v1/agent/agent-S0/metrics/v0/nope",
        "/system/v1/agent/agent-S0/metrics/v1/node",
    ] {
        assert_eq!(get(&app, uri).await.status, StatusCode::NOT_FOUND, "{uri}");
    }
}

#[tokio::test]
async fn dimensions_omit_empty_fields_but_keep_mesos_id_and_hostname() {
    let store = Store::new();
    store.publish(batch(
        Source::App,
        None,
        Dimensions::default(),
        vec![dp("x", &[], Stat::Value, Unit::None, 1.0)],
    ));
    store.publish(batch(
        Source::Container,
        Some("c"),
        Dimensions {
            container_id: "c".into(),
            task_name: "t".into(),
            hostname: "h".into(),
            ..Dimensions::default()
        },
        vec![dp("x", &[], Stat::Value, Unit::None, 1.0)],
    ));
    let app = router(ApiState::new(Arc::new(store), identity(AGENT)));
    let r = get(&app, "/v0/node/app").await;
    assert_eq!(
        r.json()["dimensions"],
        json!({"mesos_id": "", "hostname": ""})
    );
    assert!(r
        .text()
        .ends_with(r#""dimensions":{"mesos_id":"","hostname":""}}"#));
    let r = get(&app, "/v0/containers/c").await;
    assert_eq!(
        r.json()["dimensions"],
        json!({"mesos_id": "", "container_id": "c", "task_name": "t", "hostname": "h"})
    );
    assert!(r.text().ends_with(
        r#""dimensions":{"mesos_id":"","container_id":"c","task_name":"t","hostname":"h"}}"#
    ));
}

#[tokio::test]
async fn names_and_tags_are_escaped() {
    let store = Store::new();
    store.publish(batch(
        Source::App,
        None,
        node_dims(),
        vec![dp(
            "we\"ird\\name\t",
            &[("k\"", "v\u{1}é"), ("bare", "")],
            Stat::Value,
            Unit::None,
            1.0,
        )],
    ));
    let app = router(ApiState::new(Arc::new(store), identity(AGENT)));
    assert_eq!(
        get(&app, "/v0/node/app").await.json()["datapoints"],
        json!([{"name": "we\"ird\\name\t", "value": 1, "unit": "", "timestamp": TS,
                "tags": {"bare": "", "k\"": "v\u{1}é"}}])
    );
}

#[tokio::test]
async fn large_batches_render_completely() {
    let n = 50_000;
    let points = (0..n)
        .map(|i| {
            dp(
                &format!("m{i:06}"),
                &[("i", &i.to_string())],
                Stat::Value,
                Unit::None,
                i as f64,
            )
        })
        .collect();
    let store = Store::new();
    store.publish(batch(Source::App, None, node_dims(), points));
    let app = router(ApiState::new(Arc::new(store), identity(AGENT)));
    let v = get(&app, "/v0/node/app").await.json();
    let dps = v["datapoints"].as_array().unwrap();
    assert_eq!(dps.len(), n);
    assert_eq!(
        dps[n - 1],
        json!({"name": "m049999", "value": 49999, "unit": "", "timestamp": TS, "tags": {"i": "49999"}})
    );
}

#[tokio::test]
async fn counters_without_samples_in_the_interval_are_not_served() {
    let store = Arc::new(Store::new());
    let mut idle = dp("idle.counter", &[], Stat::Value, Unit::None, 0.0)
        .with_kind(corral_model::Kind::Counter);
    idle.total = 5.0;
    let mut busy = dp("busy.counter", &[], Stat::Value, Unit::None, 2.0)
        .with_kind(corral_model::Kind::Counter);
    busy.total = 7.0;
    store.publish(batch(
        Source::App,
        Some("c1"),
        node_dims(),
        vec![idle.clone(), busy],
    ));
    store.publish(batch(Source::App, Some("c2"), node_dims(), vec![idle]));
    let app = router(ApiState::new(store, identity("agent-1")));
    let r = get(&app, "/v0/containers/c1/app").await;
    assert_eq!(r.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let names: Vec<&str> = v["datapoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["busy.counter"]);
    assert_no_content(
        &get(&app, "/v0/containers/c1/app/idle.counter").await,
        "idle metric",
    );
    assert_no_content(&get(&app, "/v0/containers/c2/app").await, "idle container");
}

/// A flush takes the previous StatsD batches out of the store before it makes the next ones.
/// Requests for app data that arrive meanwhile are answered from the next ones (not with 204
/// or a partial list); host and container resource metrics are served without waiting.
/// Tokio's clock is paused, so the wait below takes no real time.
#[tokio::test(start_paused = true)]
async fn requests_during_a_flush_get_the_flushs_batches() {
    let store = filled_store();
    let app = router(ApiState::new(store.clone(), identity(AGENT)));
    let flush = store.retract(Source::App);
    let started = tokio::time::Instant::now();
    let app_routes = [
        "/v0/node/app",
        "/v0/containers",
        "/v0/containers/c1/app",
        "/v0/containers/c1/app/foo",
        "/system/v1/agent/agent-S0/metrics/v0/node/app",
        "/metrics",
    ];
    let pending: Vec<_> = app_routes
        .iter()
        .map(|&uri| {
            let app = app.clone();
            tokio::spawn(async move { get(&app, uri).await })
        })
        .collect();
    assert_eq!(get(&app, "/v0/node").await.status, StatusCode::OK);
    assert_eq!(get(&app, "/v0/containers/c1").await.status, StatusCode::OK);
    assert_eq!(started.elapsed(), Duration::ZERO);

    tokio::time::sleep(Duration::from_secs(1)).await;
    for (uri, p) in app_routes.iter().zip(&pending) {
        assert!(!p.is_finished(), "{uri} was answered during the flush");
    }
    store.replace(
        Source::App,
        &[
            batch(
                Source::App,
                None,
                node_dims(),
                vec![dp("next", &[], Stat::Value, Unit::None, 1.0)],
            ),
            batch(
                Source::App,
                Some("c1"),
                container_dims("c1"),
                vec![dp("foo", &[], Stat::Value, Unit::None, 70.0)],
            ),
            batch(
                Source::App,
                Some("c2"),
                container_dims("c2"),
                vec![dp("hits", &[], Stat::Count, Unit::None, 2.0)],
            ),
        ],
    );
    drop(flush);
    let mut answers = Vec::new();
    for p in pending {
        answers.push(p.await.unwrap());
    }
    assert_eq!(started.elapsed(), Duration::from_secs(1));

    let next = json!({
        "datapoints": [{"name": "next", "value": 1, "unit": "", "timestamp": TS}],
        "dimensions": node_dims_json(),
    });
    let foo = json!({
        "datapoints": [{"name": "foo", "value": 70, "unit": "", "timestamp": TS}],
        "dimensions": container_dims_json("c1"),
    });
    assert_eq!(answers[0].json(), next);
    assert_eq!(answers[1].json(), json!(["c1", "c2", "idle", "web app/1"]));
    assert_eq!(answers[2].json(), foo);
    assert_eq!(answers[3].json(), foo);
    assert_eq!(answers[4].json(), next);
    let exposition = answers[5].text();
    assert!(
        exposition.lines().any(|l| l.starts_with("next{")),
        "{exposition}"
    );
    assert!(!exposition.contains("foobar"), "{exposition}");
    assert!(exposition.lines().any(|l| l.starts_with("mem_total{")));
}
