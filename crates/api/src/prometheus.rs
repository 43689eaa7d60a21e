//! `/metrics`: everything in the store in the Prometheus text format (0.0.4).
//!
//! Names follow dcos-metrics' Prometheus producer, so dashboards built on it keep working:
//! the v0 datapoint name with every character outside `[a-zA-Z0-9_:]` replaced by `_` and no
//! prefix (`cpu.total` → `cpu_total`, `api.latency.p99` → `api_latency_p99`), a leading digit
//! guarded with `_`. Unlike dcos-metrics, case is kept: Prometheus names are case-sensitive,
//! and lowercasing would merge distinct StatsD series (`Hits` and `hits`).
//!
//! Types:
//! - Gauges, sets, host and container readings: `gauge`.
//! - StatsD counters: `counter` named `<name>_total` holding the running total (not the
//!   per-flush sum the v0 API shows); Corral's own totals and other monotonic values likewise
//!   (`_total` is not doubled when the name already ends in it).
//! - Timer and histogram statistics stay one `gauge` per statistic under their v0 names
//!   (`x_count`, `x_sum`, `x_min`, `x_max`, `x_mean`, `x_median`, `x_stddev`, `x_p99`). They
//!   are per-flush values; exposing them as a `summary` would make `x_count` and `x_sum`
//!   claim to be cumulative, and `rate()` over them would silently be wrong. (promtool's
//!   linter notes the `_count`/`_sum` suffixes on gauges; that is expected.)
//!
//! Labels of a series: the batch's non-empty dimensions (the eleven dcos-metrics fields, then
//! the `labels` map), overlaid by the datapoint's tags, which win on equal names. Label names
//! are sanitised like metric names but without `:`; a leading digit gets `_`, and a name
//! starting with the reserved `__` gets `label` in front. Several values of one tag key are
//! joined with `,` (as in the v0 JSON). An empty value is the same as no label to Prometheus,
//! so empty values are dropped, and every series of a family is written with the union of the
//! family's label names, `""` where it has none.
//!
//! Collisions after sanitising: a family's type is decided by its first datapoint (batches
//! ordered node, containers, app; each batch in API order), and datapoints of the other type
//! are left out; a series whose name and labels repeat an earlier one is left out too. Both
//! are counted in a debug log line.
//!
//! Samples carry no timestamp (as in dcos-metrics), so Prometheus stamps them at scrape time.

mod exposition;
mod text;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};

use crate::ApiState;
use exposition::{render, render_chunks};

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Stores with more datapoints than this are rendered on the blocking pool, so that a scrape
/// does not stall the other requests sharing its worker thread, and sent as they are rendered.
const BLOCKING_RENDER_POINTS: usize = 5_000;

/// GET (and HEAD) `/metrics`; any other method is 405.
pub(crate) fn route() -> MethodRouter<ApiState> {
    get(metrics).fallback(method_not_allowed)
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, HeaderValue::from_static("GET"))],
    )
        .into_response()
}

async fn metrics(State(s): State<ApiState>) -> Response {
    // After the StatsD flush under way, if any, has published (see `routes`).
    let batches = s.store.all_published().await;
    let points: usize = batches.iter().map(|b| b.points.len()).sum();
    let body = if points < BLOCKING_RENDER_POINTS {
        Body::from(render(&batches))
    } else {
        crate::render::streamed("/metrics", move |chunk, emit| {
            render_chunks(&batches, chunk, emit)
        })
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        body,
    )
        .into_response()
}
