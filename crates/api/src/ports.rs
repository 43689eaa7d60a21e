//! The per-container StatsD port API (CONTRACT §3), used by the hook that launches containers
//! to learn the `STATSD_UDP_HOST`/`STATSD_UDP_PORT` it injects.
//!
//! - `PUT /v0/statsd/containers/{id}` → `{"statsd_host": "...", "statsd_port": N}`, idempotent
//! - `DELETE /v0/statsd/containers/{id}` → 204 (404 when the container had no port)
//! - `GET /v0/statsd/containers` → the assignments

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use corral_model::PortError;
use serde::Deserialize;

use crate::ApiState;

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/statsd/containers", get(list).fallback(not_allowed("GET")))
        .route(
            "/statsd/containers/{id}",
            put(assign)
                .delete(release)
                .fallback(not_allowed("PUT, DELETE")),
        )
}

fn not_allowed(allow: &'static str) -> impl Fn() -> std::future::Ready<Response> + Clone + Send {
    move || {
        std::future::ready(
            (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, HeaderValue::from_static(allow))],
            )
                .into_response(),
        )
    }
}

#[derive(Deserialize)]
struct IdPath {
    id: String,
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "per-container ports are not enabled\n",
    )
        .into_response()
}

fn error(e: PortError) -> Response {
    let status = match e {
        PortError::InvalidId(_) => StatusCode::BAD_REQUEST,
        PortError::Exhausted => StatusCode::SERVICE_UNAVAILABLE,
        PortError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, format!("{e}\n")).into_response()
}

async fn list(State(s): State<ApiState>) -> Response {
    match &s.ports {
        Some(p) => Json(p.list()).into_response(),
        None => Json(Vec::<corral_model::PortAssignment>::new()).into_response(),
    }
}

async fn assign(State(s): State<ApiState>, Path(p): Path<IdPath>) -> Response {
    let Some(ports) = s.ports.clone() else {
        return unavailable();
    };
    // Binding a socket and writing the assignment to disk block briefly.
    match tokio::task::spawn_blocking(move || ports.assign(&p.id)).await {
        Ok(Ok(a)) => {
            Json(serde_json::json!({"statsd_host": a.statsd_host, "statsd_port": a.statsd_port}))
                .into_response()
        }
        Ok(Err(e)) => error(e),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn release(State(s): State<ApiState>, Path(p): Path<IdPath>) -> Response {
    let Some(ports) = s.ports.clone() else {
        return unavailable();
    };
    match tokio::task::spawn_blocking(move || ports.release(&p.id)).await {
        Ok(Ok(true)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Ok(false)) => StatusCode::NOT_FOUND.into_response(),
        Ok(Err(e)) => error(e),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
