//! The v0 handlers.
//!
//! StatsD data (the app routes, and the container list, which holds containers that only have
//! app metrics) is read once the flush under way, if any, has published: the flush takes the
//! previous batches out of the store before it makes the next ones (see
//! [`corral_model::Store::retract`]). Host and container resource metrics are read at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use corral_model::{store::points_named, Datapoint, MetricBatch, Source};
use serde::Deserialize;

use crate::render;
use crate::ApiState;

/// Batches above this size are rendered on the blocking pool so that one large response does
/// not stall the other requests sharing its worker thread.
const BLOCKING_RENDER_POINTS: usize = 20_000;

/// The v0 routes, relative to a prefix.
pub(crate) fn v0() -> Router<ApiState> {
    Router::new()
        .route("/ping", get_only(ping))
        .route("/node", get_only(node))
        .route("/node/app", get_only(node_app))
        .route("/containers", get_only(containers))
        .route("/containers/{id}", get_only(container))
        .route("/containers/{id}/app", get_only(container_app))
        .route(
            "/containers/{id}/app/{metric}",
            get_only(container_app_metric),
        )
}

/// GET (and HEAD, which axum answers from the GET handler without a body); anything else is 405.
fn get_only<H, T>(handler: H) -> MethodRouter<ApiState>
where
    H: axum::handler::Handler<T, ApiState>,
    T: 'static,
{
    get(handler).fallback(method_not_allowed)
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, HeaderValue::from_static("GET"))],
    )
        .into_response()
}

/// Guards `/system/v1/agent/{mesos_id}/...`: only this node's id is served. Until the first
/// agent poll the node's mesos_id is unknown (empty), and no id can be shown to be ours, so
/// every agent-prefixed request is 404 then.
pub(crate) async fn require_this_agent(
    State(state): State<ApiState>,
    Path(params): Path<HashMap<String, String>>,
    req: Request,
    next: Next,
) -> Response {
    let ours = state.identity.mesos_id();
    match params.get("mesos_id") {
        Some(id) if !ours.is_empty() && *id == ours => next.run(req).await,
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

// Path parameters are taken by name: under the agent prefix the path also holds `mesos_id`.
#[derive(Deserialize)]
struct ContainerPath {
    id: String,
}

#[derive(Deserialize)]
struct MetricPath {
    id: String,
    metric: String,
}

async fn ping() -> Response {
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let mut body = Vec::with_capacity(48);
    body.extend_from_slice(b"{\"ok\":true,\"timestamp\":\"");
    body.extend_from_slice(now.as_bytes());
    body.extend_from_slice(b"\"}");
    json(body)
}

async fn node(State(s): State<ApiState>) -> Response {
    whole_batch(s.store.get(Source::Node, None)).await
}

async fn node_app(State(s): State<ApiState>) -> Response {
    whole_batch(s.store.get_published(Source::App, None).await).await
}

async fn containers(State(s): State<ApiState>) -> Response {
    json(render::string_array(&s.store.containers_published().await))
}

async fn container(State(s): State<ApiState>, Path(p): Path<ContainerPath>) -> Response {
    whole_batch(s.store.get(Source::Container, Some(&p.id))).await
}

async fn container_app(State(s): State<ApiState>, Path(p): Path<ContainerPath>) -> Response {
    whole_batch(s.store.get_published(Source::App, Some(&p.id)).await).await
}

async fn container_app_metric(State(s): State<ApiState>, Path(p): Path<MetricPath>) -> Response {
    let Some(batch) = s.store.get_published(Source::App, Some(&p.id)).await else {
        return no_content();
    };
    let points = points_named(&batch, &p.metric);
    // Exact-name hits are a handful of series: no need for the blocking pool.
    metrics(&batch, points)
}

async fn whole_batch(batch: Option<Arc<MetricBatch>>) -> Response {
    let Some(batch) = batch else {
        return no_content();
    };
    if batch.points.len() < BLOCKING_RENDER_POINTS {
        return metrics(&batch, &batch.points);
    }
    if !batch.points.iter().any(Datapoint::in_interval) {
        return no_content();
    }
    json(render::streamed("a batch", move |chunk, emit| {
        render::metrics_body_chunks(&batch, &batch.points, chunk, emit)
    }))
}

/// A metrics body, or 204 with no body when there are no datapoints (what dcos-metrics
/// clients expect for "no data").
fn metrics(batch: &MetricBatch, points: &[Datapoint]) -> Response {
    if !points.iter().any(Datapoint::in_interval) {
        return no_content();
    }
    json(render::metrics_body(batch, points))
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn json(body: impl Into<axum::body::Body>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.into(),
    )
        .into_response()
}
