//! API requests per second through the router (routing, handler, rendering, body collection;
//! no socket), with 10,000 series in the store:
//! - `node_10k`: all 10,000 in the node batch, so `/v0/node` (JSON) and `/metrics`
//!   (Prometheus) render the same datapoints;
//! - `mixed_10k`: a node's realistic spread, 60 host metrics plus 100 containers with 40
//!   resource metrics and 59 app metrics each (counters with tags, gauges, a timer), every
//!   container series carrying the container's dimensions and labels.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use corral_api::{router, ApiState};
use corral_model::{
    Datapoint, Dimensions, Identity, Kind, MetricBatch, NodeIds, SeriesKey, Source, Stat, Store,
    Unit,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http_body_util::BodyExt;
use tower::ServiceExt;

fn node_dims() -> Dimensions {
    Dimensions {
        mesos_id: "b3f5a9c2-8d1e-4f7a-9c3b-2e6d8f0a1b4c-S3".into(),
        cluster_id: "4c2e8f1a-7b3d-4e9f-a6c5-1d8b2f7e3a90".into(),
        hostname: "10.0.4.17".into(),
        ..Dimensions::default()
    }
}

fn container_dims(i: usize) -> Dimensions {
    Dimensions {
        container_id: format!("8f2c4e6a-1b3d-4f5a-9c7e-{i:012}"),
        executor_id: format!("web-{i}.instance-5a1f3c2e-9b7d-11ee-8c4a-0242ac110002._app.1"),
        framework_id: "9d3b1e5f-2a4c-4b6d-8e0f-7a9c1b3d5e7f-0001".into(),
        framework_name: "marathon".into(),
        framework_role: "slave_public".into(),
        framework_principal: "dcos_marathon".into(),
        task_id: format!("web-{i}.instance-5a1f3c2e-9b7d-11ee-8c4a-0242ac110002._app.1"),
        task_name: format!("web-{i}"),
        labels: BTreeMap::from([
            ("DCOS_SPACE".into(), format!("/prod/web-{i}")),
            ("HAPROXY_GROUP".into(), "external".into()),
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
        timestamp: SystemTime::now(),
        points,
    };
    b.sort();
    Arc::new(b)
}

fn point(name: &str, tags: &[(&str, &str)], stat: Stat, unit: Unit, value: f64) -> Datapoint {
    Datapoint::new(
        SeriesKey::new(name, tags.iter().copied()),
        stat,
        unit,
        value,
    )
}

/// 10,000 host-style datapoints in the node batch; a quarter carry a tag.
fn node_10k() -> Store {
    let points = (0..10_000)
        .map(|i| {
            let name = format!("host.group{}.metric{}", i / 100, i % 100);
            let iface = format!("eth{}", i % 4);
            let tags: &[(&str, &str)] = if i % 4 == 0 {
                &[("interface", &iface)]
            } else {
                &[]
            };
            point(
                &name,
                tags,
                Stat::Value,
                Unit::Bytes,
                i as f64 * 1024.5 + 0.25,
            )
        })
        .collect();
    let store = Store::new();
    store.publish(batch(Source::Node, None, node_dims(), points));
    store
}

fn mixed_10k() -> Store {
    let store = Store::new();
    let host = (0..60)
        .map(|i| point(&format!("host.m{i}"), &[], Stat::Value, Unit::Count, 1.5))
        .collect();
    store.publish(batch(Source::Node, None, node_dims(), host));
    let mut containers = Vec::new();
    let mut apps = Vec::new();
    for c in 0..100 {
        let dims = container_dims(c);
        let id = dims.container_id.clone();
        let resources = (0..40)
            .map(|i| {
                point(
                    &format!("container.resource{i}"),
                    &[],
                    Stat::Value,
                    Unit::Bytes,
                    (c * i) as f64 * 4096.0,
                )
            })
            .collect();
        containers.push(batch(Source::Container, Some(&id), dims.clone(), resources));
        let mut app = Vec::new();
        for i in 0..40 {
            let route = format!("/api/v{}", i % 3);
            let mut counter = point(
                &format!("http.requests{i}"),
                &[("route", &route), ("status", "200")],
                Stat::Value,
                Unit::None,
                3.0,
            )
            .with_kind(Kind::Counter);
            counter.total = 12_345.0 + i as f64;
            app.push(counter);
        }
        for i in 0..10 {
            app.push(point(
                &format!("queue.depth{i}"),
                &[],
                Stat::Value,
                Unit::None,
                i as f64,
            ));
        }
        for stat in [
            Stat::Count,
            Stat::Sum,
            Stat::Min,
            Stat::Max,
            Stat::Mean,
            Stat::Median,
            Stat::Stddev,
            Stat::percentile(90.0),
            Stat::percentile(99.0),
        ] {
            app.push(point("http.latency", &[], stat, Unit::None, 12.625));
        }
        apps.push(batch(Source::App, Some(&id), dims, app));
    }
    store.replace(Source::Container, &containers);
    store.replace(Source::App, &apps);
    store
}

fn app(store: Store) -> Router {
    let identity = Arc::new(Identity::new(NodeIds {
        mesos_id: "b3f5a9c2-8d1e-4f7a-9c3b-2e6d8f0a1b4c-S3".into(),
        cluster_id: "4c2e8f1a-7b3d-4e9f-a6c5-1d8b2f7e3a90".into(),
        hostname: "10.0.4.17".into(),
    }));
    router(ApiState::new(Arc::new(store), identity))
}

async fn get(app: &Router, uri: &str) -> usize {
    let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{uri}");
    res.into_body().collect().await.unwrap().to_bytes().len()
}

fn bench(c: &mut Criterion) {
    // A multi-threaded runtime like the daemon's, so that large renders can use the blocking
    // pool as they do in production.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (scenario, store, routes) in [
        ("node_10k", node_10k(), &["/v0/node", "/metrics"][..]),
        ("mixed_10k", mixed_10k(), &["/v0/node", "/metrics"][..]),
    ] {
        let points = store.datapoints();
        let app = app(store);
        let mut group = c.benchmark_group(format!("api_{scenario}"));
        group.throughput(Throughput::Elements(1));
        group.measurement_time(Duration::from_secs(5));
        group.sample_size(30);
        for &uri in routes {
            let bytes = rt.block_on(get(&app, uri));
            println!("{scenario}: {points} datapoints in the store; GET {uri}: {bytes} bytes");
            group.bench_function(uri, |b| {
                b.iter(|| black_box(rt.block_on(get(&app, uri))));
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
