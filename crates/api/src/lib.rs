//! Corral's HTTP API: the dcos-metrics v0 routes over the store of the latest batches.
//!
//! The v0 routes are served under `/v0`, `/system/v1/metrics/v0` (through Admin Router on a
//! master) and `/system/v1/agent/{mesos_id}/metrics/v0` (Admin Router's per-agent proxy path).

mod ports;
mod prometheus;
mod render;
mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use corral_model::{ContainerPorts, Identity, Store};

/// What the handlers read: the latest batches, the node's identity, and (when enabled) the
/// per-container port registry.
#[derive(Clone)]
pub struct ApiState {
    store: Arc<Store>,
    identity: Arc<Identity>,
    ports: Option<Arc<dyn ContainerPorts>>,
}

impl ApiState {
    pub fn new(store: Arc<Store>, identity: Arc<Identity>) -> Self {
        ApiState {
            store,
            identity,
            ports: None,
        }
    }

    /// Serves `/v0/statsd/containers` from `ports`.
    pub fn with_container_ports(mut self, ports: Arc<dyn ContainerPorts>) -> Self {
        self.ports = Some(ports);
        self
    }
}

/// The API's routes, with request logging.
pub fn router(state: ApiState) -> Router {
    let agent = routes::v0().route_layer(middleware::from_fn_with_state(
        state.clone(),
        routes::require_this_agent,
    ));
    Router::new()
        .nest("/v0", routes::v0().merge(ports::routes()))
        .nest("/system/v1/metrics/v0", routes::v0())
        .nest("/system/v1/agent/{mesos_id}/metrics/v0", agent)
        // Routes outside the v0 API (such as a Prometheus `/metrics`) belong here.
        .route("/metrics", prometheus::route())
        .with_state(state)
        .layer(middleware::from_fn(log_request))
}

/// Serves until `shutdown` resolves; then stops accepting and finishes in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn log_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let res = next.run(req).await;
    tracing::debug!(
        method = %method,
        path = uri.path(),
        status = res.status().as_u16(),
        duration = ?start.elapsed(),
        "request"
    );
    res
}
