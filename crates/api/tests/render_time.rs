//! Timing of a 100k-datapoint response; run with
//! `cargo test -p corral-api --release --test render_time -- --ignored --nocapture`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use corral_api::{router, ApiState};
use corral_model::{
    Datapoint, Dimensions, Identity, MetricBatch, SeriesKey, Source, Stat, Store, Unit,
};
use http_body_util::BodyExt;
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing, not a check; run in release"]
async fn render_100k_datapoints() {
    let stats = [
        Stat::Count,
        Stat::Max,
        Stat::Mean,
        Stat::Min,
        Stat::percentile(99.0),
        Stat::Value,
    ];
    let points: Vec<Datapoint> = (0..100_000)
        .map(|i| {
            let key = SeriesKey::new(
                &format!("myapp.requests.endpoint_{:05}", i / stats.len()),
                [
                    ("env", "prod"),
                    ("region", if i % 2 == 0 { "us-east-1" } else { "eu-west-1" }),
                ],
            );
            Datapoint::new(key, stats[i % stats.len()], Unit::None, i as f64 * 1.37)
        })
        .collect();
    let mut batch = MetricBatch {
        source: Source::App,
        container_id: None,
        dimensions: Arc::new(Dimensions {
            mesos_id: "agent-S0".into(),
            hostname: "node-1".into(),
            ..Dimensions::default()
        }),
        timestamp: SystemTime::now(),
        points,
    };
    batch.sort();
    let store = Store::new();
    store.publish(std::sync::Arc::new(batch));
    let app = router(ApiState::new(
        Arc::new(store),
        Arc::new(Identity::default()),
    ));

    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..20 {
        let start = Instant::now();
        let req = Request::builder()
            .uri("/v0/node/app")
            .body(Body::empty())
            .unwrap();
        let res = app.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        size = res.into_body().collect().await.unwrap().to_bytes().len();
        times.push(start.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    let min = times[0];
    println!(
        "100k datapoints, {:.1} MB: min {:?}, median {:?} ({:.0} ns/datapoint)",
        size as f64 / 1e6,
        min,
        median,
        median.as_nanos() as f64 / 100_000.0
    );
    assert!(median < Duration::from_secs(5));
}
